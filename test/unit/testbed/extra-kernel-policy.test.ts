// HOTMEM_EXTRA_KERNELS: whether suites that boot a kernel beyond HotMem and its debug build build it or wait for a cached one.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';
import { extraKernelUnavailable } from '../../../scripts/testbed/testbed.js';

describe('extraKernelUnavailable', () => {
  let dir: string;
  let source: string;
  const env = (policy?: string) => ({
    ...process.env,
    HOTMEM_CACHE: join(dir, 'cache'),
    HOTMEM_EXTRA_KERNELS: policy,
  });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'stock-policy-'));
    source = join(dir, 'linux');
    mkdirSync(join(source, 'mm'), { recursive: true });
    writeFileSync(
      join(source, 'Makefile'),
      'VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 118\nEXTRAVERSION =\n',
    );
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('builds the stock kernel by default and with "build"', () => {
    const { HOTMEM_EXTRA_KERNELS: _, ...rest } = env();
    expect(extraKernelUnavailable('stock', { source }, rest)).toBeUndefined();
    expect(extraKernelUnavailable('stock', { source }, env('build'))).toBeUndefined();
  });

  it('with "cached", skips until the stock kernel is in the cache', () => {
    expect(extraKernelUnavailable('stock', { source }, env('cached'))).toBe(
      'HOTMEM_EXTRA_KERNELS=cached and the stock kernel is not built yet (npm test without it builds it)',
    );
    // What build-kernel.sh leaves when a build finished.
    const build = spawnSync(
      join(projectRoot(), 'scripts/build-kernel.sh'),
      ['--source', source, '--dry-run'],
      {
        encoding: 'utf8',
        env: env(),
      },
    ).stdout.trim();
    mkdirSync(build, { recursive: true });
    writeFileSync(join(build, '.hotmem-done'), '');
    expect(extraKernelUnavailable('stock', { source }, env('cached'))).toBeUndefined();
  });

  it('refuses any other value, naming it', () => {
    expect(() => extraKernelUnavailable('stock', { source }, env('sometimes'))).toThrow(
      'HOTMEM_EXTRA_KERNELS must be "build" or "cached", not "sometimes"',
    );
  });
});
