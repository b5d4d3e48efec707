/**
 * hotmem-exec run for real. Binding succeeds only on a HotMem kernel (the e2e suite covers it);
 * here every failure path must end in one line on stderr and the documented exit status.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { launcherPath } from '../../../lib/binding.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hotmem-exec-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]) {
  const result = spawnSync(launcherPath(), args, { encoding: 'utf8', timeout: 10_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, pid: result.pid };
}

describe('hotmem-exec', () => {
  it('execs the command with its arguments and passes its exit status through', () => {
    expect(run(['--', 'sh', '-c', 'echo "$0 $1"; exit 7', 'a b', 'c'])).toMatchObject({
      status: 7,
      stdout: 'a b c\n',
      stderr: '',
    });
  });

  it('joins the cgroup by writing its pid to cgroup.procs before exec', () => {
    writeFileSync(join(dir, 'cgroup.procs'), '');
    const result = run(['--cgroup', dir, '--', 'true']);
    expect(result.status).toBe(0);
    expect(readFileSync(join(dir, 'cgroup.procs'), 'utf8')).toBe(String(result.pid));
  });

  it('exits 126 naming the cgroup file it could not join', () => {
    const result = run(['--cgroup', join(dir, 'missing'), '--', 'true']);
    expect(result.status).toBe(126);
    expect(result.stderr).toBe(
      `hotmem-exec: join cgroup: open ${join(dir, 'missing')}/cgroup.procs: No such file or directory\n`,
    );
  });

  it('exits 126 when the device to bind through is missing', () => {
    const device = join(dir, 'dev/hotmem');
    const result = run(['--device', device, '--partition', '3', '--', 'true']);
    expect(result.status).toBe(126);
    expect(result.stderr).toBe(
      `hotmem-exec: bind to partition 3 via ${device}: open: No such file or directory\n`,
    );
  });

  it('exits 126 when the bind ioctl fails, after opening a pidfd of itself', () => {
    mkdirSync(join(dir, 'dev'));
    const device = join(dir, 'dev/hotmem');
    writeFileSync(device, '');
    const result = run(['--device', device, '--partition', '0', '--wait-ms', '100', '--', 'true']);
    expect(result.status).toBe(126);
    expect(result.stderr).toBe(
      `hotmem-exec: bind to partition 0 via ${device}: ioctl HOTMEM_IOC_BIND: Inappropriate ioctl for device\n`,
    );
  });

  it('exits 127 when the command cannot be executed', () => {
    const result = run(['--', join(dir, 'no-such-command')]);
    expect(result.status).toBe(127);
    expect(result.stderr).toBe(
      `hotmem-exec: exec ${join(dir, 'no-such-command')}: No such file or directory\n`,
    );
  });

  it.each([
    [[], 'no command after'],
    [
      ['--partition', 'x', '--', 'true'],
      "--partition wants an integer in [0, 4294967295], not 'x'",
    ],
    [['--partition', '-1', '--', 'true'], '--partition wants an integer'],
    [['--wait-ms', '5', '--', 'true'], '--wait-ms needs --partition'],
    [['--frobnicate', 'x', '--', 'true'], "unknown option '--frobnicate'"],
    [['--cgroup'], '--cgroup needs a value'],
  ])('exits 125 on usage error %j', (args, message) => {
    const result = run(args);
    expect(result.status).toBe(125);
    expect(result.stderr).toContain(message);
    expect(result.stderr).toContain('usage: hotmem-exec');
  });
});
