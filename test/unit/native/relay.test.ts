/**
 * hotmem-relay run for real: the command's output reaches the files through the relay, each file
 * stays within the limit, and every failure before the exec ends in one line and its exit status.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { relayPath } from '../../../lib/binding.js';
import { pidExists } from '../../../lib/instance/instance.js';

let dir: string;
let out: string;
let err: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hotmem-relay-'));
  out = join(dir, 'stdout');
  err = join(dir, 'stderr');
  writeFileSync(out, '');
  writeFileSync(err, '');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]) {
  const result = spawnSync(relayPath(), args, { encoding: 'utf8', timeout: 10_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, pid: result.pid };
}

/** Runs command through the relay; resolves once the relay has exited. */
async function relayed(command: string[], limitBytes = 4096) {
  const pidFile = join(dir, 'relay.pid');
  const result = run([
    '--stdout',
    out,
    '--stderr',
    err,
    '--limit-bytes',
    String(limitBytes),
    '--pid-file',
    pidFile,
    '--',
    ...command,
  ]);
  const relay = Number(readFileSync(pidFile, 'utf8'));
  while (pidExists(relay)) await sleep(5);
  return result;
}

describe('hotmem-relay', () => {
  it('gives the command pipes, copies them into the files and passes its exit status through', async () => {
    const result = await relayed([
      'sh',
      '-c',
      'echo "out $(readlink /proc/$$/fd/1)"; echo "$0" >&2; exit 7',
      'a b',
    ]);
    expect(result).toMatchObject({ status: 7, stdout: '', stderr: '' });
    expect(readFileSync(out, 'utf8')).toMatch(/^out pipe:\[\d+\]\n$/);
    expect(readFileSync(err, 'utf8')).toBe('a b\n');
  });

  it('keeps a file within the limit, starting the next one with a marker that counts', async () => {
    // 10000 bytes, then a last line: two full files dropped.
    await relayed(['sh', '-c', `head -c 10000 /dev/zero | tr '\\0' x; echo; echo last`]);
    const text = readFileSync(out, 'utf8');
    expect(statSync(out).size).toBeLessThanOrEqual(4096);
    const marker =
      /^\[hotmem: stdout reached 4096 bytes; the 4096 bytes before this line were dropped from its file \((\d+) bytes of output dropped so far\)\]\n/;
    const dropped = Number(marker.exec(text)?.[1]);
    const rest = text.replace(marker, '');
    expect(dropped + rest.length).toBe(10_000 + '\nlast\n'.length);
    expect(rest.endsWith('x\nlast\n')).toBe(true);
  });

  it('exits 127 through the relay when the command cannot be executed', async () => {
    const result = await relayed([join(dir, 'no-such-command')]);
    expect(result.status).toBe(127);
    expect(readFileSync(err, 'utf8')).toBe(
      `hotmem-relay: exec ${join(dir, 'no-such-command')}: No such file or directory\n`,
    );
  });

  it('exits 126 when an output file is missing, before starting anything', () => {
    const result = run([
      '--stdout',
      join(dir, 'missing'),
      '--stderr',
      err,
      '--limit-bytes',
      '4096',
      '--',
      'true',
    ]);
    expect(result.status).toBe(126);
    expect(result.stderr).toBe(
      `hotmem-relay: open ${join(dir, 'missing')}: No such file or directory\n`,
    );
  });

  it.each([
    [['--stdout', 'a', '--stderr', 'b', '--', 'true'], '--limit-bytes is needed'],
    [['--stdout', 'a', '--limit-bytes', '4096', '--', 'true'], '--stdout and --stderr are needed'],
    [
      ['--stdout', 'a', '--stderr', 'b', '--limit-bytes', '10', '--', 'true'],
      "--limit-bytes wants an integer in [320, 1099511627776], not '10'",
    ],
    [['--stdout', 'a', '--stderr', 'b', '--limit-bytes', '4096'], "no command after '--'"],
    [['--bogus', 'x'], "unknown option '--bogus'"],
  ])('exits 125 on %j', (args, problem) => {
    const result = run(args);
    expect(result.status).toBe(125);
    expect(result.stderr.split('\n')[0]).toBe(`hotmem-relay: ${problem}`);
  });
});
