// The replay report's arithmetic on hand-made runs: throughput over the run's span, latency with
// and without queueing, ratios with their intervals, and the series the plots draw.
import { describe, expect, it } from 'vitest';
import type { InvocationRecord } from '../../../lib/host/controller/controller.js';
import { percentile, summarize } from '../../../lib/host/replay.js';
import type { ModeRun } from '../../../scripts/testbed/replay-guest.js';
import { modeFigures, replayReport } from '../../../scripts/testbed/replay-report.js';

const MiB = 2 ** 20;

function run(mode: ModeRun['mode'], latencies: number[], unplugMs: number): ModeRun {
  const invocations: InvocationRecord[] = latencies.map((ms, i) => ({
    id: i + 1,
    functionName: 'fn-0000',
    memoryBytes: 128 * MiB,
    arrivalMs: i * 1000,
    queueWaitMs: ms / 2,
    start: i === 0 ? 'cold' : 'warm',
    coldStartMs: i === 0 ? 100 : 0,
    plugWaitMs: i === 0 ? 60 : 0,
    serviceMs: ms / 2,
    completionMs: i * 1000 + ms,
    error: null,
  }));
  const metrics = {
    invocations,
    scaleDowns: [
      {
        instanceId: 'i-000000000001',
        functionName: 'fn-0000',
        bytes: 128 * MiB,
        reason: 'keep-alive' as const,
        startedMs: 0,
        stopMs: 1,
        reclaimMs: mode === 'hotmem' ? 2 : null,
        reclaimKernelMs: mode === 'hotmem' ? 1.5 : null,
        unplugMs,
        unplugLate: false,
        completedMs: 10,
        outcome: 'unplugged' as const,
        errors: [],
      },
    ],
    memory: [
      { timeMs: 0, requestedBytes: 128 * MiB, pluggedBytes: 128 * MiB, usedBytes: 128 * MiB },
      { timeMs: 5000, requestedBytes: 0, pluggedBytes: 0, usedBytes: 0 },
    ],
  };
  const end = Math.max(...invocations.map((i) => i.completionMs));
  return {
    mode,
    summary: summarize(metrics, end),
    metrics,
    pagesMigrated: mode.startsWith('stock') ? 500 : 0,
    pluggedBeforeBytes: 0,
    pluggedAfterBytes: 0,
    wallMs: end,
  };
}

describe('replay report', () => {
  it('takes nearest-rank percentiles', () => {
    expect(percentile([5, 1, 3, 2, 4], 50)).toBe(3);
    expect(percentile([5, 1, 3, 2, 4], 99)).toBe(5);
    expect(percentile([], 50)).toBeNaN();
  });

  it('measures throughput over the span from the first arrival to the last completion', () => {
    // Arrivals at 0..4 s, the last completes at 4 s + 1 s: 5 invocations in 5 s.
    const figures = modeFigures(run('hotmem', [1000, 1000, 1000, 1000, 1000], 20));
    expect(figures.throughputPerS).toBeCloseTo(1, 5);
    expect(figures.latencyMs.p50).toBe(1000);
    expect(figures.latencyWithoutQueueMs.p50).toBe(500);
    expect(figures).toMatchObject({ coldStarts: 1, failed: 0, pagesMigrated: 0, stranded: 0 });
    // 128 MiB plugged for the 5 s of the span.
    expect(figures.meanPluggedMiB).toBeCloseTo(128, 5);
    // Memory before the first arrival does not count.
    const late = run('hotmem', [1000, 1000, 1000, 1000, 1000], 20);
    late.metrics.memory.unshift({
      timeMs: -10_000,
      requestedBytes: 0,
      pluggedBytes: 1024 * MiB,
      usedBytes: 0,
    });
    expect(modeFigures(late).meanPluggedMiB).toBeCloseTo(128, 5);
  });

  it('gives stock/HotMem ratios, and the series the plots need', () => {
    const stock = run('stock', [2000, 2000, 2000, 2000, 2000, 4000], 400);
    const hotmem = run('hotmem', [1000, 1000, 1000, 1000, 1000, 2000], 20);
    const report = replayReport([stock, hotmem]);
    // Six invocations each: enough for an interval, which holds the ratio.
    expect(report.markdown).toMatch(
      /- latency p50 stock\/hotmem: 2\.00x \(95% CI 1\.\d\d–[23]\.\d\d\)/,
    );
    expect(report.markdown).toMatch(/- latency p99 stock\/hotmem: 2\.00x \(95% CI /);
    // One scale-down each: a ratio, but too few for an interval.
    expect(report.markdown).toMatch(/^- unplug p50 stock\/hotmem: 20\.00x$/m);
    // Spans: stock 5 s + 4 s, hotmem 5 s + 2 s.
    expect(report.markdown).toContain(`- throughput hotmem/stock: ${(9 / 7).toFixed(2)}x`);
    // One cold start each: 100 ms, 60 of them waiting for the plug.
    expect(report.markdown).toMatch(/\| stock \| 6 \| 0 \| 1 \| 0 \| 100 \/ 100 \| 60 \/ 60 \|/);
    expect(report.latencies.HotMem).toEqual([1000, 1000, 1000, 1000, 1000, 2000]);
    expect(report.memory.filter((m) => m.series === 'stock plugged')).toEqual([
      { timeS: 0, series: 'stock plugged', bytes: 128 * MiB },
      { timeS: 5, series: 'stock plugged', bytes: 0 },
    ]);
    expect(report.invocationsPerSecond.filter((c) => c.series === 'HotMem')).toHaveLength(6);
    // Reclaim (HotMem only) plus unplug, per scale-down.
    expect(report.memoryBackMs).toEqual({ stock: [400], HotMem: [22] });
    // No stock-kernel run: no ratios against it.
    expect(report.markdown).not.toMatch(/stock-kernel/);
    // 128 MiB back in 22 ms against 400 ms.
    expect(report.markdown).toMatch(/^- reclamation throughput p50 hotmem\/stock: 18\.18x$/m);
  });

  it('takes reclamation throughput per MiB, and leaves out memory never given back', () => {
    const hotmem = run('hotmem', [1000], 18);
    const [done] = hotmem.metrics.scaleDowns;
    if (!done) throw new Error('no scale-down');
    hotmem.metrics.scaleDowns.push(
      // 256 MiB in 40 ms: 6400 MiB/s, as fast per MiB as 128 MiB in 20 ms.
      { ...done, instanceId: 'i-000000000002', bytes: 256 * MiB, reclaimMs: 0, unplugMs: 40 },
      // Never unplugged: no rate, whatever its bytes.
      {
        ...done,
        instanceId: 'i-000000000003',
        unplugMs: null,
        completedMs: null,
        unplugLate: true,
        outcome: 'stranded',
      },
    );
    expect(modeFigures(hotmem).reclamationMiBPerS).toBeCloseTo(6400, 5);
    expect(replayReport([hotmem]).markdown).toMatch(/\| 6400 \| 0 \/ 1 \|/);
    // hotmem-kept's scale-downs end in the guest: nothing given back, no rate.
    expect(modeFigures(run('hotmem-kept', [1000], 0)).reclamationMiBPerS).toBeNull();
  });

  it('counts evictions beside cold starts, and reads runs saved before scale-downs had a reason', () => {
    const evicting = run('hotmem', [1000, 1000], 20);
    const [keptAlive] = evicting.metrics.scaleDowns;
    if (!keptAlive) throw new Error('run() makes one scale-down');
    evicting.metrics.scaleDowns.push({
      ...keptAlive,
      instanceId: 'i-000000000002',
      reason: 'evicted',
    });
    expect(modeFigures(evicting).evictions).toBe(1);
    expect(replayReport([evicting]).markdown).toMatch(/^\| HotMem \| 2 \| 0 \| 1 \| 1 \| /m);
    // As read back from a JSON file of an earlier run.
    const saved = JSON.parse(JSON.stringify(run('stock', [1000], 400))) as ModeRun;
    for (const scaleDown of saved.metrics.scaleDowns) {
      delete (scaleDown as Partial<typeof scaleDown>).reason;
    }
    expect(modeFigures(saved).evictions).toBe(0);
    expect(replayReport([saved]).markdown).toMatch(/^\| stock \| 1 \| 0 \| 1 \| 0 \| /m);
  });

  it('names stock-kernel "stock (ZONE_NORMAL)", counts its late unplugs, and gives HotMem against it too', () => {
    const stock = run('stock', [2000, 2000, 2000, 2000, 2000, 4000], 400);
    const kernel = run('stock-kernel', [4000, 4000, 4000, 4000, 4000, 8000], 60_000);
    const hotmem = run('hotmem', [1000, 1000, 1000, 1000, 1000, 2000], 20);
    const [late] = kernel.metrics.scaleDowns;
    if (!late) throw new Error('run() makes one scale-down');
    late.unplugLate = true;
    kernel.metrics.scaleDowns.push({
      ...late,
      instanceId: 'i-000000000002',
      unplugMs: null,
      completedMs: null,
      outcome: 'stranded',
    });
    kernel.zonesSeen = ['Normal'];
    stock.zonesSeen = ['Movable'];
    const report = replayReport([stock, hotmem, kernel]);
    expect(modeFigures(kernel)).toMatchObject({ lateUnplugs: 1, strandedUnplugs: 1, stranded: 0 });
    expect(report.markdown).toMatch(/^\| stock \(ZONE_NORMAL\) \| 6 \| 0 \| 1 \| 0 \| /m);
    expect(report.markdown).toMatch(/\| 60000 \/ 60000 \| 2 \| 1 \/ 1 \| 500 \|/);
    expect(report.markdown).toMatch(/\| 400 \/ 400 \| 320 \| 0 \/ 0 \| 500 \|/);
    // Both stock modes against HotMem, each under its own heading.
    expect(report.markdown).toContain(`- throughput hotmem/stock: ${(9 / 7).toFixed(2)}x`);
    expect(report.markdown).toContain(
      'HotMem against stock (ZONE_NORMAL), same VM, same trace, one run',
    );
    // Spans: stock-kernel 5 s + 8 s, hotmem 5 s + 2 s.
    expect(report.markdown).toContain(`- throughput hotmem/stock-kernel: ${(13 / 7).toFixed(2)}x`);
    expect(report.markdown).toMatch(/- latency p99 stock-kernel\/hotmem: 4\.00x/);
    expect(report.markdown).toMatch(/^- unplug p50 stock-kernel\/hotmem: 3000\.00x$/m);
    expect(report.markdown).toContain('- stock-kernel: 1 unplugs never done');
    expect(report.markdown).toContain(
      'Zones of hot-plugged blocks seen online: stock: Movable; stock (ZONE_NORMAL): Normal.',
    );
    expect(report.memoryBackMs['stock (ZONE_NORMAL)']).toEqual([60_000]);
    expect(report.memory.some((m) => m.series === 'stock (ZONE_NORMAL) plugged')).toBe(true);
  });

  it('gives the guest CPU spent giving memory back, per GiB, and none for runs saved without it', () => {
    const stock = run('stock', [1000], 400);
    const hotmem = run('hotmem', [1000], 20);
    const kept = run('hotmem-kept', [1000], 0);
    // 128 MiB given back each: 1/8 GiB.
    stock.kernelWorkerCpuMs = 500;
    hotmem.kernelWorkerCpuMs = 110;
    kept.kernelWorkerCpuMs = 90;
    expect(modeFigures(hotmem)).toMatchObject({
      givenBackGiB: 0.125,
      kernelWorkerCpuS: 0.11,
      reclaimCpuS: 0.0015,
    });
    const report = replayReport([stock, hotmem, kept]);
    expect(report.markdown).toMatch(/^\| stock \| 0\.13 \| 0\.50 \| 0\.000 \| 4\.000 \|$/m);
    expect(report.markdown).toMatch(/^\| HotMem \| 0\.13 \| 0\.11 \| 0\.002 \| 0\.892 \|$/m);
    // Nothing given back: its workers' CPU is their other work, and no per-GiB figure.
    expect(report.markdown).toMatch(
      /^\| HotMem, memory kept \| 0\.00 \| 0\.09 \| 0\.000 \| – \|$/m,
    );
    expect(report.markdown).toContain('- guest CPU per GiB given back stock/hotmem: 4.48x');
    // Runs saved before the workers' CPU was read: no table, no ratio.
    const saved = replayReport([run('stock', [1000], 400), run('hotmem', [1000], 20)]);
    expect(saved.markdown).not.toMatch(/kernel workers CPU|guest CPU per GiB/);
  });
});
