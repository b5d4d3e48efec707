import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
    writeFileSync(join(dir, 'linux', 'Makefile'), 'kernelversion:\n\t@echo 6.12.117\n');
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
