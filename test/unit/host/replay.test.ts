// A generated trace replayed through the controller on the fake VM, in both modes.
import { describe, expect, it } from 'vitest';
import { Controller, type ControllerMetrics } from '../../../lib/host/controller/controller.js';
import { replay, summarize } from '../../../lib/host/replay.js';
import { generateTrace } from '../../../lib/host/trace/generate.js';
import { FakeVm, type FakeVmOptions, GiB, MiB } from './fake-vm.js';

async function run(
  mode: 'hotmem' | 'stock',
  budgetBytes = 2 * GiB,
  vmOptions: Partial<FakeVmOptions> = {},
) {
  const vm = new FakeVm({ mode: mode === 'hotmem' ? 'bound' : 'unbound', ...vmOptions });
  const controller = new Controller(
    {
      ...vm,
      instanceCommand: (name) => ({ command: ['/usr/bin/node', `/srv/${name}.mjs`] }),
    },
    { mode, budgetBytes, keepAliveMs: 2_000, retryDelayMs: 100 },
  );
  await controller.start();
  const trace = generateTrace({
    seed: 42,
    shape: 'bursty',
    functions: 6,
    minutes: 10,
    compression: 60,
    maxDurationMs: 2_000,
    memoryMiB: { min: 128, max: 512 },
  });
  const summary = replay(trace, controller, vm.clock);
  await vm.clock.advance(120_000);
  return { vm, trace, controller, summary: await summary };
}

describe('replay', () => {
  it('runs every invocation of a trace and scales everything down at the end', async () => {
    const { vm, trace, summary } = await run('hotmem');
    expect(trace.invocations.length).toBeGreaterThan(20);
    expect(summary.invocations).toBe(trace.invocations.length);
    expect(summary).toMatchObject({ failed: 0, strandedScaleDowns: 0 });
    expect(summary.coldStarts).toBeGreaterThan(0);
    expect(summary.coldStarts).toBeLessThan(summary.invocations);
    expect(summary.reclaimMs).toMatchObject({ p50: 30, max: 30 }); // the fake's reclaim delay
    expect([vm.requested, vm.plugged]).toEqual([0, 0]);
  });

  it('evicts idle instances for queued invocations when the budget is tight, and counts them', async () => {
    const { controller, summary } = await run('hotmem', GiB);
    expect(summary).toMatchObject({ failed: 0, strandedScaleDowns: 0 });
    expect(summary.evictions).toBeGreaterThan(0);
    expect(summary.evictions).toBe(
      controller.metrics.scaleDowns.filter((s) => s.reason === 'evicted').length,
    );
  });

  it('gives both modes the same traffic; only stock skips the reclaim', async () => {
    const hotmem = await run('hotmem');
    const stock = await run('stock');
    expect(stock.summary.invocations).toBe(hotmem.summary.invocations);
    expect(stock.summary.coldStarts).toBe(hotmem.summary.coldStarts);
    expect(stock.summary.reclaimMs).toBeNull();
    const arrivals = (metrics: ControllerMetrics) =>
      [...metrics.invocations]
        .sort((x, y) => x.id - y.id)
        .map((i) => [i.functionName, i.arrivalMs, i.memoryBytes]);
    expect(arrivals(stock.controller.metrics)).toEqual(arrivals(hotmem.controller.metrics));
  });

  it('stock on ZONE_NORMAL: answers every invocation and ends, late unplugs and all', async () => {
    // Each exited instance leaves 4 MiB unmovable for 60 s: unplugs stall until virtio-mem's
    // retry timer, or a new request, finds them freed.
    const { vm, trace, controller, summary } = await run('stock', GiB, {
      onlining: 'kernel',
      leftOnExit: { bytes: 4 * MiB, forMs: 60_000 },
    });
    expect(summary.invocations).toBe(trace.invocations.length);
    expect(summary.failed).toBe(0);
    expect(summary.lateUnplugs + summary.strandedUnplugs).toBeGreaterThan(0);
    const late = controller.metrics.scaleDowns.filter((s) => s.unplugLate);
    expect(summary.lateUnplugs + summary.strandedUnplugs).toBe(late.length);
    expect(summary.strandedScaleDowns).toBeGreaterThanOrEqual(summary.strandedUnplugs);
    for (const sample of controller.metrics.memory) {
      expect(sample.requestedBytes).toBeLessThanOrEqual(GiB);
      expect(sample.pluggedBytes).toBeLessThanOrEqual(GiB);
    }
    expect(vm.plugged).toBeLessThanOrEqual(GiB);
  });
});

describe('summarize', () => {
  it('integrates memory as a step function and takes nearest-rank percentiles', () => {
    const metrics: ControllerMetrics = {
      invocations: [10, 20, 30, 40].map((latency, id) => ({
        id,
        functionName: 'f',
        memoryBytes: 128 * MiB,
        arrivalMs: 0,
        queueWaitMs: id,
        start: id === 0 ? 'cold' : 'warm',
        coldStartMs: 0,
        plugWaitMs: 0,
        serviceMs: latency,
        completionMs: latency,
        error: null,
      })),
      scaleDowns: (['evicted', 'keep-alive'] as const).map((reason, i) => ({
        instanceId: `i-${i}`,
        functionName: 'f',
        bytes: 128 * MiB,
        reason,
        startedMs: 40,
        stopMs: 1,
        reclaimMs: null,
        reclaimKernelMs: null,
        unplugMs: 2,
        unplugLate: false,
        completedMs: 43,
        outcome: 'unplugged',
        errors: [],
      })),
      memory: [
        { timeMs: 0, requestedBytes: 0, pluggedBytes: 0, usedBytes: 0 },
        { timeMs: 10, requestedBytes: 100, pluggedBytes: 100, usedBytes: 50 },
        { timeMs: 30, requestedBytes: 0, pluggedBytes: 0, usedBytes: 0 },
      ],
    };
    const summary = summarize(metrics, 100);
    expect(summary.pluggedByteMs).toBe(100 * 20);
    expect(summary.usedByteMs).toBe(50 * 20);
    expect(summary.latencyMs).toEqual({ count: 4, p50: 20, p99: 40, max: 40 });
    expect(summary.coldStarts).toBe(1);
    expect(summary.evictions).toBe(1);
    expect(summary.reclaimMs).toBeNull();
    expect([summary.lateUnplugs, summary.strandedUnplugs]).toEqual([0, 0]);
    // One unplug late but done, one never done; a record saved before unplugLate counts neither.
    const [first, second] = metrics.scaleDowns;
    if (!first || !second) throw new Error('two scale-downs');
    first.unplugLate = true;
    Object.assign(second, { unplugLate: true, outcome: 'stranded', unplugMs: null });
    const saved = { ...first } as Partial<typeof first>;
    delete saved.unplugLate;
    metrics.scaleDowns.push(saved as typeof first);
    expect(summarize(metrics, 100)).toMatchObject({
      lateUnplugs: 1,
      strandedUnplugs: 1,
      strandedScaleDowns: 1,
      unplugMs: { count: 2 },
    });
  });
});
