import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildInitramfs,
  GUEST_MEMHOG,
  INIT_SCRIPT,
  pruneArchives,
  sharedLibraries,
} from '../../../scripts/testbed/initramfs.js';

describe('test-bed initramfs', () => {
  let dir: string;
  let listing: Map<string, string>;
  let archive: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'initramfs-test-'));
    const extra = join(dir, 'extra.txt');
    writeFileSync(extra, `extra ${process.pid}\n`);
    archive = await buildInitramfs({ extraFiles: { '/opt/extra.txt': extra } });
    // "cpio -tv" lines end with the name, and a link target after " -> ".
    const out = execFileSync('sh', ['-c', `cpio -itv < '${archive}'`], {
      encoding: 'utf8',
      stdio: 'pipe',
    });
    listing = new Map(
      out
        .trim()
        .split('\n')
        .map((line) => {
          const name = line.split(/\s+/).slice(8).join(' ');
          const [path, target] = name.split(' -> ');
          return [path as string, `${line[0]}${target ? ` ${target}` : ''}`];
        }),
    );
  }, 120_000);

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('holds an executable /init that runs the kernel command line command and reports its status', () => {
    expect(listing.get('init')).toBe('-');
    expect(INIT_SCRIPT).toMatch(/^#!\/bin\/sh\n/);
    expect(INIT_SCRIPT).toContain('"$@"\necho "HOTMEM_GUEST_EXIT=$?"');
  });

  it('holds static busybox with its applets as symlinks', () => {
    expect(listing.get('bin/busybox')).toBe('-');
    expect(listing.get('bin/sh')).toBe('l /bin/busybox');
    expect(listing.get('sbin/reboot')).toBe('l /bin/busybox');
  });

  it("holds Node.js and every shared library it loads, at the host's paths", () => {
    expect(listing.get('usr/bin/node')).toBe('-');
    for (const lib of sharedLibraries(process.execPath))
      expect(listing.get(lib.slice(1)), lib).toBe('-');
  });

  it('holds the package, its production dependencies, the guest programs and extra files', () => {
    expect(listing.get('hotmem/package.json')).toBe('-');
    expect(listing.get('hotmem/scripts/testbed/guest/server.mjs')).toBe('-');
    expect(listing.get('hotmem/node_modules/pino/package.json')).toBe('-');
    expect(listing.has('hotmem/node_modules/vitest/package.json')).toBe(false);
    expect(listing.get(GUEST_MEMHOG.slice(1))).toBe('-');
    expect(listing.get('opt/extra.txt')).toBe('-');
  });

  it('is reused when nothing changed', async () => {
    expect(await buildInitramfs({ extraFiles: { '/opt/extra.txt': join(dir, 'extra.txt') } })).toBe(
      archive,
    );
  });
});

describe('pruneArchives', () => {
  it('keeps the most recently used archives and nothing else of theirs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'initramfs-prune-'));
    try {
      for (let i = 0; i < 5; i++) {
        const f = join(dir, `initramfs-${i}a.cpio`);
        writeFileSync(f, '');
        utimesSync(f, 1000 + i, 1000 + i);
      }
      writeFileSync(join(dir, 'unrelated.txt'), '');
      pruneArchives(dir, 2);
      expect(readdirSync(dir).sort()).toEqual([
        'initramfs-3a.cpio',
        'initramfs-4a.cpio',
        'unrelated.txt',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
