import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';

const script = join(projectRoot(), 'scripts/build-kernel.sh');

// Only the refusals: each must name what was wrong before anything is unpacked or built.
describe('scripts/build-kernel.sh input checks', () => {
  let dir: string;
  const build = (...args: string[]) =>
    spawnSync(script, args, {
      encoding: 'utf8',
      env: { ...process.env, HOTMEM_CACHE: join(dir, 'cache') },
    });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'build-kernel-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    [['--bogus'], "unknown argument '--bogus'"],
    [['--config', '/nonexistent/x.config'], "config fragment '/nonexistent/x.config' not readable"],
    [['--patches', '/nonexistent/series'], "patch series '/nonexistent/series' is not a directory"],
  ])('refuses %j', (args, message) => {
    const r = build(...args);
    expect(r.stderr).toContain(message);
    expect(r.status).toBe(1);
  });

  it('refuses a series without patches', () => {
    const series = join(dir, 'series');
    mkdirSync(series);
    writeFileSync(join(series, '0000-cover-letter.patch'), '');
    const r = build('--patches', series);
    expect(r.stderr).toContain(`no *.patch in '${series}' besides a cover letter`);
    expect(r.status).toBe(1);
  });

  it('refuses a source directory that is not a kernel tree', () => {
    const r = build('--source', dir);
    expect(r.stderr).toContain(`'${dir}' is not a kernel source tree`);
    expect(r.status).toBe(1);
  });
});

// The cache key, through --dry-run on a stand-in source tree: what a series applies decides it,
// the words around the diffs do not.
describe('scripts/build-kernel.sh --dry-run', () => {
  let dir: string;
  let series: string;
  const patch = join('series', '0001-mm-do-something.patch');
  const writePatch = (message: string, added: string) =>
    writeFileSync(
      join(dir, patch),
      `From 0123 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] mm: do something\n\n${message}\n---\n` +
        `diff --git a/mm/x.c b/mm/x.c\n--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1 +1,2 @@\n int x;\n+${added}\n`,
    );
  const buildDirectory = () => {
    const r = spawnSync(
      script,
      ['--source', join(dir, 'linux'), '--patches', series, '--dry-run'],
      { encoding: 'utf8', env: { ...process.env, HOTMEM_CACHE: join(dir, 'cache') } },
    );
    expect(r.stderr).toContain('not built: ');
    expect(r.status).toBe(0);
    return r.stdout.trim();
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'build-kernel-'));
    mkdirSync(join(dir, 'linux', 'mm'), { recursive: true });
    writeFileSync(
      join(dir, 'linux', 'Makefile'),
      'VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n',
    );
    series = join(dir, 'series');
    mkdirSync(series);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keys a build by the diffs, not by the commit messages', () => {
    writePatch('First wording.', 'int y;');
    const first = buildDirectory();
    expect(first).toMatch(/\/cache\/trees\/6\.12\.117-[0-9a-f]{16}\/build$/);

    writePatch('Second wording, with measured numbers.', 'int y;');
    expect(buildDirectory()).toBe(first);

    writePatch('Second wording, with measured numbers.', 'int z;');
    expect(buildDirectory()).not.toBe(first);
  });
});

// The default source is a tarball (Debian's linux-source-6.12), unpacked once per digest: when
// apt installs another point release, the next build must see the new tree under a new key,
// not the tree unpacked from the old one.
describe('scripts/build-kernel.sh --tarball', () => {
  let dir: string;
  const tarball = () => join(dir, 'linux-source-6.12.tar.xz');
  const writeTarball = (sublevel: number, body: string) => {
    const top = join(dir, 'pkg', 'linux-source-6.12');
    rmSync(join(dir, 'pkg'), { recursive: true, force: true });
    mkdirSync(join(top, 'mm'), { recursive: true });
    writeFileSync(
      join(top, 'Makefile'),
      `VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = ${sublevel}\nEXTRAVERSION =\n`,
    );
    writeFileSync(join(top, 'mm', 'x.c'), body);
    // Reproducible, so that the same files make the same tarball.
    const r = spawnSync('tar', [
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      join(dir, 'pkg'),
      '-cJf',
      tarball(),
      'linux-source-6.12',
    ]);
    expect(r.status).toBe(0);
  };
  const run = (...args: string[]) => {
    const r = spawnSync(script, ['--tarball', tarball(), ...args], {
      encoding: 'utf8',
      env: { ...process.env, HOTMEM_CACHE: join(dir, 'cache') },
    });
    expect(r.status, r.stderr).toBe(0);
    return { out: r.stdout.trim(), err: r.stderr };
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'build-kernel-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('unpacks a changed tarball anew and keys the build by its digest', () => {
    writeTarball(117, 'int old;\n');
    const first = { build: run('--dry-run').out, source: run('--print-source').out };
    expect(first.build).toMatch(/\/cache\/trees\/6\.12\.117-[0-9a-f]{16}\/build$/);
    expect(readFileSync(join(first.source, 'mm', 'x.c'), 'utf8')).toBe('int old;\n');

    // Same version, other content (a rebuilt package): new source, new key.
    writeTarball(117, 'int new;\n');
    const second = { build: run('--dry-run').out, source: run('--print-source').out };
    expect(second.build).not.toBe(first.build);
    expect(second.source).not.toBe(first.source);
    expect(readFileSync(join(second.source, 'mm', 'x.c'), 'utf8')).toBe('int new;\n');

    // Another point release.
    writeTarball(118, 'int new;\n');
    expect(run('--dry-run').out).toMatch(/\/cache\/trees\/6\.12\.118-[0-9a-f]{16}\/build$/);

    // Back to the first tarball: its tree and key again, without unpacking it again.
    writeTarball(117, 'int old;\n');
    const again = run('--dry-run');
    expect(again.out).toBe(first.build);
    expect(again.err).not.toContain('unpacking');
  });

  it('refuses a tarball that holds no kernel tree', () => {
    const empty = join(dir, 'empty');
    mkdirSync(join(empty, 'linux-source-6.12'), { recursive: true });
    spawnSync('tar', ['-C', empty, '-cJf', tarball(), 'linux-source-6.12']);
    const r = spawnSync(script, ['--tarball', tarball(), '--dry-run'], {
      encoding: 'utf8',
      env: { ...process.env, HOTMEM_CACHE: join(dir, 'cache') },
    });
    expect(r.stderr).toContain(`${tarball()} holds no kernel source tree`);
    expect(r.status).toBe(1);
  });

  it('says what to install when the tarball is missing', () => {
    const r = spawnSync(script, ['--tarball', join(dir, 'none.tar.xz'), '--dry-run'], {
      encoding: 'utf8',
      env: { ...process.env, HOTMEM_CACHE: join(dir, 'cache') },
    });
    expect(r.stderr).toContain(
      `${join(dir, 'none.tar.xz')} missing (scripts/setup.sh installs linux-source-6.12)`,
    );
    expect(r.status).toBe(1);
  });
});
