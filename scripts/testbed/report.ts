// Summaries of reclamation benchmark samples: medians per mode, scenario and size, a
// Markdown table, the HotMem/stock ratios with bootstrap intervals, and a plot of
// reclamation latency against size.
import { seededRandom } from '../../lib/seeded-random.js';
import { latencyBySizeSpec, renderSvg } from './charts.js';

const MiB = 1024 * 1024;

export interface Sample {
  mode: 'stock' | 'hotmem';
  scenario: 'untouched' | 'idle' | 'loaded';
  sizeBytes: number;
  plugMs: number;
  /** Guest-side reclaim (the whole HOTMEM_IOC_RECLAIM, timed in the guest) before the unplug; 0 for stock. */
  reclaimMs: number;
  /** Of reclaimMs, the offlining of the blocks, as the kernel timed it; 0 for stock. */
  offlineMs: number;
  /** virtio-mem unplug, seen from the host. */
  unplugMs: number;
  pagesMigrated: number;
  guestCpuMs: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** From scale-down to the memory being back with the host. */
const totalMs = (s: Sample) => s.reclaimMs + s.unplugMs;

export interface Row {
  mode: Sample['mode'];
  scenario: Sample['scenario'];
  sizeMiB: number;
  plugMs: number;
  reclaimMs: number;
  unplugMs: number;
  /** reclaimMs + unplugMs: from scale-down to the memory being back with the host. */
  totalMs: number;
  pagesMigrated: number;
  guestCpuMs: number;
  runs: number;
}

const groupKey = (mode: Sample['mode'], scenario: Sample['scenario'], sizeBytes: number) =>
  `${mode}/${scenario}/${sizeBytes}`;

/** The samples of each mode, scenario and size, in the order the groups first appear. */
function groupSamples(samples: Sample[]): Map<string, Sample[]> {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const key = groupKey(s.mode, s.scenario, s.sizeBytes);
    const group = groups.get(key);
    if (group) group.push(s);
    else groups.set(key, [s]);
  }
  return groups;
}

export function summarize(samples: Sample[]): Row[] {
  return [...groupSamples(samples).values()].map((g) => {
    const first = g[0] as Sample;
    return {
      mode: first.mode,
      scenario: first.scenario,
      sizeMiB: first.sizeBytes / MiB,
      plugMs: median(g.map((s) => s.plugMs)),
      reclaimMs: median(g.map((s) => s.reclaimMs)),
      unplugMs: median(g.map((s) => s.unplugMs)),
      totalMs: median(g.map(totalMs)),
      pagesMigrated: median(g.map((s) => s.pagesMigrated)),
      guestCpuMs: median(g.map((s) => s.guestCpuMs)),
      runs: g.length,
    };
  });
}

export function table(rows: Row[]): string {
  const header = [
    'mode',
    'scenario',
    'size MiB',
    'plug ms',
    'reclaim ms',
    'unplug ms',
    'total ms',
    'pages migrated',
    'guest CPU ms',
    'runs',
  ];
  const cells = rows.map((r) => [
    r.mode,
    r.scenario,
    String(r.sizeMiB),
    r.plugMs.toFixed(1),
    r.reclaimMs.toFixed(1),
    r.unplugMs.toFixed(1),
    r.totalMs.toFixed(1),
    String(r.pagesMigrated),
    String(r.guestCpuMs),
    String(r.runs),
  ]);
  return markdownTable(header, cells, 2);
}

/**
 * A Markdown table padded to line up in a terminal: the first `textColumns` columns
 * left-aligned, the others (numbers) right-aligned.
 */
export function markdownTable(header: string[], cells: string[][], textColumns: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const fmt = (c: string[]) =>
    `| ${widths.map((w, i) => (i < textColumns ? (c[i] ?? '').padEnd(w) : (c[i] ?? '').padStart(w))).join(' | ')} |`;
  return [
    fmt(header),
    `|${widths.map((w) => '-'.repeat(w + 1)).join('-|')}-|`,
    ...cells.map(fmt),
  ].join('\n');
}

/** Fewer runs than this give no interval: a resampled median of 2 or 3 values says little. */
const MIN_RUNS_FOR_INTERVAL = 5;
const RESAMPLES = 2000;

/** The central 95% of `RESAMPLES` bootstrap estimates, each made from fresh resamples. */
function bootstrap(
  seed: number,
  estimate: (resample: (xs: number[]) => number[]) => number,
): [number, number] {
  const random = seededRandom(seed);
  const resample = (xs: number[]) => xs.map(() => xs[Math.floor(random() * xs.length)] as number);
  const estimates = Array.from({ length: RESAMPLES }, () => estimate(resample)).sort(
    (x, y) => x - y,
  );
  return [
    estimates[Math.floor(0.025 * RESAMPLES)] as number,
    estimates[Math.ceil(0.975 * RESAMPLES) - 1] as number,
  ];
}

/**
 * The 95% percentile-bootstrap interval of statistic(a) / statistic(b) (medians by default):
 * both groups resampled with replacement, independently. Undefined with fewer than
 * MIN_RUNS_FOR_INTERVAL values in either.
 */
export function ratioInterval(
  a: number[],
  b: number[],
  statistic: (xs: number[]) => number = median,
): [number, number] | undefined {
  if (a.length < MIN_RUNS_FOR_INTERVAL || b.length < MIN_RUNS_FOR_INTERVAL) return undefined;
  return bootstrap(
    a.length * 7919 + b.length,
    (resample) => statistic(resample(a)) / statistic(resample(b)),
  );
}

/**
 * The 95% percentile-bootstrap interval of statistic(xs) (the median by default). Undefined
 * with fewer than MIN_RUNS_FOR_INTERVAL values.
 */
export function interval(
  xs: number[],
  statistic: (xs: number[]) => number = median,
): [number, number] | undefined {
  if (xs.length < MIN_RUNS_FOR_INTERVAL) return undefined;
  return bootstrap(xs.length, (resample) => statistic(resample(xs)));
}

/**
 * Ratios measured in one run, of median totals: stock over HotMem per scenario and size, and
 * HotMem loaded over idle, each with its 95% bootstrap interval when there were enough runs.
 */
export function ratios(samples: Sample[]): string[] {
  const groups = groupSamples(samples);
  const totals = (mode: Sample['mode'], scenario: Sample['scenario'], size: number) =>
    (groups.get(groupKey(mode, scenario, size)) ?? []).map(totalMs);
  const ratio = (name: string, a: number[], b: number[], digits: number) => {
    const interval = ratioInterval(a, b);
    const range = interval ? ` (95% CI ${interval.map((r) => r.toFixed(digits)).join('-')})` : '';
    return `${name} ${(median(a) / median(b)).toFixed(digits)}x${range}`;
  };
  const lines: string[] = [];
  for (const size of [...new Set(samples.map((s) => s.sizeBytes))].sort((a, b) => a - b)) {
    const parts: string[] = [];
    for (const scenario of ['untouched', 'idle', 'loaded'] as const) {
      const stock = totals('stock', scenario, size);
      const hotmem = totals('hotmem', scenario, size);
      if (stock.length && hotmem.length)
        parts.push(ratio(`${scenario} stock/hotmem`, stock, hotmem, 1));
    }
    const idle = totals('hotmem', 'idle', size);
    const loaded = totals('hotmem', 'loaded', size);
    if (idle.length && loaded.length) parts.push(ratio('hotmem loaded/idle', loaded, idle, 2));
    if (parts.length) lines.push(`${size / MiB} MiB: ${parts.join(', ')}`);
  }
  return lines;
}

/** Reclamation latency (reclaim + unplug) against size, one line per mode and scenario. */
export function reclaimLatencyPlot(rows: Row[], title: string): Promise<string> {
  return renderSvg(
    latencyBySizeSpec(
      rows.map((r) => ({
        series: `${r.mode} ${r.scenario}`,
        sizeMiB: r.sizeMiB,
        latencyMs: r.totalMs,
      })),
      title,
    ),
  );
}
