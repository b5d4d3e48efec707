// A vitest reporter that ends a run with the line CI reads ("N passed, N failed, N skipped")
// and, before it, where the run's time went: each e2e file, each project's unit files as one,
// and the kernel builds scripts/build-kernel.sh recorded in $HOTMEM_BUILD_LOG.
//
// Vitest reports the tests of a file whose beforeAll (or import) threw as skipped, so counting
// failed tests alone shows a run in which whole suites never ran as nearly green. Here such a
// file counts as one failure of its own, and is named with its error.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, relative } from 'node:path';
import type { Reporter, SerializedError, TestModule, Vitest } from 'vitest/node';

export interface FileOutcome {
  file: string;
  project: string;
  /** Wall time from the file's start to its end, hooks and kernel builds included. */
  durationMs: number;
  passed: number;
  failed: number;
  skipped: number;
  /** Errors outside any test: the import, a hook. */
  errors: string[];
}

export interface RunCounts {
  passed: number;
  failed: number;
  skipped: number;
  /** Files that failed with no failing test, and why. */
  failedWithoutTest: { file: string; error: string }[];
}

export function countRun(files: FileOutcome[], unhandledErrors: number): RunCounts {
  const counts: RunCounts = {
    passed: 0,
    failed: unhandledErrors,
    skipped: 0,
    failedWithoutTest: [],
  };
  for (const f of files) {
    counts.passed += f.passed;
    counts.failed += f.failed;
    counts.skipped += f.skipped;
    if (f.errors.length > 0 && f.failed === 0) {
      counts.failed += 1;
      counts.failedWithoutTest.push({ file: f.file, error: f.errors[0] ?? '' });
    }
  }
  return counts;
}

export function closingLine(c: RunCounts): string {
  return `${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The time table: e2e files one by one (the slow phases), other projects as one line each. */
export function timeTable(files: FileOutcome[], projectWallMs: Map<string, number>): string[] {
  const lines: string[] = [];
  for (const [project, wall] of projectWallMs) {
    const own = files.filter((f) => f.project === project);
    if (project === 'e2e') {
      for (const f of own) {
        const state = f.failed > 0 || f.errors.length > 0 ? 'failed' : 'ok';
        lines.push(`  ${seconds(f.durationMs).padStart(9)}  ${f.file} (${state})`);
      }
    } else {
      lines.push(
        `  ${seconds(wall).padStart(9)}  ${project || 'tests'}: ${own.length} files, run side by side`,
      );
    }
  }
  return lines;
}

function firstLine(e: { message?: string }): string {
  return (e.message ?? String(e)).split('\n')[0] ?? '';
}

function outcome(m: TestModule, durationMs: number, root: string): FileOutcome {
  const o: FileOutcome = {
    file: relative(root, m.moduleId),
    project: m.project.name,
    durationMs,
    passed: 0,
    failed: 0,
    skipped: 0,
    errors: m.errors().map(firstLine),
  };
  for (const s of m.children.allSuites()) o.errors.push(...s.errors().map(firstLine));
  for (const t of m.children.allTests()) {
    const state = t.result().state;
    if (state === 'passed') o.passed++;
    else if (state === 'failed') o.failed++;
    else o.skipped++;
  }
  return o;
}

export default class RunSummaryReporter implements Reporter {
  private readonly started = new Map<string, number>();
  private readonly ended = new Map<string, number>();
  private readonly runStart = Date.now();
  private root = process.cwd();

  constructor(private readonly opts: { outputFile?: string; buildLog?: string } = {}) {}

  onInit(vitest: Vitest): void {
    this.root = vitest.config.root;
  }

  onTestModuleStart(m: TestModule): void {
    this.started.set(m.moduleId, Date.now());
  }

  onTestModuleEnd(m: TestModule): void {
    this.ended.set(m.moduleId, Date.now());
  }

  onTestRunEnd(
    modules: ReadonlyArray<TestModule>,
    unhandled: ReadonlyArray<SerializedError>,
  ): void {
    const root = this.root;
    const wall = new Map<string, [number, number]>();
    const files = modules.map((m) => {
      const start = this.started.get(m.moduleId) ?? this.runStart;
      const end = this.ended.get(m.moduleId) ?? Date.now();
      const span = wall.get(m.project.name);
      wall.set(
        m.project.name,
        span ? [Math.min(span[0], start), Math.max(span[1], end)] : [start, end],
      );
      return outcome(m, end - start, root);
    });
    const counts = countRun(files, unhandled.length);
    const walls = new Map([...wall].map(([p, [s, e]]) => [p, e - s]));
    const out = ['', `Where the time went (${seconds(Date.now() - this.runStart)} in all):`];
    out.push(...timeTable(files, walls));
    const buildLog = this.opts.buildLog ?? process.env.HOTMEM_BUILD_LOG;
    if (buildLog && existsSync(buildLog)) {
      out.push(
        ...readFileSync(buildLog, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => `  ${l}`),
      );
    }
    for (const f of counts.failedWithoutTest) {
      out.push(`FAILED ${f.file}: no test failed, but ${f.error || 'the file failed to run'}`);
    }
    if (unhandled.length > 0) out.push(`FAILED: ${unhandled.length} unhandled error(s)`);
    const line = closingLine(counts);
    out.push(line);
    process.stdout.write(`${out.join('\n')}\n`);
    if (this.opts.outputFile) {
      mkdirSync(dirname(this.opts.outputFile), { recursive: true });
      writeFileSync(this.opts.outputFile, `${line}\n`);
    }
  }
}
