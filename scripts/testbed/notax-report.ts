// The "no tax" benchmark's pure half: what the guest's notax program prints, turned into
// samples; medians, 95% intervals and patched/stock ratios per metric, pooled and boot by boot;
// the verdict against the 3% target; the tables scripts/notax.ts prints; and the readers of the
// memory figures (the boot's "Memory:" line, /proc/zoneinfo, nm and gdb output).
import { interval, markdownTable, median, ratioInterval } from './report.js';

const GiB = 1024 * 1024 * 1024;

export type Kernel = 'stock' | 'patched';

/**
 * What is measured. fault-*: anonymous fault throughput (GiB/s); fork: fork+exit rate (/s);
 * plug: 1 GiB plugged and online (ms), timed by the host from its request; plug-guest: the same
 * plug timed by the guest, from the first block added to the last online (ms). The partition-*
 * metrics are the patched kernel's only, measured with a partition plugged: the same faults by an
 * unbound process and by one bound to the partition.
 */
export const METRICS = [
  'fault-4k',
  'fault-thp',
  'fork',
  'plug',
  'plug-guest',
  'partition-fault-4k-unbound',
  'partition-fault-4k-bound',
  'partition-fault-thp-unbound',
  'partition-fault-thp-bound',
] as const;

export type Metric = (typeof METRICS)[number];

export interface Sample {
  kernel: Kernel;
  /** Which boot of that kernel, from 0. */
  boot: number;
  metric: Metric;
  value: number;
  /** For THP faults: the share of the region the kernel backed with huge pages. */
  thpShare?: number;
}

/** One line of the guest program's output. */
export type NotaxLine =
  | { kind: 'fault'; page: '4k' | 'thp'; bytes: number; ns: number; thpFaults: number }
  | { kind: 'fork'; holdBytes: number; forks: number; ns: number }
  | { kind: 'plug'; blocks: number; ns: number };

/** Parses notax's stdout (scripts/testbed/guest/notax.c); throws on a line it does not know. */
export function parseNotax(stdout: string): NotaxLine[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((line): NotaxLine | [] => {
      const fault = /^fault (4k|thp) (\d+) (\d+) (-?\d+)$/.exec(line.trim());
      if (fault)
        return {
          kind: 'fault',
          page: fault[1] as '4k' | 'thp',
          bytes: Number(fault[2]),
          ns: Number(fault[3]),
          thpFaults: Number(fault[4]),
        };
      const fork = /^fork (\d+) (\d+) (\d+)$/.exec(line.trim());
      if (fork)
        return {
          kind: 'fork',
          holdBytes: Number(fork[1]),
          forks: Number(fork[2]),
          ns: Number(fork[3]),
        };
      const plug = /^plug (\d+) (\d+)$/.exec(line.trim());
      if (plug) return { kind: 'plug', blocks: Number(plug[1]), ns: Number(plug[2]) };
      // "listening" is the plug's signal that it waits for the kernel's uevents.
      if (line.trim() === 'listening') return [];
      throw new Error(`notax: unexpected output line '${line}'`);
    });
}

const HUGE_PAGE = 2 * 1024 * 1024;

/**
 * Fault throughput in GiB/s, fork+exit rate in forks/s, a plug's time in ms; with THP, the share
 * in huge pages.
 */
export function lineValue(line: NotaxLine): { value: number; thpShare?: number } {
  if (line.kind === 'fork') return { value: line.forks / (line.ns / 1e9) };
  if (line.kind === 'plug') return { value: line.ns / 1e6 };
  const value = line.bytes / GiB / (line.ns / 1e9);
  return line.page === 'thp'
    ? { value, thpShare: (line.thpFaults * HUGE_PAGE) / line.bytes }
    : { value };
}

/** Whether a larger value is better (throughput) or worse (latency). */
export function higherIsBetter(metric: Metric): boolean {
  return metric !== 'plug' && metric !== 'plug-guest';
}

export interface Estimate {
  median: number;
  /** 95% bootstrap interval of the median; undefined with too few samples. */
  interval?: [number, number];
  n: number;
}

export function estimate(values: number[]): Estimate {
  return { median: median(values), interval: interval(values), n: values.length };
}

export interface Comparison {
  /** What the ratio divides by (stock, or the unbound process). */
  base: Estimate;
  /** What is compared with it (patched, or the bound process). */
  other: Estimate;
  /** other/base of the medians. */
  ratio: number;
  ratioInterval?: [number, number];
}

export function compare(base: number[], other: number[]): Comparison {
  return {
    base: estimate(base),
    other: estimate(other),
    ratio: median(other) / median(base),
    ratioInterval: ratioInterval(other, base),
  };
}

/**
 * The ratio boot by boot: for each boot index both sides have, the median of the other side's
 * values in that boot over the base side's; then the median of those ratios, with its bootstrap
 * interval over the boots. The kernels boot in turns, so boot b of one ran next to boot b of the
 * other, and drift on the host over a run falls on both halves of a pair; the interval counts
 * boots, not repetitions, which within one boot are not independent of each other. For bound
 * against unbound both sides come from the same boot.
 */
export function pairedByBoot(base: Sample[], other: Sample[]): Estimate {
  const perBoot = (samples: Sample[]) => {
    const boots = new Map<number, number[]>();
    for (const s of samples) {
      const values = boots.get(s.boot);
      if (values) values.push(s.value);
      else boots.set(s.boot, [s.value]);
    }
    return boots;
  };
  const baseBoots = perBoot(base);
  const ratios = [...perBoot(other)]
    .filter(([boot]) => baseBoots.has(boot))
    .sort(([a], [b]) => a - b)
    .map(([boot, values]) => median(values) / median(baseBoots.get(boot) as number[]));
  return ratios.length ? estimate(ratios) : { median: Number.NaN, n: 0 };
}

/**
 * Reads a patched/stock (or bound/unbound) ratio against a tolerance (the 3% target): met
 * when the whole 95% interval is on the good side of the bound, missed when it is all on the
 * bad side, and otherwise undecided, with which side the median is on. The bound is 1 - tol
 * for throughput (smaller is a cost) and 1 + tol for latency.
 */
export function verdict(
  c: Pick<Comparison, 'ratio' | 'ratioInterval'>,
  higherBetter: boolean,
  tolerance = 0.03,
): string {
  const bound = higherBetter ? 1 - tolerance : 1 + tolerance;
  const good = (r: number) => (higherBetter ? r >= bound : r <= bound);
  const pct = `${Math.round(tolerance * 100)}%`;
  if (!c.ratioInterval)
    return `${good(c.ratio) ? 'median within' : 'median beyond'} ${pct}, no interval`;
  const [low, high] = c.ratioInterval;
  if (good(low) && good(high)) return `met (within ${pct})`;
  if (!good(low) && !good(high)) return `MISSED (beyond ${pct})`;
  return `undecided: median ${good(c.ratio) ? 'within' : 'beyond'} ${pct}, interval crosses ${bound.toFixed(2)}`;
}

export interface MetricRow {
  metric: Metric;
  label: string;
  unit: string;
  /** All repetitions of all boots of each side, pooled. */
  comparison: Comparison;
  /** The same ratio boot by boot (pairedByBoot); n is the number of boot pairs. */
  byBoot: Estimate;
  /** Whether the 3% target applies (unbound faults and plug). */
  targeted: boolean;
  /**
   * The target's reading of the boot-by-boot ratio when it has an interval (at least five
   * pairs), of the pooled one otherwise: the pooled interval resamples repetitions as if they
   * were independent, and misses how much whole boots differ.
   */
  verdict: string;
}

const LABELS: Record<Metric, { label: string; unit: string; targeted: boolean }> = {
  'fault-4k': { label: 'anon fault 4 KiB, unbound', unit: 'GiB/s', targeted: true },
  'fault-thp': { label: 'anon fault THP, unbound', unit: 'GiB/s', targeted: true },
  fork: { label: 'fork+exit', unit: '/s', targeted: false },
  plug: { label: 'plug 1 GiB + online', unit: 'ms', targeted: true },
  'plug-guest': {
    label: 'plug 1 GiB + online, guest part',
    unit: 'ms',
    targeted: true,
  },
  'partition-fault-4k-unbound': { label: 'anon fault 4 KiB', unit: 'GiB/s', targeted: false },
  'partition-fault-4k-bound': { label: 'anon fault 4 KiB', unit: 'GiB/s', targeted: false },
  'partition-fault-thp-unbound': { label: 'anon fault THP', unit: 'GiB/s', targeted: false },
  'partition-fault-thp-bound': { label: 'anon fault THP', unit: 'GiB/s', targeted: false },
};

function row(metric: Metric, base: Sample[], other: Sample[]): MetricRow {
  const { label, unit, targeted } = LABELS[metric];
  const comparison = compare(
    base.map((s) => s.value),
    other.map((s) => s.value),
  );
  const byBoot = pairedByBoot(base, other);
  return {
    metric,
    label,
    unit,
    comparison,
    byBoot,
    targeted,
    verdict: verdict(targetRatio({ comparison, byBoot }), higherIsBetter(metric)),
  };
}

/**
 * The ratio the target reads: boot by boot when that has an interval (five pairs or more),
 * pooled otherwise.
 */
export function targetRatio(row: Pick<MetricRow, 'comparison' | 'byBoot'>): {
  ratio: number;
  ratioInterval?: [number, number];
  basis: 'by boot' | 'pooled';
} {
  const { comparison, byBoot } = row;
  return byBoot.interval
    ? { ratio: byBoot.median, ratioInterval: byBoot.interval, basis: 'by boot' }
    : { ratio: comparison.ratio, ratioInterval: comparison.ratioInterval, basis: 'pooled' };
}

/** The samples of one metric on one kernel, in sample order. */
function of(samples: Sample[], kernel: Kernel, metric: Metric): Sample[] {
  return samples.filter((s) => s.kernel === kernel && s.metric === metric);
}

/** Patched against stock, for every metric both kernels were measured on. */
export function kernelRows(samples: Sample[]): MetricRow[] {
  const metrics: Metric[] = ['fault-4k', 'fault-thp', 'fork', 'plug', 'plug-guest'];
  return metrics
    .filter((m) => of(samples, 'stock', m).length && of(samples, 'patched', m).length)
    .map((m) => row(m, of(samples, 'stock', m), of(samples, 'patched', m)));
}

/** On the patched kernel with a partition plugged: bound against unbound. */
export function bindingRows(samples: Sample[]): MetricRow[] {
  const pairs: [Metric, Metric][] = [
    ['partition-fault-4k-unbound', 'partition-fault-4k-bound'],
    ['partition-fault-thp-unbound', 'partition-fault-thp-bound'],
  ];
  return pairs
    .filter(([u, b]) => of(samples, 'patched', u).length && of(samples, 'patched', b).length)
    .map(([u, b]) => row(b, of(samples, 'patched', u), of(samples, 'patched', b)));
}

/** "12.3 [11.9–12.8]": a median and its interval, to `digits` decimals. */
export function formatEstimate(e: Estimate, digits: number): string {
  const range = e.interval ? ` [${e.interval.map((x) => x.toFixed(digits)).join('–')}]` : '';
  return `${e.median.toFixed(digits)}${range}`;
}

/** Decimals that show about three significant digits of a median. */
function digitsFor(x: number): number {
  return x >= 100 ? 0 : x >= 10 ? 1 : 2;
}

/** The printed table of MetricRows, with the two columns named after what they compare. */
export function metricTable(rows: MetricRow[], base: string, other: string): string {
  const header = [
    'metric',
    'unit',
    `${base} median [95%]`,
    `${other} median [95%]`,
    `${other}/${base} [95%]`,
    'n',
    'by boot [95%]',
    'boots',
    'target ±3%',
  ];
  const cells = rows.map((r) => {
    const c = r.comparison;
    const d = digitsFor(c.base.median);
    return [
      r.label,
      r.unit,
      formatEstimate(c.base, d),
      formatEstimate(c.other, d),
      formatEstimate({ median: c.ratio, interval: c.ratioInterval, n: 0 }, 3),
      `${c.base.n}/${c.other.n}`,
      formatEstimate(r.byBoot, 3),
      `${r.byBoot.n}`,
      r.targeted ? r.verdict : `(${r.verdict})`,
    ];
  });
  return markdownTable(header, cells, 2);
}

/** The kernel's boot line "Memory: 985432K/1048064K available (… 61000K reserved, …)". */
export interface BootMemory {
  availableKiB: number;
  totalKiB: number;
  reservedKiB: number;
}

export function parseBootMemory(console: string): BootMemory | undefined {
  const m = /Memory: (\d+)K\/(\d+)K available \([^)]*?(\d+)K reserved/.exec(console);
  if (!m) return undefined;
  return { availableKiB: Number(m[1]), totalKiB: Number(m[2]), reservedKiB: Number(m[3]) };
}

/** The zones /proc/zoneinfo lists, per node: "0 DMA", "0 HotMem0", … */
export function zoneNames(zoneinfo: string): string[] {
  return [...zoneinfo.matchAll(/^Node (\d+), zone\s+(\S+)/gm)].map((m) => `${m[1]} ${m[2]}`);
}

/** The size `nm -S` gives a symbol (hex), or undefined when it is not there. */
export function nmSize(nmOutput: string, symbol: string): number | undefined {
  for (const line of nmOutput.split('\n')) {
    const [, size, , name] = line.trim().split(/\s+/);
    if (name === symbol && size) return Number.parseInt(size, 16);
  }
  return undefined;
}

/** gdb -batch -ex 'print sizeof(T)' …: the values printed, in order ("$1 = 1664"). */
export function gdbValues(output: string): number[] {
  return [...output.matchAll(/^\$\d+ = (\d+)$/gm)].map((m) => Number(m[1]));
}

/** What the partition zones cost in memory, from one kernel's build and one of its boots. */
export interface MemoryCost {
  /** Zones per node /proc/zoneinfo lists. */
  zones: number;
  /** sizeof(struct zone), from the build's debug info. */
  zoneBytes?: number;
  /** sizeof(pg_data_t), the per-node structure that holds the zones. */
  nodeBytes?: number;
  bootMemory?: BootMemory;
  /** MemTotal after boot, bytes. */
  memTotal?: number;
}

/** The memory table: stock, patched and their difference per figure. */
export function memoryTable(
  stock: MemoryCost,
  patched: MemoryCost,
  labels: Record<Kernel, string> = { stock: 'stock', patched: 'patched' },
): string {
  const rows: [string, number | undefined, number | undefined][] = [
    ['zones per node (/proc/zoneinfo)', stock.zones, patched.zones],
    ['sizeof(struct zone), bytes', stock.zoneBytes, patched.zoneBytes],
    ['sizeof(pg_data_t) (per node), bytes', stock.nodeBytes, patched.nodeBytes],
    ['reserved at boot, KiB', stock.bootMemory?.reservedKiB, patched.bootMemory?.reservedKiB],
    ['available at boot, KiB', stock.bootMemory?.availableKiB, patched.bootMemory?.availableKiB],
    [
      'MemTotal, KiB',
      stock.memTotal && stock.memTotal / 1024,
      patched.memTotal && patched.memTotal / 1024,
    ],
  ];
  const show = (x: number | undefined) => (x === undefined ? 'n/a' : String(x));
  const diff = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined ? 'n/a' : `${b - a >= 0 ? '+' : ''}${b - a}`;
  return markdownTable(
    ['figure', labels.stock, labels.patched, `${labels.patched} − ${labels.stock}`],
    rows.map(([name, a, b]) => [name, show(a), show(b), diff(a, b)]),
    1,
  );
}
