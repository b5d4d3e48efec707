import { execFileSync } from 'node:child_process';
import {
  createWriteStream,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CpioWriter, newcHeader } from '../../../scripts/testbed/cpio.js';

describe('newc cpio writer', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cpio-test-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('pads every header and name to a multiple of four bytes', () => {
    for (const name of ['a', 'ab', 'abc', 'abcd', 'dir/file.txt']) {
      const h = newcHeader(name, 0o100644, 5, 7);
      expect(h.length % 4).toBe(0);
      expect(h.subarray(0, 6).toString()).toBe('070701');
      expect(h.subarray(110, 110 + name.length).toString()).toBe(name);
    }
  });

  it('rejects absolute names and values that do not fit the header', () => {
    expect(() => newcHeader('/abs', 0o100644, 0, 1)).toThrow(/relative/);
    expect(() => newcHeader('big', 0o100644, 2 ** 32, 1)).toThrow(/32 bits/);
  });

  it('writes an archive that GNU cpio extracts byte for byte', async () => {
    const host = join(dir, 'host.bin');
    writeFileSync(host, Buffer.from(Array.from({ length: 4099 }, (_, i) => i % 251)));
    const archive = join(dir, 'out.cpio');
    const cpio = new CpioWriter(createWriteStream(archive));
    await cpio.add({ type: 'dir', path: '/etc' });
    await cpio.add({ type: 'file', path: '/etc/motd', data: Buffer.from('hi\n'), mode: 0o600 });
    await cpio.add({ type: 'hostfile', path: '/bin/tool', source: host, size: 4099, mode: 0o755 });
    await cpio.add({ type: 'symlink', path: '/tool', target: '/bin/tool' });
    await expect(cpio.add({ type: 'dir', path: 'etc' })).rejects.toThrow(/duplicate entry 'etc'/);
    await cpio.finish();

    const out = join(dir, 'x');
    execFileSync('mkdir', [out]);
    execFileSync('sh', ['-c', `cpio -id --no-absolute-filenames < ${archive}`], {
      cwd: out,
      stdio: 'pipe',
    });
    expect(readFileSync(join(out, 'etc/motd'), 'utf8')).toBe('hi\n');
    expect(statSync(join(out, 'etc/motd')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(out, 'bin/tool')).equals(readFileSync(host))).toBe(true);
    expect(statSync(join(out, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(out, 'tool'))).toBe('/bin/tool');
  });

  it('fails when a host file changes size while it is archived', async () => {
    const host = join(dir, 'grows');
    writeFileSync(host, 'abc');
    const cpio = new CpioWriter(createWriteStream(join(dir, 'out.cpio')));
    await expect(
      cpio.add({ type: 'hostfile', path: 'grows', source: host, size: 2 }),
    ).rejects.toThrow(/changed size while archiving \(2 -> 3\)/);
  });
});
