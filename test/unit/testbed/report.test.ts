import { describe, expect, it } from 'vitest';
import {
  interval,
  markdownTable,
  ratioInterval,
  ratios,
  reclaimLatencyPlot,
  type Sample,
  summarize,
  table,
} from '../../../scripts/testbed/report.js';

const MiB = 1024 * 1024;
const sample = (
  mode: Sample['mode'],
  scenario: Sample['scenario'],
  sizeMiB: number,
  unplugMs: number,
  pagesMigrated = 0,
  reclaimMs = 0,
): Sample => ({
  mode,
  scenario,
  sizeBytes: sizeMiB * MiB,
  plugMs: 10,
  reclaimMs,
  offlineMs: reclaimMs / 2,
  unplugMs,
  pagesMigrated,
  guestCpuMs: 20,
});

describe('benchmark report', () => {
  const samples = [
    sample('stock', 'idle', 128, 50),
    sample('stock', 'idle', 128, 70),
    sample('stock', 'idle', 128, 60),
    sample('stock', 'loaded', 128, 900, 1000),
    sample('stock', 'loaded', 128, 1100, 3000),
    sample('hotmem', 'idle', 128, 20, 0, 10),
    sample('hotmem', 'loaded', 128, 30, 0, 20),
  ];

  it('takes the median of repeated runs per mode, scenario and size, and adds reclaim to unplug', () => {
    const rows = summarize(samples);
    expect(rows[0]).toEqual({
      mode: 'stock',
      scenario: 'idle',
      sizeMiB: 128,
      plugMs: 10,
      reclaimMs: 0,
      unplugMs: 60,
      totalMs: 60,
      pagesMigrated: 0,
      guestCpuMs: 20,
      runs: 3,
    });
    expect(rows[1]).toMatchObject({
      scenario: 'loaded',
      unplugMs: 1000,
      totalMs: 1000,
      pagesMigrated: 2000,
      runs: 2,
    });
    expect(rows[3]).toMatchObject({
      mode: 'hotmem',
      scenario: 'loaded',
      reclaimMs: 20,
      unplugMs: 30,
      totalMs: 50,
    });
  });

  it('prints a Markdown table with one row per group', () => {
    const lines = table(summarize(samples)).split('\n');
    expect(lines).toHaveLength(6);
    expect(lines[0]).toMatch(
      /^\| mode\s+\| scenario \| size MiB \| plug ms \| reclaim ms \| unplug ms \| total ms \|/,
    );
    expect(lines[1]).toMatch(/^\|-+\|/);
    expect(lines[3]).toMatch(
      /^\| stock\s+\| loaded\s+\|\s+128 \|\s+10\.0 \|\s+0\.0 \|\s+1000\.0 \|\s+1000\.0 \|\s+2000 \|/,
    );
  });

  it('states the ratios measured side by side', () => {
    expect(ratios(samples)).toEqual([
      '128 MiB: idle stock/hotmem 2.0x, loaded stock/hotmem 20.0x, hotmem loaded/idle 1.67x',
    ]);
    expect(ratios(samples.filter((s) => s.mode === 'stock'))).toEqual([]);
  });

  it('puts the untouched scenario first, and keeps loaded/idle to the scenarios that ran', async () => {
    const withUntouched = [
      ...samples,
      sample('stock', 'untouched', 128, 12),
      sample('hotmem', 'untouched', 128, 8, 0, 4),
    ];
    expect(ratios(withUntouched)).toEqual([
      '128 MiB: untouched stock/hotmem 1.0x, idle stock/hotmem 2.0x, loaded stock/hotmem 20.0x, hotmem loaded/idle 1.67x',
    ]);
    const svg = await reclaimLatencyPlot(summarize(withUntouched), 'test');
    const colors = [...svg.matchAll(/aria-roledescription="line mark" [^>]*stroke="([^"]+)"/g)].map(
      (m) => m[1],
    );
    expect(new Set(colors).size).toBe(6);
  });

  it('gives a ratio its 95% bootstrap interval once both groups have 5 runs', () => {
    const many = (mode: Sample['mode'], scenario: Sample['scenario'], ms: number[]) =>
      ms.map((m) => sample(mode, scenario, 128, m));
    const lines = ratios([
      ...many('stock', 'loaded', [900, 1000, 1100, 950, 1050]),
      ...many('hotmem', 'loaded', [9, 10, 11, 10, 10]),
      ...many('hotmem', 'idle', [10, 10, 10, 10]),
    ]);
    expect(lines).toEqual([
      expect.stringMatching(
        /^128 MiB: loaded stock\/hotmem 100\.0x \(95% CI (\d+\.\d)-(\d+\.\d)\), hotmem loaded\/idle 1\.00x$/,
      ),
    ]);
    const [low, high] = ratioInterval([900, 1000, 1100, 950, 1050], [9, 10, 11, 10, 10]) ?? [];
    // Medians of resamples lie between the groups' extremes: 900/11 and 1100/9.
    expect(low).toBeGreaterThanOrEqual(900 / 11);
    expect(low).toBeLessThan(100);
    expect(high).toBeGreaterThan(100);
    expect(high).toBeLessThanOrEqual(1100 / 9);
    // The same samples, the same interval.
    expect(ratioInterval([900, 1000, 1100, 950, 1050], [9, 10, 11, 10, 10])).toEqual([low, high]);
  });

  it('gives identical groups a degenerate interval at 1', () => {
    expect(ratioInterval([5, 5, 5, 5, 5], [5, 5, 5, 5, 5])).toEqual([1, 1]);
    expect(ratioInterval([5, 5, 5, 5], [5, 5, 5, 5, 5])).toBeUndefined();
  });

  it('bounds a median by the interval of its resampled medians', () => {
    const xs = [10, 11, 12, 13, 14, 15, 16];
    const [low, high] = interval(xs) ?? [];
    expect(low).toBeGreaterThanOrEqual(10);
    expect(low).toBeLessThanOrEqual(13);
    expect(high).toBeGreaterThanOrEqual(13);
    expect(high).toBeLessThanOrEqual(16);
    expect(interval(xs)).toEqual([low, high]);
    expect(interval([5, 5, 5, 5, 5])).toEqual([5, 5]);
    expect(interval([5, 5, 5, 5])).toBeUndefined();
  });

  it('pads a Markdown table: text columns left, numbers right', () => {
    expect(
      markdownTable(
        ['name', 'n'],
        [
          ['a', '1'],
          ['long', '100'],
        ],
        1,
      ).split('\n'),
    ).toEqual(['| name |   n |', '|------|-----|', '| a    |   1 |', '| long | 100 |']);
  });

  it('draws one line per mode and scenario', async () => {
    const svg = await reclaimLatencyPlot(summarize(samples), 'test');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.endsWith('</svg>')).toBe(true);
    expect(svg.match(/aria-roledescription="line mark" /g)).toHaveLength(4);
    expect(svg).toContain('>stock idle</text>');
    expect(svg).toContain('>hotmem loaded</text>');
  });
});
