import { defineConfig } from 'vitest/config';
import RunSummaryReporter from './scripts/testbed/run-summary.js';

export default defineConfig({
  test: {
    // The summary's closing line is what .ci/run prints last.
    reporters: ['default', new RunSummaryReporter({ outputFile: 'test-results/summary.txt' })],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          // Guests run under TCG on two cores: one VM at a time.
          pool: 'forks',
          poolOptions: { forks: { singleFork: true } },
          testTimeout: 300_000,
          hookTimeout: 3_600_000,
        },
      },
    ],
  },
});
