// Results of the kernel's own selftests, one per subtest, so a regression names the subtest:
// kselftest TAP (`ok N`, `not ok N`, `# SKIP`), the coloured OK/Fail/Skip lines of
// mm/khugepaged (which prints no TAP), and each program's exit status. Plus the comparison of
// a kernel's results against a baseline kernel's.

export type Outcome = 'pass' | 'fail' | 'skip';

export interface SubtestResult {
  /** The same subtest gets the same id on every kernel, whatever its outcome. */
  id: string;
  /** The subtest in the selftest's own words, with its outcome's message. */
  title: string;
  outcome: Outcome;
}

/** How a selftest reports: kselftest TAP, mm/khugepaged's lines, or its exit status alone. */
export type OutputFormat = 'tap' | 'khugepaged' | 'exit-status';

export interface ProgramRun {
  stdout: string;
  code: number | null;
  signal: string | null;
}

/** Every subtest's result of one run of `program`, and the run's exit status as one more. */
export function selftestResults(
  program: string,
  format: OutputFormat,
  run: ProgramRun,
): SubtestResult[] {
  if (format === 'tap') return [...parseTap(program, run.stdout), exitStatusResult(program, run)];
  // khugepaged exits with the number of failed checks, so 4 failures look like KSFT_SKIP.
  if (format === 'khugepaged')
    return [
      ...parseKhugepaged(program, run.stdout),
      exitStatusResult(program, run, { skipStatus: null }),
    ];
  return [exitStatusResult(program, run)];
}

const KSFT_SKIP = 4;

/** The program as a whole: passed (0), skipped (`skipStatus`) or failed. */
export function exitStatusResult(
  program: string,
  exit: Pick<ProgramRun, 'code' | 'signal'>,
  { skipStatus = KSFT_SKIP }: { skipStatus?: number | null } = {},
): SubtestResult {
  const outcome = exit.code === 0 ? 'pass' : exit.code === skipStatus ? 'skip' : 'fail';
  return {
    id: `${program} exit status`,
    title: `${program}: ${exit.code === null ? `killed by ${exit.signal}` : `exit status ${exit.code}`}`,
    outcome,
  };
}

/**
 * kselftest TAP. A result's description can change with its outcome (cow says "No leak" or
 * "Leak"), so the id is the test number; the title adds the last `# [RUN]` or `# [INFO]`
 * message before it, which says which case the number stands for.
 */
export function parseTap(program: string, stdout: string): SubtestResult[] {
  const results: SubtestResult[] = [];
  let context = '';
  for (const line of stdout.split('\n')) {
    const message = /^# (\[(?:RUN|INFO)\] .*)$/.exec(line);
    if (message?.[1]) context = `${message[1]} `;
    const planSkip = /^1\.\.0 # SKIP(.*)$/i.exec(line);
    if (planSkip) {
      results.push({
        id: `${program} plan`,
        title: `${program}: skipped all:${planSkip[1]}`,
        outcome: 'skip',
      });
    }
    const result = /^(not )?ok (\d+)\s*(.*)$/.exec(line);
    if (!result) continue;
    const [, not, number, description] = result;
    results.push({
      id: `${program} #${number}`,
      title: `${program} #${number} ${context}${description}`,
      outcome: not ? 'fail' : /#\s*SKIP\b/i.test(description ?? '') ? 'skip' : 'pass',
    });
  }
  return results;
}

const KHUGEPAGED_COLOURS: Record<string, Outcome> = { '32': 'pass', '31': 'fail', '33': 'skip' };

/**
 * mm/khugepaged: "Run test: <test> (<context>:<memory>)" and then one line per check, the
 * check's words followed by OK (green), Fail... (red) or Skip (yellow). The id is the test,
 * the check's words and their occurrence within the test. Saving and restoring the THP
 * settings are the program's, not a test's: restoring comes after the last test that ran,
 * which depends on how far the program got.
 */
export function parseKhugepaged(program: string, stdout: string): SubtestResult[] {
  const results: SubtestResult[] = [];
  const seen = new Map<string, number>();
  let test = '';
  for (const line of stdout.split('\n')) {
    const run = /^Run test: (.*)$/.exec(line);
    if (run?.[1]) test = `${run[1]}: `;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes are the output
    const check = /^(.*?)\s*\x1b\[(3[123])m(.*?)\x1b\[0m\s*$/.exec(line);
    if (!check) continue;
    const [, words = '', colour = '', message] = check;
    const own = /^(Save|Restore) THP and khugepaged settings\b/.test(words);
    const name = `${own ? '' : test}${words.replace(/[.\s]+$/, '')}`;
    const occurrence = (seen.get(name) ?? 0) + 1;
    seen.set(name, occurrence);
    results.push({
      id: `${program} ${name} #${occurrence}`,
      title: `${program}: ${name}: ${message}`,
      outcome: KHUGEPAGED_COLOURS[colour] ?? 'fail',
    });
  }
  return results;
}

export function tally(results: SubtestResult[]): Record<Outcome, number> {
  const counts = { pass: 0, fail: 0, skip: 0 };
  for (const r of results) counts[r.outcome]++;
  return counts;
}

/** Each subtest that passed on the baseline kernel and did not pass on the candidate. */
export function regressions(baseline: SubtestResult[], candidate: SubtestResult[]): string[] {
  const byId = new Map(candidate.map((r) => [r.id, r]));
  return baseline
    .filter((b) => b.outcome === 'pass' && byId.get(b.id)?.outcome !== 'pass')
    .map((b) => {
      const c = byId.get(b.id);
      return c ? `${c.title} (${c.outcome}; passed as: ${b.title})` : `${b.title} (not run)`;
    });
}
