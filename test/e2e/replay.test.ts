// A short bursty trace replayed end to end in a real guest on the patched 6.12 kernel, in stock
// mode and then in HotMem mode on the same booted VM, same trace, same budget: the host
// controller plugs memory over QMP, the agent starts function instances and relays every
// invocation to them, keep-alive expiry or eviction scales them down. Every invocation must be
// answered, the device must end at its floor, and HotMem's reclaims must migrate no page.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReplaySummary } from '../../lib/host/replay.js';
import { generateTrace } from '../../lib/host/trace/generate.js';
import {
  type ModeRun,
  REPLAY_AGENT_PORT,
  replayInGuest,
} from '../../scripts/testbed/replay-guest.js';
import type { ReplayMode } from '../../scripts/testbed/replay-modes.js';
import {
  bootGuest,
  buildHotMemKernel,
  type Guest,
  HOTMEM_V6_12,
  hotMemKernels,
  kernelSuiteTitle,
} from '../../scripts/testbed/testbed.js';
import { GiB, MiB } from '../../scripts/testbed/vm.js';

const kernel = hotMemKernels().find((k) => k.name === HOTMEM_V6_12.name) ?? HOTMEM_V6_12;

// 10 trace minutes in 60 s: four functions of 128–256 MiB, on/off bursts.
const trace = generateTrace({
  seed: 7,
  shape: 'bursty',
  functions: 4,
  minutes: 10,
  compression: 10,
  ratePerMinute: { min: 3, max: 12 },
  maxDurationMs: 1_500,
  memoryMiB: { min: 128, max: 256 },
  onFraction: 0.3,
  periodMinutes: 4,
});

const line = (mode: ReplayMode, s: ReplaySummary, run: ModeRun) =>
  `${mode}: ${s.invocations} invocations (${s.failed} failed, ${s.coldStarts} cold), latency p50 ${s.latencyMs.p50.toFixed(0)} ms p99 ${s.latencyMs.p99.toFixed(0)} ms, ` +
  `queue p99 ${s.queueWaitMs.p99.toFixed(0)} ms, reclaim p50 ${s.reclaimMs?.p50.toFixed(1) ?? '-'} ms, unplug p50 ${s.unplugMs.p50.toFixed(0)} ms p99 ${s.unplugMs.p99.toFixed(0)} ms, ` +
  `${run.pagesMigrated} pages migrated, ${s.strandedScaleDowns} stranded, wall ${(run.wallMs / 1000).toFixed(0)} s`;

describe.skipIf(kernel.unavailable !== undefined)(
  kernelSuiteTitle('trace replay through the host controller', kernel),
  () => {
    let g: Guest;
    const runs = new Map<ReplayMode, ModeRun>();

    beforeAll(async () => {
      g = await bootGuest(await buildHotMemKernel(kernel), {
        hotplugRegion: 2 * GiB,
        guestPorts: [7070, REPLAY_AGENT_PORT],
      });
    });

    afterAll(async () => {
      await g?.stop();
      if (g) expect(g.vm.kernelProblems()).toEqual([]);
    });

    for (const mode of ['stock', 'hotmem'] as const) {
      it(`replays ${trace.invocations.length} invocations in ${mode} mode and gives all memory back`, async () => {
        const run = await replayInGuest(g, trace, mode, {
          function: 'native',
          controller: {
            budgetBytes: 1 * GiB,
            keepAliveMs: 3_000,
            reclaimTimeoutMs: 30_000,
            resizeTimeoutMs: 120_000,
            plugTimeoutMs: 120_000,
          },
        });
        runs.set(mode, run);
        console.log(line(mode, run.summary, run));
        const failures = run.metrics.invocations.filter((i) => i.error !== null);
        expect(failures.map((i) => i.error)).toEqual([]);
        expect(run.summary.invocations).toBe(trace.invocations.length);
        expect(run.summary.strandedScaleDowns).toBe(0);
        // Keep-alive expired during the run, not only at the end.
        expect(run.metrics.scaleDowns.length).toBeGreaterThan(run.summary.coldStarts / 2);
        expect(run.pluggedAfterBytes).toBe(run.pluggedBeforeBytes);
        // The guest's kernel workers were read before and after: they plugged and unplugged.
        expect(run.kernelWorkerCpuMs).toBeGreaterThan(0);
        if (mode === 'hotmem') {
          expect(run.pagesMigrated).toBe(0);
          expect(run.summary.reclaimMs?.count).toBe(run.metrics.scaleDowns.length);
          // Each reclaim's kernel time, from the report its partition-reclaimed event carried.
          for (const scaleDown of run.metrics.scaleDowns)
            expect(scaleDown.reclaimKernelMs).toBeGreaterThan(0);
        }
      });
    }

    it('used no more memory than the budget in either mode', () => {
      for (const run of runs.values()) {
        const peak = Math.max(...run.metrics.memory.map((m) => m.requestedBytes));
        expect(peak).toBeLessThanOrEqual(1 * GiB);
        expect(peak).toBeGreaterThanOrEqual(128 * MiB);
      }
    });
  },
);
