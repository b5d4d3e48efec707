/**
 * Memory errors in the addon, under valgrind's memcheck: exercise-addon.cjs drives every native
 * entry point (success and failure paths) in a node process run under valgrind. For AddressSanitizer
 * and UBSan over the whole native test suite, run native/sanitize.sh.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const hasValgrind = spawnSync('valgrind', ['--version']).status === 0;

describe('the addon under valgrind', () => {
  it.skipIf(!hasValgrind)(
    hasValgrind
      ? 'reports no memory errors while every entry point runs'
      : 'reports no memory errors (skipped: valgrind is not installed)',
    () => {
      const run = spawnSync(
        'valgrind',
        [
          '--error-exitcode=99',
          // V8 allocates for the life of the process; only access errors are the addon's.
          '--leak-check=no',
          process.execPath,
          join(process.cwd(), 'test/unit/native/exercise-addon.cjs'),
          join(process.cwd(), 'build/Release/hotmem.node'),
        ],
        // Under native/sanitize.sh libasan is preloaded; valgrind and ASan exclude each other.
        { encoding: 'utf8', timeout: 170_000, env: { ...process.env, LD_PRELOAD: '' } },
      );
      expect({ status: run.status, stdout: run.stdout }, run.stderr).toEqual({
        status: 0,
        stdout: 'exercised\n',
      });
    },
    180_000,
  );
});
