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
