/**
 * Replays a trace through a controller: each invocation is submitted at its arrival time on the
 * controller's clock; once all have completed the controller is closed (every instance scaled
 * down) and its metrics are summarised, so HotMem and stock runs of one trace compare directly.
 */
import type {
  Controller,
  ControllerMetrics,
  MemorySample,
  ScaleDownRecord,
} from './controller/controller.js';
import type { Clock } from './controller/ports.js';
import type { Trace } from './trace/trace.js';

export interface ReplaySummary {
  invocations: number;
  failed: number;
  coldStarts: number;
  /** Idle instances scaled down before their keep-alive expired, for a queued invocation. */
  evictions: number;
  /** Milliseconds, over invocations that completed without error. */
  latencyMs: Percentiles;
  queueWaitMs: Percentiles;
  /** Over scale-downs that unplugged (late ones included); reclaim is null in stock mode. */
  reclaimMs: Percentiles | null;
  unplugMs: Percentiles;
  /** Stranded when the controller closed, for whatever reason (late unplugs included). */
  strandedScaleDowns: number;
  /** Unplugs not done within the controller's unplugTimeoutMs but done by the end. */
  lateUnplugs: number;
  /** Unplugs not done when the controller closed: memory the device still held then. */
  strandedUnplugs: number;
  /** Byte-milliseconds: the area under each memory curve over the run. */
  pluggedByteMs: number;
  usedByteMs: number;
}

export interface Percentiles {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** Submits each invocation `atMs` after this call, on `clock`; resolves once all are done. */
export async function replay(
  trace: Trace,
  controller: Pick<Controller, 'submit' | 'close' | 'metrics'>,
  clock: Clock,
): Promise<ReplaySummary> {
  const submitted = trace.invocations.map(
    (invocation) =>
      new Promise<void>((resolve) => {
        clock.setTimeout(() => {
          const { functionName, durationMs, memoryBytes } = invocation;
          void controller.submit({ functionName, durationMs, memoryBytes }).then(() => resolve());
        }, invocation.atMs);
      }),
  );
  await Promise.all(submitted);
  await controller.close();
  return summarize(controller.metrics, clock.now());
}

/** Summarises a run's metrics; `endMs` closes the memory curves. */
export function summarize(metrics: ControllerMetrics, endMs: number): ReplaySummary {
  const completed = metrics.invocations.filter((i) => i.error === null);
  const unplugged = metrics.scaleDowns.filter((s) => s.outcome === 'unplugged');
  const reclaims = unplugged.flatMap((s) => (s.reclaimMs === null ? [] : [s.reclaimMs]));
  return {
    invocations: metrics.invocations.length,
    failed: metrics.invocations.length - completed.length,
    coldStarts: metrics.invocations.filter((i) => i.start === 'cold' && i.error === null).length,
    latencyMs: percentiles(completed.map((i) => i.completionMs - i.arrivalMs)),
    queueWaitMs: percentiles(completed.map((i) => i.queueWaitMs)),
    reclaimMs: reclaims.length > 0 ? percentiles(reclaims) : null,
    unplugMs: percentiles(unplugged.map((s) => s.unplugMs ?? 0)),
    ...scaleDownCounts(metrics.scaleDowns),
    pluggedByteMs: memoryArea(metrics.memory, 'pluggedBytes', -Infinity, endMs),
    usedByteMs: memoryArea(metrics.memory, 'usedBytes', -Infinity, endMs),
  };
}

/**
 * Counts over a run's scale-down records. Records saved before a field existed count none: a
 * scale-down without a reason was never an eviction, one without unplugLate never late.
 */
export function scaleDownCounts(
  scaleDowns: readonly ScaleDownRecord[],
): Pick<ReplaySummary, 'evictions' | 'strandedScaleDowns' | 'lateUnplugs' | 'strandedUnplugs'> {
  return {
    evictions: scaleDowns.filter((s) => s.reason === 'evicted').length,
    strandedScaleDowns: scaleDowns.filter((s) => s.outcome === 'stranded').length,
    lateUnplugs: scaleDowns.filter((s) => s.unplugLate === true && s.outcome === 'unplugged')
      .length,
    strandedUnplugs: scaleDowns.filter((s) => s.unplugLate === true && s.outcome !== 'unplugged')
      .length,
  };
}

/** The nearest-rank percentile `p` of values sorted ascending; undefined for none. */
function nearestRank(sorted: number[], p: number): number | undefined {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Nearest-rank percentile; NaN for no values. */
export function percentile(values: number[], p: number): number {
  return (
    nearestRank(
      [...values].sort((a, b) => a - b),
      p,
    ) ?? Number.NaN
  );
}

/** Nearest-rank percentiles; all zero for no values. */
function percentiles(values: number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => nearestRank(sorted, p) ?? 0;
  return { count: sorted.length, p50: rank(50), p99: rank(99), max: sorted.at(-1) ?? 0 };
}

/**
 * Byte-milliseconds under a memory curve between two times: each sample's value holds until
 * the next sample (a step function), the last until `toMs`.
 */
export function memoryArea(
  samples: MemorySample[],
  field: 'pluggedBytes' | 'usedBytes',
  fromMs: number,
  toMs: number,
): number {
  let total = 0;
  samples.forEach((sample, i) => {
    const start = Math.max(sample.timeMs, fromMs);
    const end = Math.min(samples[i + 1]?.timeMs ?? toMs, toMs);
    if (end > start) total += sample[field] * (end - start);
  });
  return total;
}
