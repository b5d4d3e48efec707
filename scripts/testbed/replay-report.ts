// The report of a replay: per mode throughput, latency percentiles with and without queueing,
// cold starts, evictions, reclaim and unplug latency, pages migrated and memory-time;
// HotMem/stock ratios with bootstrap intervals over the invocations of the one run; and the
// series the plots draw.
import type { InvocationRecord } from '../../lib/host/controller/controller.js';
import { memoryArea, percentile } from '../../lib/host/replay.js';
import type { InvocationCount, MemoryPoint } from './charts.js';
import type { ModeRun } from './replay-guest.js';
import { median, ratioInterval } from './report.js';

const MiB = 2 ** 20;

const completed = (run: ModeRun) => run.metrics.invocations.filter((i) => i.error === null);
const latency = (i: InvocationRecord) => i.completionMs - i.arrivalMs;
const withoutQueueing = (i: InvocationRecord) => i.completionMs - i.arrivalMs - i.queueWaitMs;

export interface ModeFigures {
  mode: ModeRun['mode'];
  invocations: number;
  failed: number;
  coldStarts: number;
  /** Idle instances scaled down early for a queued invocation. */
  evictions: number;
  /** Of cold invocations: plug + agent start, and the plug wait within it. */
  coldStartMs: { p50: number; p90: number };
  plugWaitMs: { p50: number; p90: number };
  /** Completed invocations per second, from the first arrival to the last completion. */
  throughputPerS: number;
  latencyMs: { p50: number; p99: number; p999: number };
  latencyWithoutQueueMs: { p50: number; p99: number; p999: number };
  reclaimMsP50: number | null;
  unplugMs: { p50: number; p99: number };
  pagesMigrated: number;
  /** Mean plugged and used memory over the run. */
  meanPluggedMiB: number;
  meanUsedMiB: number;
  stranded: number;
}

/** The mean of a memory curve between two times. */
function meanOver(
  run: ModeRun,
  fromMs: number,
  toMs: number,
  field: 'pluggedBytes' | 'usedBytes',
): number {
  if (toMs <= fromMs) return Number.NaN;
  return memoryArea(run.metrics.memory, field, fromMs, toMs) / (toMs - fromMs);
}

export function modeFigures(run: ModeRun): ModeFigures {
  const done = completed(run);
  const cold = done.filter((i) => i.start === 'cold');
  const two = (values: number[]) => ({ p50: percentile(values, 50), p90: percentile(values, 90) });
  const first = Math.min(...run.metrics.invocations.map((i) => i.arrivalMs));
  const last = Math.max(...run.metrics.invocations.map((i) => i.completionMs));
  const spanMs = last - first;
  const three = (values: number[]) => ({
    p50: percentile(values, 50),
    p99: percentile(values, 99),
    p999: percentile(values, 99.9),
  });
  const unplugs = run.metrics.scaleDowns.flatMap((s) => (s.unplugMs === null ? [] : [s.unplugMs]));
  return {
    mode: run.mode,
    invocations: run.metrics.invocations.length,
    failed: run.metrics.invocations.length - done.length,
    coldStarts: cold.length,
    // From the records, not the summary: runs saved before eviction existed have no count there
    // (nor a reason on their scale-downs, which were never evictions).
    evictions: run.metrics.scaleDowns.filter((s) => s.reason === 'evicted').length,
    coldStartMs: two(cold.map((i) => i.coldStartMs)),
    plugWaitMs: two(cold.map((i) => i.plugWaitMs)),
    throughputPerS: spanMs > 0 ? done.length / (spanMs / 1000) : Number.NaN,
    latencyMs: three(done.map(latency)),
    latencyWithoutQueueMs: three(done.map(withoutQueueing)),
    reclaimMsP50: run.summary.reclaimMs?.p50 ?? null,
    unplugMs: { p50: percentile(unplugs, 50), p99: percentile(unplugs, 99) },
    pagesMigrated: run.pagesMigrated,
    meanPluggedMiB: meanOver(run, first, last, 'pluggedBytes') / MiB,
    meanUsedMiB: meanOver(run, first, last, 'usedBytes') / MiB,
    stranded: run.summary.strandedScaleDowns,
  };
}

function ratioLine(name: string, a: number[], b: number[], statistic: (xs: number[]) => number) {
  const value = statistic(a) / statistic(b);
  const interval = ratioInterval(a, b, statistic);
  const range = interval ? ` (95% CI ${interval.map((r) => r.toFixed(2)).join('–')})` : '';
  return `${name}: ${value.toFixed(2)}x${range}`;
}

const fixed = (value: number | null, digits = 0) =>
  value === null || Number.isNaN(value) ? '–' : value.toFixed(digits);

export interface ReplayReport {
  markdown: string;
  figures: ModeFigures[];
  memory: MemoryPoint[];
  invocationsPerSecond: InvocationCount[];
  /** Latency with queueing, per mode, for the CDF. */
  latencies: Record<string, number[]>;
  /**
   * Per mode, each scale-down that gave its memory back: from the instance's exit to the
   * unplug done (HotMem: reclaim, then unplug; stock: unplug, migration included).
   */
  memoryBackMs: Record<string, number[]>;
}

export function replayReport(runs: ModeRun[]): ReplayReport {
  const figures = runs.map(modeFigures);
  const rows = figures.map(
    (f) =>
      `| ${f.mode} | ${f.invocations} | ${f.failed} | ${f.coldStarts} | ${f.evictions} | ` +
      `${fixed(f.coldStartMs.p50)} / ${fixed(f.coldStartMs.p90)} | ${fixed(f.plugWaitMs.p50)} / ${fixed(f.plugWaitMs.p90)} | ` +
      `${fixed(f.throughputPerS, 2)} | ` +
      `${fixed(f.latencyMs.p50)} / ${fixed(f.latencyMs.p99)} / ${fixed(f.latencyMs.p999)} | ` +
      `${fixed(f.latencyWithoutQueueMs.p50)} / ${fixed(f.latencyWithoutQueueMs.p99)} | ` +
      `${fixed(f.reclaimMsP50, 1)} | ${fixed(f.unplugMs.p50)} / ${fixed(f.unplugMs.p99)} | ` +
      `${f.pagesMigrated} | ${fixed(f.meanPluggedMiB)} / ${fixed(f.meanUsedMiB)} | ${f.stranded} |`,
  );
  const lines = [
    '| mode | invocations | failed | cold | evicted | cold start p50 / p90 ms | of it plug wait p50 / p90 ms | throughput /s | latency p50 / p99 / p99.9 ms | without queue p50 / p99 ms | reclaim p50 ms | unplug p50 / p99 ms | pages migrated | mean plugged / used MiB | stranded |',
    '| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | --- | ---: | --- | ---: | --- | ---: |',
    ...rows,
  ];
  const stock = runs.find((r) => r.mode === 'stock');
  const hotmem = runs.find((r) => r.mode === 'hotmem');
  if (stock && hotmem) {
    const s = completed(stock);
    const h = completed(hotmem);
    const p99 = (xs: number[]) => percentile(xs, 99);
    const unplugs = (run: ModeRun) =>
      run.metrics.scaleDowns.flatMap((d) => (d.unplugMs === null ? [] : [d.unplugMs]));
    const [fs, fh] = [
      figures.find((f) => f.mode === 'stock'),
      figures.find((f) => f.mode === 'hotmem'),
    ];
    lines.push(
      '',
      'Ratios, same VM, same trace, one run (intervals: bootstrap over the invocations):',
      '',
      `- throughput hotmem/stock: ${fixed((fh?.throughputPerS ?? Number.NaN) / (fs?.throughputPerS ?? Number.NaN), 2)}x`,
      `- ${ratioLine('latency p50 stock/hotmem', s.map(latency), h.map(latency), median)}`,
      `- ${ratioLine('latency p99 stock/hotmem', s.map(latency), h.map(latency), p99)}`,
      `- ${ratioLine('unplug p50 stock/hotmem', unplugs(stock), unplugs(hotmem), median)}`,
    );
  }
  const kept = runs.find((r) => r.mode === 'hotmem-kept');
  if (kept) {
    const k = completed(kept).map(latency);
    const p99 = (xs: number[]) => percentile(xs, 99);
    lines.push(
      '',
      'Against the same trace with memory kept plugged (hotmem-kept: no give-back, no re-plug):',
      '',
      ...runs
        .filter((r) => r !== kept)
        .map(
          (r) =>
            `- ${ratioLine(`latency p99 ${r.mode}/hotmem-kept`, completed(r).map(latency), k, p99)}`,
        ),
    );
  }

  const memory: MemoryPoint[] = [];
  const invocationsPerSecond: InvocationCount[] = [];
  const latencies: Record<string, number[]> = {};
  const memoryBackMs: Record<string, number[]> = {};
  for (const run of runs) {
    // hotmem-kept gives nothing back: its scale-downs end in the guest.
    if (run.mode !== 'hotmem-kept') {
      memoryBackMs[run.mode] = run.metrics.scaleDowns.flatMap((s) =>
        s.outcome === 'unplugged' && s.unplugMs !== null ? [(s.reclaimMs ?? 0) + s.unplugMs] : [],
      );
    }
    const start = run.metrics.memory[0]?.timeMs ?? 0;
    for (const sample of run.metrics.memory) {
      const timeS = (sample.timeMs - start) / 1000;
      memory.push({ timeS, series: `${run.mode} plugged`, bytes: sample.pluggedBytes });
      memory.push({ timeS, series: `${run.mode} used`, bytes: sample.usedBytes });
    }
    const perSecond = new Map<number, number>();
    for (const invocation of run.metrics.invocations) {
      const second = Math.floor((invocation.arrivalMs - start) / 1000);
      perSecond.set(second, (perSecond.get(second) ?? 0) + 1);
    }
    const lastSecond = Math.max(0, ...perSecond.keys());
    for (let second = 0; second <= lastSecond; second++) {
      invocationsPerSecond.push({
        timeS: second,
        series: run.mode,
        invocations: perSecond.get(second) ?? 0,
      });
    }
    latencies[run.mode] = completed(run).map(latency);
  }
  return {
    markdown: lines.join('\n'),
    figures,
    memory,
    invocationsPerSecond,
    latencies,
    memoryBackMs,
  };
}
