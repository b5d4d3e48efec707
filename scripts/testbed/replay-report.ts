// The report of a replay: per mode throughput, latency percentiles with and without queueing,
// cold starts, evictions, reclaim and unplug latency, late and stranded unplugs, pages migrated
// and memory-time; HotMem against each stock mode that ran (stock, stock-kernel), as ratios with
// bootstrap intervals over the invocations of the one run; and the series the plots draw, named
// as replay-modes.ts names the modes.
import type { InvocationRecord } from '../../lib/host/controller/controller.js';
import { memoryArea, percentile, scaleDownCounts } from '../../lib/host/replay.js';
import type { InvocationCount, MemoryPoint } from './charts.js';
import type { ModeRun } from './replay-guest.js';
import { modeLabel, REPLAY_MODES, type ReplayMode } from './replay-modes.js';
import { median, ratioInterval } from './report.js';

const MiB = 2 ** 20;

const completed = (run: ModeRun) => run.metrics.invocations.filter((i) => i.error === null);
const latency = (i: InvocationRecord) => i.completionMs - i.arrivalMs;
const withoutQueueing = (i: InvocationRecord) => i.completionMs - i.arrivalMs - i.queueWaitMs;

/** hotmem-kept gives nothing back: its scale-downs end in the guest. */
const givesMemoryBack = (run: ModeRun) =>
  !Object.hasOwn(REPLAY_MODES, run.mode) || REPLAY_MODES[run.mode as ReplayMode].giveBackMemory;

/**
 * Each scale-down that gave its memory back: from the instance's exit to the unplug done
 * (HotMem: reclaim, then unplug; stock: unplug, migration included), and the bytes it gave.
 */
function memoryBack(run: ModeRun): { ms: number; bytes: number }[] {
  return run.metrics.scaleDowns.flatMap((s) =>
    s.outcome === 'unplugged' && s.unplugMs !== null
      ? [{ ms: (s.reclaimMs ?? 0) + s.unplugMs, bytes: s.bytes }]
      : [],
  );
}

/**
 * Reclamation throughput, the paper's measure ("7x higher reclamation throughput than
 * virtio-mem"): per scale-down, the memory given back over the time it took, in MiB/s.
 */
const reclamationRates = (run: ModeRun) =>
  memoryBack(run).map((b) => b.bytes / MiB / (Math.max(b.ms, 1) / 1000));

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
  /** Median reclamation throughput of the scale-downs that gave memory back (MiB/s). */
  reclamationMiBPerS: number | null;
  /** Unplugs not done in the controller's unplugTimeoutMs: done later, and never done. */
  lateUnplugs: number;
  strandedUnplugs: number;
  pagesMigrated: number;
  /** Mean plugged and used memory over the run. */
  meanPluggedMiB: number;
  meanUsedMiB: number;
  stranded: number;
  /** Memory the run's scale-downs gave back to the host, GiB. */
  givenBackGiB: number;
  /**
   * Guest CPU, s, of the kernel workers over the run (virtio-mem's work: unplugs, and stock's
   * migrations in them), null for runs saved before it was read; and of HotMem's reclaims (the
   * kernel's time in HOTMEM_IOC_RECLAIM, from their reports).
   */
  kernelWorkerCpuS: number | null;
  reclaimCpuS: number;
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
  // From the records, not the summary: runs saved before evictions or late unplugs were counted
  // have no such count in their summary.
  const counts = scaleDownCounts(run.metrics.scaleDowns);
  return {
    mode: run.mode,
    invocations: run.metrics.invocations.length,
    failed: run.metrics.invocations.length - done.length,
    coldStarts: cold.length,
    evictions: counts.evictions,
    coldStartMs: two(cold.map((i) => i.coldStartMs)),
    plugWaitMs: two(cold.map((i) => i.plugWaitMs)),
    throughputPerS: spanMs > 0 ? done.length / (spanMs / 1000) : Number.NaN,
    latencyMs: three(done.map(latency)),
    latencyWithoutQueueMs: three(done.map(withoutQueueing)),
    reclaimMsP50: run.summary.reclaimMs?.p50 ?? null,
    unplugMs: { p50: percentile(unplugs, 50), p99: percentile(unplugs, 99) },
    reclamationMiBPerS: givesMemoryBack(run) ? percentile(reclamationRates(run), 50) : null,
    lateUnplugs: counts.lateUnplugs,
    strandedUnplugs: counts.strandedUnplugs,
    pagesMigrated: run.pagesMigrated,
    meanPluggedMiB: meanOver(run, first, last, 'pluggedBytes') / MiB,
    meanUsedMiB: meanOver(run, first, last, 'usedBytes') / MiB,
    stranded: run.summary.strandedScaleDowns,
    givenBackGiB: givesMemoryBack(run)
      ? memoryBack(run).reduce((sum, b) => sum + b.bytes, 0) / 2 ** 30
      : 0,
    kernelWorkerCpuS: run.kernelWorkerCpuMs === undefined ? null : run.kernelWorkerCpuMs / 1000,
    reclaimCpuS:
      run.metrics.scaleDowns.reduce((sum, s) => sum + (s.reclaimKernelMs ?? 0), 0) / 1000,
  };
}

/** Guest CPU spent giving memory back, s per GiB given back; null when none was. */
function cpuPerGiB(f: ModeFigures): number | null {
  if (f.kernelWorkerCpuS === null || f.givenBackGiB === 0) return null;
  return (f.kernelWorkerCpuS + f.reclaimCpuS) / f.givenBackGiB;
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
  /** Latency with queueing, per mode (by its label), for the CDF. */
  latencies: Record<string, number[]>;
  /** Per mode that gives memory back (by its label), memoryBack()'s times. */
  memoryBackMs: Record<string, number[]>;
}

/** Stock modes HotMem is compared against, in the order their ratios are given. */
const BASELINES = (Object.keys(REPLAY_MODES) as ReplayMode[]).filter(
  (mode) => REPLAY_MODES[mode].controller === 'stock' && REPLAY_MODES[mode].giveBackMemory,
);

export function replayReport(runs: ModeRun[]): ReplayReport {
  const figures = runs.map(modeFigures);
  const rows = figures.map(
    (f) =>
      `| ${modeLabel(f.mode)} | ${f.invocations} | ${f.failed} | ${f.coldStarts} | ${f.evictions} | ` +
      `${fixed(f.coldStartMs.p50)} / ${fixed(f.coldStartMs.p90)} | ${fixed(f.plugWaitMs.p50)} / ${fixed(f.plugWaitMs.p90)} | ` +
      `${fixed(f.throughputPerS, 2)} | ` +
      `${fixed(f.latencyMs.p50)} / ${fixed(f.latencyMs.p99)} / ${fixed(f.latencyMs.p999)} | ` +
      `${fixed(f.latencyWithoutQueueMs.p50)} / ${fixed(f.latencyWithoutQueueMs.p99)} | ` +
      `${fixed(f.reclaimMsP50, 1)} | ${fixed(f.unplugMs.p50)} / ${fixed(f.unplugMs.p99)} | ` +
      `${fixed(f.reclamationMiBPerS)} | ` +
      `${f.lateUnplugs} / ${f.strandedUnplugs} | ` +
      `${f.pagesMigrated} | ${fixed(f.meanPluggedMiB)} / ${fixed(f.meanUsedMiB)} | ${f.stranded} |`,
  );
  const lines = [
    '| mode | invocations | failed | cold | evicted | cold start p50 / p90 ms | of it plug wait p50 / p90 ms | throughput /s | latency p50 / p99 / p99.9 ms | without queue p50 / p99 ms | reclaim p50 ms | unplug p50 / p99 ms | reclamation p50 MiB/s | unplugs late / never done | pages migrated | mean plugged / used MiB | stranded |',
    '| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | --- | ---: | --- | ---: | --- | ---: | --- | ---: |',
    ...rows,
  ];
  lines.push(
    '',
    'Reclamation: per scale-down that gave memory back, its MiB over the time from the instance ' +
      "exit to the memory back with the host (the paper's reclamation throughput).",
  );
  if (figures.some((f) => f.kernelWorkerCpuS !== null)) {
    lines.push(
      '',
      '| mode | given back GiB | kernel workers CPU s | reclaims CPU s | CPU s per GiB given back |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...figures.map(
        (f) =>
          `| ${modeLabel(f.mode)} | ${fixed(f.givenBackGiB, 2)} | ${fixed(f.kernelWorkerCpuS, 2)} | ` +
          `${fixed(f.reclaimCpuS, 3)} | ${fixed(cpuPerGiB(f), 3)} |`,
      ),
      '',
      "Guest CPU: the kernel workers' user + system time over the run (virtio-mem unplugs, and " +
        'migrates, in them; 10 ms ticks; a worker that exited during the run is missed), which ' +
        'also holds their other work: a mode that unplugs nothing (hotmem-kept) shows that part ' +
        "alone. Reclaims: the guest kernel's time in HotMem's reclaims, from their reports.",
    );
  }
  if (figures.some((f) => f.lateUnplugs + f.strandedUnplugs > 0)) {
    lines.push(
      '',
      "Unplugs late: not done within the controller's unplug timeout, done later (their time is in " +
        'the unplug figures); never done: still not done when the run ended (not in them).',
    );
  }
  const zones = runs.filter((r) => r.zonesSeen !== undefined);
  if (zones.length > 0) {
    lines.push(
      '',
      `Zones of hot-plugged blocks seen online: ${zones
        .map((r) => `${modeLabel(r.mode)}: ${r.zonesSeen?.join(', ') || 'none'}`)
        .join('; ')}.`,
    );
  }
  const hotmem = runs.find((r) => r.mode === 'hotmem');
  const fh = figures.find((f) => f.mode === 'hotmem');
  for (const baseline of BASELINES) {
    const stock = runs.find((r) => r.mode === baseline);
    const fs = figures.find((f) => f.mode === baseline);
    if (!stock || !hotmem || !fs || !fh) continue;
    const s = completed(stock);
    const h = completed(hotmem);
    const p99 = (xs: number[]) => percentile(xs, 99);
    const unplugs = (run: ModeRun) =>
      run.metrics.scaleDowns.flatMap((d) => (d.unplugMs === null ? [] : [d.unplugMs]));
    lines.push(
      '',
      `HotMem against ${modeLabel(baseline)}, same VM, same trace, one run (intervals: bootstrap over the invocations):`,
      '',
      `- throughput hotmem/${baseline}: ${fixed(fh.throughputPerS / fs.throughputPerS, 2)}x`,
      `- ${ratioLine(`latency p50 ${baseline}/hotmem`, s.map(latency), h.map(latency), median)}`,
      `- ${ratioLine(`latency p99 ${baseline}/hotmem`, s.map(latency), h.map(latency), p99)}`,
      `- ${ratioLine(`unplug p50 ${baseline}/hotmem`, unplugs(stock), unplugs(hotmem), median)}`,
      `- ${ratioLine(`reclamation throughput p50 hotmem/${baseline}`, reclamationRates(hotmem), reclamationRates(stock), median)}`,
    );
    const [cpuStock, cpuHotmem] = [cpuPerGiB(fs), cpuPerGiB(fh)];
    if (cpuStock !== null && cpuHotmem !== null) {
      lines.push(
        `- guest CPU per GiB given back ${baseline}/hotmem: ${fixed(cpuStock / cpuHotmem, 2)}x (totals of the run, no interval)`,
      );
    }
    if (fs.strandedUnplugs > 0) {
      lines.push(
        `- ${baseline}: ${fs.strandedUnplugs} unplugs never done, not in its unplug figures`,
      );
    }
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
    const series = modeLabel(run.mode);
    if (givesMemoryBack(run)) memoryBackMs[series] = memoryBack(run).map((b) => b.ms);
    const start = run.metrics.memory[0]?.timeMs ?? 0;
    for (const sample of run.metrics.memory) {
      const timeS = (sample.timeMs - start) / 1000;
      memory.push({ timeS, series: `${series} plugged`, bytes: sample.pluggedBytes });
      memory.push({ timeS, series: `${series} used`, bytes: sample.usedBytes });
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
        series,
        invocations: perSecond.get(second) ?? 0,
      });
    }
    latencies[series] = completed(run).map(latency);
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
