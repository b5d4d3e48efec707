import { describe, expect, it } from 'vitest';
import {
  bindingRows,
  type Comparison,
  compare,
  formatEstimate,
  gdbValues,
  kernelRows,
  lineValue,
  memoryTable,
  metricTable,
  nmSize,
  pairedByBoot,
  parseBootMemory,
  parseNotax,
  type Sample,
  verdict,
  zoneNames,
} from '../../../scripts/testbed/notax-report.js';

const GiB = 1024 ** 3;

describe('the notax guest program output', () => {
  it('parses fault and fork lines', () => {
    expect(
      parseNotax(
        'fault 4k 67108864 250000000 0\nfault thp 67108864 10000000 32\n\nfork 16777216 50 300000000\n',
      ),
    ).toEqual([
      { kind: 'fault', page: '4k', bytes: 67108864, ns: 250000000, thpFaults: 0 },
      { kind: 'fault', page: 'thp', bytes: 67108864, ns: 10000000, thpFaults: 32 },
      { kind: 'fork', holdBytes: 16777216, forks: 50, ns: 300000000 },
    ]);
  });

  it('parses a plug line and passes over the plug\'s "listening"', () => {
    expect(parseNotax('listening\nplug 8 412000000\n')).toEqual([
      { kind: 'plug', blocks: 8, ns: 412000000 },
    ]);
  });

  it('refuses a line it does not know', () => {
    expect(() => parseNotax('fault 2m 1 2 3')).toThrow(/unexpected output line 'fault 2m 1 2 3'/);
  });

  it('turns lines into GiB/s, forks/s, ms and the huge-page share', () => {
    expect(lineValue({ kind: 'fault', page: '4k', bytes: GiB, ns: 2e9, thpFaults: 0 })).toEqual({
      value: 0.5,
    });
    expect(
      lineValue({ kind: 'fault', page: 'thp', bytes: 64 * 2 ** 20, ns: 1e9 / 16, thpFaults: 16 }),
    ).toEqual({ value: 1, thpShare: 0.5 });
    expect(lineValue({ kind: 'fork', holdBytes: 1, forks: 50, ns: 0.25e9 })).toEqual({
      value: 200,
    });
    expect(lineValue({ kind: 'plug', blocks: 8, ns: 412e6 })).toEqual({ value: 412 });
  });
});

const around = (x: number, spread: number) => [
  x - spread,
  x - spread / 2,
  x,
  x + spread / 2,
  x + spread,
  x,
];

describe('patched against stock', () => {
  it('divides the medians and bootstraps the ratio', () => {
    const c = compare(around(10, 0.1), around(9.9, 0.1));
    expect(c.base.median).toBeCloseTo(10);
    expect(c.other.median).toBeCloseTo(9.9);
    expect(c.ratio).toBeCloseTo(0.99);
    const [low, high] = c.ratioInterval ?? [];
    expect(low).toBeLessThanOrEqual(0.99);
    expect(high).toBeGreaterThanOrEqual(0.99);
    expect(c.base.interval?.[0]).toBeLessThanOrEqual(10);
  });

  it('reads throughput and latency ratios against 3%', () => {
    const tight = (ratio: number, lo: number, hi: number) => ({
      ...compare([1, 1, 1, 1, 1], [1, 1, 1, 1, 1]),
      ratio,
      ratioInterval: [lo, hi] as [number, number],
    });
    expect(verdict(tight(0.99, 0.98, 1.0), true)).toBe('met (within 3%)');
    expect(verdict(tight(0.9, 0.88, 0.92), true)).toBe('MISSED (beyond 3%)');
    expect(verdict(tight(0.99, 0.9, 1.05), true)).toBe(
      'undecided: median within 3%, interval crosses 0.97',
    );
    expect(verdict(tight(0.95, 0.9, 0.98), true)).toBe(
      'undecided: median beyond 3%, interval crosses 0.97',
    );
    // Latency: larger is the cost.
    expect(verdict(tight(1.01, 0.98, 1.02), false)).toBe('met (within 3%)');
    expect(verdict(tight(1.1, 1.05, 1.2), false)).toBe('MISSED (beyond 3%)');
    expect(verdict(tight(1.01, 0.95, 1.08), false)).toBe(
      'undecided: median within 3%, interval crosses 1.03',
    );
    expect(verdict({ ...tight(0.99, 0, 0), ratioInterval: undefined }, true)).toBe(
      'median within 3%, no interval',
    );
  });

  const samples: Sample[] = [
    ...around(2, 0.02).map((value) => ({
      kernel: 'stock' as const,
      boot: 0,
      metric: 'fault-4k' as const,
      value,
    })),
    ...around(2, 0.02).map((value) => ({
      kernel: 'patched' as const,
      boot: 0,
      metric: 'fault-4k' as const,
      value,
    })),
    ...around(150, 5).map((value) => ({
      kernel: 'stock' as const,
      boot: 0,
      metric: 'plug' as const,
      value,
    })),
    ...around(200, 5).map((value) => ({
      kernel: 'patched' as const,
      boot: 0,
      metric: 'plug' as const,
      value,
    })),
    ...around(2, 0.02).map((value) => ({
      kernel: 'patched' as const,
      boot: 0,
      metric: 'partition-fault-4k-unbound' as const,
      value,
    })),
    ...around(1.8, 0.02).map((value) => ({
      kernel: 'patched' as const,
      boot: 0,
      metric: 'partition-fault-4k-bound' as const,
      value,
    })),
  ];

  it('compares every metric measured on both kernels, and bound against unbound', () => {
    const rows = kernelRows(samples);
    expect(rows.map((r) => [r.metric, r.verdict])).toEqual([
      ['fault-4k', 'met (within 3%)'],
      ['plug', 'MISSED (beyond 3%)'],
    ]);
    const bound = bindingRows(samples);
    expect(bound.map((r) => [r.metric, r.comparison.ratio])).toEqual([
      ['partition-fault-4k-bound', expect.closeTo(0.9, 5)],
    ]);
  });

  it('prints medians with intervals, the ratio, the counts and the verdict', () => {
    const lines = metricTable(kernelRows(samples), 'stock', 'patched').split('\n');
    expect(lines[0]).toMatch(
      /^\| metric +\| unit +\| stock median \[95%\] \| patched median \[95%\] \| patched\/stock \[95%\] \| +n \| +by boot \[95%\] \| boots \| +target ±3% \|$/,
    );
    // One boot each: the boot-by-boot ratio has no interval, so the verdict reads the pooled one.
    expect(lines[2]).toMatch(
      /^\| anon fault 4 KiB, unbound \| GiB\/s \| +2\.00 \[1\.9\d–2\.0\d\] \| +2\.00 \[.*\] \| +1\.000 \[.*\] \| 6\/6 \| +1\.000 \| +1 \| +met \(within 3%\) \|$/,
    );
    expect(lines[3]).toMatch(
      /\| plug 1 GiB \+ online +\| ms +\| +150 \[\d+–\d+\] \| +200 \[.*\] \| +1\.333 \[.*\] \| 6\/6 \| +1\.333 \| +1 \| MISSED \(beyond 3%\) \|$/,
    );
    expect(formatEstimate({ median: 1.5, n: 3 }, 2)).toBe('1.50');
  });
});

describe('boot by boot', () => {
  /** Boot b of both kernels ran side by side: the host's speed that turn times each value. */
  const drifting = (kernel: 'stock' | 'patched', metric: Sample['metric'], factor: number) =>
    [1, 0.6, 1.3, 0.8, 1.1, 0.7].flatMap((speed, boot) =>
      around(2 * speed * factor, 0.01).map((value) => ({ kernel, boot, metric, value })),
    );

  it('pairs each boot with the boot beside it, so drift on the host cancels', () => {
    const samples = [...drifting('stock', 'fault-4k', 1), ...drifting('patched', 'fault-4k', 0.95)];
    const [row] = kernelRows(samples);
    expect(row?.byBoot.n).toBe(6);
    expect(row?.byBoot.median).toBeCloseTo(0.95, 2);
    const [low, high] = row?.byBoot.interval ?? [];
    expect(high).toBeLessThan(0.97);
    expect(low).toBeGreaterThan(0.93);
    // Pooled, the drift swamps a 5% cost; boot by boot it is plain, and the verdict says so.
    expect(row?.comparison.ratioInterval?.[1]).toBeGreaterThan(0.97);
    expect(row?.verdict).toBe('MISSED (beyond 3%)');
  });

  it('pairs bound with unbound from the same boot', () => {
    const samples = [
      ...drifting('patched', 'partition-fault-4k-unbound', 1),
      ...drifting('patched', 'partition-fault-4k-bound', 1.001),
    ];
    const [row] = bindingRows(samples);
    expect(row?.byBoot.median).toBeCloseTo(1.001, 3);
    expect(row?.verdict).toBe('met (within 3%)');
  });

  it('leaves out a boot that only one kernel has, and reads the pooled ratio below five pairs', () => {
    const samples = [
      ...drifting('stock', 'fault-4k', 1).filter((s) => s.boot < 4),
      ...drifting('patched', 'fault-4k', 0.95),
    ];
    const [row] = kernelRows(samples);
    expect(row?.byBoot.n).toBe(4);
    expect(row?.byBoot.interval).toBeUndefined();
    expect(
      pairedByBoot(
        samples.filter((s) => s.kernel === 'stock'),
        [],
      ),
    ).toEqual({
      median: Number.NaN,
      n: 0,
    });
    expect(row?.verdict).toBe(verdict(row?.comparison as Comparison, true));
  });
});

describe('memory figures', () => {
  it('reads the boot line, zoneinfo, nm and gdb', () => {
    expect(
      parseBootMemory(
        '[    0.101] Memory: 985432K/1048064K available (4096K kernel code, 1024K rwdata, 2048K rodata, 512K init, 600K bss, 62632K reserved, 0K cma-reserved)\n',
      ),
    ).toEqual({ availableKiB: 985432, totalKiB: 1048064, reservedKiB: 62632 });
    expect(parseBootMemory('no such line')).toBeUndefined();
    expect(
      zoneNames(
        'Node 0, zone      DMA\n  pages free 1\nNode 0, zone   Normal\nNode 0, zone  HotMem31\n',
      ),
    ).toEqual(['0 DMA', '0 Normal', '0 HotMem31']);
    expect(
      nmSize(
        'ffffffff82a00000 0000000000001a40 B contig_page_data\nffffffff81000000 T _text\n',
        'contig_page_data',
      ),
    ).toBe(0x1a40);
    expect(nmSize('ffffffff81000000 T _text\n', 'contig_page_data')).toBeUndefined();
    expect(gdbValues('$1 = 1664\n$2 = 172032\n')).toEqual([1664, 172032]);
  });

  it('tabulates both kernels and their difference', () => {
    const lines = memoryTable(
      { zones: 4, zoneBytes: 1600, nodeBytes: 10_000, memTotal: 1000 * 1024 },
      { zones: 36, zoneBytes: 1600, nodeBytes: 70_000, memTotal: 990 * 1024 },
    ).split('\n');
    const cells = (name: string) =>
      lines
        .find((l) => l.startsWith(`| ${name}`))
        ?.split('|')
        .slice(2, -1)
        .map((c) => c.trim());
    expect(cells('zones per node')).toEqual(['4', '36', '+32']);
    expect(cells('sizeof(pg_data_t)')).toEqual(['10000', '70000', '+60000']);
    expect(cells('MemTotal, KiB')).toEqual(['1000', '990', '-10']);
    expect(cells('reserved at boot')).toEqual(['n/a', 'n/a', 'n/a']);
  });
});
