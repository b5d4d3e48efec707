/**
 * Prometheus text exposition (version 0.0.4), written by hand: a histogram for reclaim latency,
 * counters, and gauges rendered from a snapshot at scrape time.
 */

export const RECLAIM_BUCKETS_SECONDS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

export class Histogram {
  readonly bounds: readonly number[];
  private readonly counts: number[];
  private sumValue = 0;
  private countValue = 0;

  constructor(bounds: readonly number[]) {
    if (bounds.some((bound, i) => i > 0 && bound <= (bounds[i - 1] as number))) {
      throw new RangeError('histogram bounds must increase strictly');
    }
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  observe(value: number): void {
    this.sumValue += value;
    this.countValue += 1;
    const index = this.bounds.findIndex((bound) => value <= bound);
    if (index >= 0) this.counts[index] = (this.counts[index] as number) + 1;
  }

  get count(): number {
    return this.countValue;
  }

  get sum(): number {
    return this.sumValue;
  }

  /** Cumulative counts per bound, +Inf last, as the exposition format wants them. */
  cumulative(): Array<{ le: string; count: number }> {
    let running = 0;
    const buckets = this.bounds.map((bound, i) => {
      running += this.counts[i] as number;
      return { le: formatNumber(bound), count: running };
    });
    buckets.push({ le: '+Inf', count: this.countValue });
    return buckets;
  }
}

export type Labels = Record<string, string>;

export type MetricFamily =
  | {
      name: string;
      help: string;
      type: 'gauge' | 'counter';
      samples: Array<{ labels?: Labels; value: number }>;
    }
  | { name: string; help: string; type: 'histogram'; histogram: Histogram };

export function renderMetrics(families: MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    if (family.type === 'histogram') {
      for (const bucket of family.histogram.cumulative()) {
        lines.push(`${family.name}_bucket${formatLabels({ le: bucket.le })} ${bucket.count}`);
      }
      lines.push(`${family.name}_sum ${formatNumber(family.histogram.sum)}`);
      lines.push(`${family.name}_count ${family.histogram.count}`);
    } else {
      for (const sample of family.samples) {
        lines.push(`${family.name}${formatLabels(sample.labels)} ${formatNumber(sample.value)}`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}

function formatLabels(labels: Labels | undefined): string {
  if (!labels || Object.keys(labels).length === 0) return '';
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabel(value)}"`);
  return `{${pairs.join(',')}}`;
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

const escapeHelp = (text: string) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (text: string) =>
  text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
