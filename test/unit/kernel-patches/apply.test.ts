import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';

const applySh = join(projectRoot(), 'kernel-patches/apply.sh');

// A two-patch series made on "6.12.117" against a stand-in tree: the second patch changes a
// file the first one creates, as the real series' later patches do.
describe('kernel-patches/apply.sh', () => {
  let dir: string;
  let series: string;
  let tree: string;
  const mmC = 'int a;\nint b;\nint c;\n';

  const makefile = (sublevel: number, extra = '') =>
    `VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = ${sublevel}\nEXTRAVERSION =\n${extra}`;
  const sha256 = (text: string) =>
    spawnSync('sha256sum', { input: text, encoding: 'utf8' }).stdout.split(' ')[0];
  const writeTree = (makefileText: string, mm = mmC) => {
    rmSync(tree, { recursive: true, force: true });
    mkdirSync(join(tree, 'mm'), { recursive: true });
    writeFileSync(join(tree, 'Makefile'), makefileText);
    writeFileSync(join(tree, 'mm/x.c'), mm);
  };
  const apply = (...args: string[]) =>
    spawnSync(applySh, [...args, series, tree], { encoding: 'utf8' });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'apply-'));
    series = join(dir, 'v6.12');
    tree = join(dir, 'linux');
    mkdirSync(series);
    writeFileSync(
      join(series, 'BASE'),
      `version: 6.12.117\nmakefile-sha256: ${sha256(makefile(117))}\ntested-on: 6.12.117\n`,
    );
    writeFileSync(join(series, '0000-cover-letter.patch'), 'not a patch\n');
    writeFileSync(
      join(series, '0001-mm-add-y.patch'),
      'Subject: [PATCH 1/2] mm: add y\n---\n' +
        'diff --git a/mm/y.c b/mm/y.c\nnew file mode 100644\n--- /dev/null\n+++ b/mm/y.c\n@@ -0,0 +1 @@\n+int y;\n',
    );
    writeFileSync(
      join(series, '0002-mm-use-y.patch'),
      'Subject: [PATCH 2/2] mm: use y\n---\n' +
        'diff --git a/mm/x.c b/mm/x.c\n--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,3 +1,4 @@\n int a;\n int b;\n+int uses_y;\n int c;\n' +
        'diff --git a/mm/y.c b/mm/y.c\n--- a/mm/y.c\n+++ b/mm/y.c\n@@ -1 +1,2 @@\n int y;\n+int z;\n',
    );
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('applies the series to its base', () => {
    writeTree(makefile(117));
    const r = apply();
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(`apply.sh: applied 2 patches of v6.12 to ${tree}, Linux 6.12.117`);
    expect(readFileSync(join(tree, 'mm/x.c'), 'utf8')).toBe(
      'int a;\nint b;\nint uses_y;\nint c;\n',
    );
    expect(readFileSync(join(tree, 'mm/y.c'), 'utf8')).toBe('int y;\nint z;\n');
  });

  it('refuses the base version with another Makefile', () => {
    writeTree(makefile(117, '# edited\n'));
    const r = apply();
    expect(r.stderr).toMatch(/Makefile has sha256 [0-9a-f]{64}, BASE expects [0-9a-f]{64}/);
    expect(r.status).toBe(1);
  });

  it('applies to another sublevel, saying so in one line naming both versions', () => {
    writeTree(makefile(118));
    const r = apply();
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      `apply.sh: applied 2 patches of v6.12 to ${tree}, Linux 6.12.118; ` +
        'the series was made on 6.12.117 and tested on 6.12.117\n',
    );
  });

  it('refuses another major.minor without touching the tree', () => {
    writeTree(makefile(117).replace('PATCHLEVEL = 12', 'PATCHLEVEL = 13'));
    const r = apply();
    expect(r.stderr).toBe(
      `apply.sh: ${tree} is Linux 6.13.117; the series is for 6.12 (made on 6.12.117)\n`,
    );
    expect(r.status).toBe(1);
    expect(readFileSync(join(tree, 'mm/x.c'), 'utf8')).toBe(mmC);
  });

  it('names the patch and the hunk that does not apply, and leaves the tree as it was', () => {
    const drifted = 'int a;\nint b_renamed;\nint c;\n';
    writeTree(makefile(119), drifted);
    const r = apply();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('error: patch failed: mm/x.c:1');
    expect(r.stderr).toContain('error: while searching for:\nint a;\nint b;\nint c;');
    expect(r.stderr).toContain(
      `apply.sh: 0002-mm-use-y.patch does not apply to ${tree} (Linux 6.12.119; the series was made on 6.12.117 and tested on 6.12.117); the tree is unchanged`,
    );
    // Patch 1 applied, then was reverted.
    expect(spawnSync('ls', [join(tree, 'mm')], { encoding: 'utf8' }).stdout).toBe('x.c\n');
    expect(readFileSync(join(tree, 'mm/x.c'), 'utf8')).toBe(drifted);
  });

  it('--check applies to a scratch copy and leaves the tree alone', () => {
    writeTree(makefile(118));
    const r = apply('--check');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      `apply.sh: all 2 patches of v6.12 apply to ${tree}, Linux 6.12.118; the series was made on 6.12.117 and tested on 6.12.117\n`,
    );
    expect(readFileSync(join(tree, 'mm/x.c'), 'utf8')).toBe(mmC);
    expect(spawnSync('ls', [join(tree, 'mm')], { encoding: 'utf8' }).stdout).toBe('x.c\n');
  });

  it('--check fails as a real apply would', () => {
    writeTree(makefile(118), 'int a;\nint c;\n');
    const r = apply('--check');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('0002-mm-use-y.patch does not apply');
    expect(r.stderr).toContain('error: patch failed: mm/x.c:1');
  });
});
