import { describe, expect, it } from 'vitest';
import {
  evaluatedData,
  latencyBySizeSpec,
  latencyCdfSpec,
  memoryTimelineSpec,
  renderSvg,
} from '../../../scripts/testbed/charts.js';

const lineMarks = (svg: string) => svg.match(/aria-roledescription="line mark" /g)?.length ?? 0;

describe('charts', () => {
  it('draws latency against size on a log axis, one line per series', async () => {
    const svg = await renderSvg(
      latencyBySizeSpec(
        [
          { series: 'stock loaded', sizeMiB: 128, latencyMs: 900 },
          { series: 'stock loaded', sizeMiB: 256, latencyMs: 2000 },
          { series: 'hotmem loaded', sizeMiB: 128, latencyMs: 9 },
          { series: 'hotmem loaded', sizeMiB: 256, latencyMs: 0 },
        ],
        'reclaim',
      ),
    );
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.endsWith('</svg>')).toBe(true);
    expect(lineMarks(svg)).toBe(2);
    expect(svg).toContain("Y-axis titled 'reclamation latency (ms, log)' for a log scale");
    expect(svg).toContain(
      'legend for fill color and stroke color with 2 values: hotmem loaded, stock loaded',
    );
  });

  it('computes each series its own empirical CDF', async () => {
    const data = await evaluatedData(latencyCdfSpec({ a: [5, 1, 3, 2], b: [10, 10] }, 'cdf'));
    const rows = Object.values(data).find((values) =>
      values.some((v) => (v as { fraction?: number }).fraction !== undefined),
    ) as { series: string; ms: number; fraction: number }[];
    const of = (series: string) =>
      rows
        .filter((r) => r.series === series)
        .sort((x, y) => x.ms - y.ms || x.fraction - y.fraction)
        .map((r) => [r.ms, r.fraction]);
    expect(of('a')).toEqual([
      [1, 0.25],
      [2, 0.5],
      [3, 0.75],
      [5, 1],
    ]);
    // Tied samples make a vertical step, not one point.
    expect(of('b')).toEqual([
      [10, 0.5],
      [10, 1],
    ]);
  });

  it('stacks memory over time above invocations on one time axis', async () => {
    const MiB = 2 ** 20;
    const svg = await renderSvg(
      memoryTimelineSpec(
        [
          { timeS: 0, series: 'hotmem plugged', bytes: 0 },
          { timeS: 5, series: 'hotmem plugged', bytes: 512 * MiB },
          { timeS: 0, series: 'hotmem used', bytes: 0 },
          { timeS: 5, series: 'hotmem used', bytes: 300 * MiB },
        ],
        [
          { timeS: 0, series: 'hotmem', invocations: 3 },
          { timeS: 5, series: 'hotmem', invocations: 7 },
        ],
        'timeline',
      ),
    );
    expect(lineMarks(svg)).toBe(3);
    expect(svg).toContain("Y-axis titled 'memory (MiB)'");
    expect(svg).toContain("Y-axis titled 'invocations'");
    expect(svg).toMatch(/X-axis titled 'time \(s\)'.*X-axis titled 'time \(s\)'/s);
  });

  it('names the series and the value that cannot be drawn', () => {
    expect(() => latencyCdfSpec({ hotmem: [1, Number.NaN] }, 'p99')).toThrow(
      'p99: series "hotmem": NaN is not a finite number',
    );
    expect(() => latencyCdfSpec({ stock: [] }, 'p99')).toThrow(
      'p99: series "stock" has no samples',
    );
    expect(() => latencyBySizeSpec([], 'reclaim')).toThrow('reclaim: no points to plot');
    expect(() =>
      memoryTimelineSpec([{ timeS: 1, series: 'x', bytes: Number.POSITIVE_INFINITY }], [], 't'),
    ).toThrow('t: memory bytes: Infinity is not a finite number');
  });
});
