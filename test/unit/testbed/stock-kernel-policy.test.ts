// HOTMEM_STOCK_KERNEL: whether the suites that boot a stock kernel build it or wait for a cached one.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';
import { stockKernelUnavailable } from '../../../scripts/testbed/testbed.js';

describe('stockKernelUnavailable', () => {
  let dir: string;
  let source: string;
  const env = (policy?: string) => ({
    ...process.env,
    HOTMEM_CACHE: join(dir, 'cache'),
    HOTMEM_STOCK_KERNEL: policy,
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
    const { HOTMEM_STOCK_KERNEL: _, ...rest } = env();
    expect(stockKernelUnavailable({ source }, rest)).toBeUndefined();
    expect(stockKernelUnavailable({ source }, env('build'))).toBeUndefined();
  });

  it('with "cached", skips until the stock kernel is in the cache', () => {
    expect(stockKernelUnavailable({ source }, env('cached'))).toBe(
      'HOTMEM_STOCK_KERNEL=cached and the stock kernel is not built yet (npm test without it builds it)',
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
    expect(stockKernelUnavailable({ source }, env('cached'))).toBeUndefined();
  });

  it('refuses any other value, naming it', () => {
    expect(() => stockKernelUnavailable({ source }, env('sometimes'))).toThrow(
      'HOTMEM_STOCK_KERNEL must be "build" or "cached", not "sometimes"',
    );
  });
});
