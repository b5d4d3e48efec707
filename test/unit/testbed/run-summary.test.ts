import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';
import { closingLine, countRun, type FileOutcome } from '../../../scripts/testbed/run-summary.js';

const fixtures = join(projectRoot(), 'test/unit/fixtures/run-summary');

describe('the run summary', () => {
  // A real vitest run of three fixture files: a beforeAll that throws (vitest reports its two
  // tests as skipped), an import that throws, and a file with a pass, a skip and a failure.
  it('counts a file that failed without a failing test as a failure, and names it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'run-summary-'));
    try {
      const summaryFile = join(dir, 'summary.txt');
      const r = spawnSync(
        process.execPath,
        [join(projectRoot(), 'node_modules/vitest/vitest.mjs'), 'run', '--root', fixtures],
        {
          encoding: 'utf8',
          env: { ...process.env, SUMMARY_FILE: summaryFile, HOTMEM_BUILD_LOG: '' },
        },
      );
      expect(r.status).toBe(1);
      expect(readFileSync(summaryFile, 'utf8')).toBe('1 passed, 3 failed, 3 skipped\n');
      expect(r.stdout).toContain(
        'FAILED before-all-throws.fixture.ts: no test failed, but apply.sh: 0004-mm-hotmem.patch does not apply',
      );
      expect(r.stdout).toContain(
        'FAILED import-throws.fixture.ts: no test failed, but cannot load the addon',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('counts unhandled errors as failures', () => {
    const file: FileOutcome = {
      file: 'a.test.ts',
      project: 'unit',
      durationMs: 5,
      passed: 2,
      failed: 0,
      skipped: 1,
      errors: [],
    };
    expect(closingLine(countRun([file], 0))).toBe('2 passed, 0 failed, 1 skipped');
    expect(closingLine(countRun([file], 2))).toBe('2 passed, 2 failed, 1 skipped');
  });
});
