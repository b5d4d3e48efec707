import { describe, expect, it } from 'vitest';
import { type Sample, summarize, svgPlot, table } from '../../../scripts/testbed/report.js';

const MiB = 1024 * 1024;
const sample = (
  scenario: Sample['scenario'],
  sizeMiB: number,
  unplugMs: number,
  pagesMigrated = 0,
): Sample => ({
  mode: 'stock',
  scenario,
  sizeBytes: sizeMiB * MiB,
  plugMs: 10,
  unplugMs,
  pagesMigrated,
  guestCpuMs: 20,
});

describe('benchmark report', () => {
  const samples = [
    sample('idle', 128, 50),
    sample('idle', 128, 70),
    sample('idle', 128, 60),
    sample('loaded', 128, 900, 1000),
    sample('loaded', 128, 1100, 3000),
    sample('idle', 256, 80),
  ];

  it('takes the median of repeated runs per mode, scenario and size', () => {
    expect(summarize(samples)).toEqual([
      {
        mode: 'stock',
        scenario: 'idle',
        sizeMiB: 128,
        plugMs: 10,
        unplugMs: 60,
        pagesMigrated: 0,
        guestCpuMs: 20,
        runs: 3,
      },
      {
        mode: 'stock',
        scenario: 'loaded',
        sizeMiB: 128,
        plugMs: 10,
        unplugMs: 1000,
        pagesMigrated: 2000,
        guestCpuMs: 20,
        runs: 2,
      },
      {
        mode: 'stock',
        scenario: 'idle',
        sizeMiB: 256,
        plugMs: 10,
        unplugMs: 80,
        pagesMigrated: 0,
        guestCpuMs: 20,
        runs: 1,
      },
    ]);
  });

  it('prints a Markdown table with one row per group', () => {
    const lines = table(summarize(samples)).split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^\| mode\s+\| scenario \| size MiB \| plug ms \| unplug ms \|/);
    expect(lines[1]).toMatch(/^\|-+\|/);
    expect(lines[3]).toMatch(/\| stock \| loaded\s+\|\s+128 \|\s+10\.0 \|\s+1000\.0 \|\s+2000 \|/);
  });

  it('draws one line per mode and scenario', () => {
    const svg = svgPlot(summarize(samples), 'test');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.endsWith('</svg>')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(2);
    expect(svg).toContain('>stock idle</text>');
    expect(svg).toContain('>stock loaded</text>');
  });
});
