/**
 * A seeded synthetic trace in the image of the Azure Functions 2019 trace, for replays when the
 * real data is not at hand. Per function, drawn once: a mean rate (log-uniform between the
 * bounds: a few functions are hot, most are cold), a mean duration (log-normal, μ = −0.38,
 * σ = 2.36 on seconds) and a memory size (Burr XII, c = 11.652, k = 0.221, λ = 107.083 MB), the
 * fits Shahrad et al. report in "Serverless in the Wild" (USENIX ATC'20, §3) — taken from our
 * reading of the paper; check them there before quoting results. Each invocation's duration
 * varies ±50% around its function's mean.
 *
 * Shapes, both with the same mean rate per function:
 * - steady: Poisson arrivals;
 * - bursty: each function alternates between on periods (rate / onFraction) and off periods (no
 *   arrivals), of exponential lengths averaging onFraction·period and (1 − onFraction)·period.
 */
import { z } from 'zod';
import { seededRandom } from '../../seeded-random.js';
import { MiB, type Trace, type TraceInvocation } from './trace.js';

export const generatorOptionsSchema = z
  .object({
    seed: z.number().int().min(0).max(0xffffffff),
    shape: z.enum(['steady', 'bursty']),
    functions: z.number().int().min(1).max(10_000),
    /** Trace time, before compression. */
    minutes: z.number().positive().max(1440),
    compression: z.number().positive().default(1),
    ratePerMinute: z
      .object({ min: z.number().positive(), max: z.number().positive() })
      .strict()
      .refine((rate) => rate.min <= rate.max, 'min must not exceed max')
      .default({ min: 0.1, max: 60 }),
    /** Bursty shape: share of time a function is on, and the mean on + off cycle. */
    onFraction: z.number().gt(0).max(1).default(0.1),
    periodMinutes: z.number().positive().default(10),
    /** Bounds that keep a replay within the test bed: durations and sizes are clamped. */
    maxDurationMs: z.number().positive().default(60_000),
    memoryMiB: z
      .object({ min: z.number().int().min(4), max: z.number().int().min(4) })
      .strict()
      .refine((memory) => memory.min <= memory.max, 'min must not exceed max')
      .default({ min: 128, max: 1024 }),
  })
  .strict();

export type GeneratorOptions = z.input<typeof generatorOptionsSchema>;

export function generateTrace(options: GeneratorOptions): Trace {
  const parsed = generatorOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TypeError(`trace generator: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const o = parsed.data;
  const random = seededRandom(o.seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const exponential = (mean: number) => -Math.log(1 - random()) * mean;
  const traceMs = o.minutes * 60_000;
  const invocations: TraceInvocation[] = [];

  for (let f = 0; f < o.functions; f++) {
    const functionName = `fn-${String(f).padStart(4, '0')}`;
    const { min, max } = o.ratePerMinute;
    const ratePerMs = (min * (max / min) ** random()) / 60_000;
    const meanDurationMs = Math.min(o.maxDurationMs, Math.exp(-0.38 + 2.36 * normal()) * 1000);
    const burrMb = 107.083 * ((1 - random()) ** (-1 / 0.221) - 1) ** (1 / 11.652);
    const memoryMiB = Math.min(o.memoryMiB.max, Math.max(o.memoryMiB.min, Math.ceil(burrMb)));
    const push = (atTraceMs: number) =>
      invocations.push({
        atMs: atTraceMs / o.compression,
        functionName,
        durationMs: Math.min(o.maxDurationMs, meanDurationMs * (0.5 + random())),
        memoryBytes: memoryMiB * MiB,
      });

    if (o.shape === 'steady') {
      for (let t = exponential(1 / ratePerMs); t < traceMs; t += exponential(1 / ratePerMs)) {
        push(t);
      }
      continue;
    }
    const periodMs = o.periodMinutes * 60_000;
    const onRate = ratePerMs / o.onFraction;
    // Start in either state, in proportion to the time spent in it.
    let on = random() < o.onFraction;
    for (let start = 0; start < traceMs; ) {
      const length = exponential((on ? o.onFraction : 1 - o.onFraction) * periodMs);
      const end = Math.min(traceMs, start + length);
      if (on) {
        for (let t = start + exponential(1 / onRate); t < end; t += exponential(1 / onRate)) {
          push(t);
        }
      }
      start = end;
      on = !on;
    }
  }
  invocations.sort((a, b) => a.atMs - b.atMs || a.functionName.localeCompare(b.functionName));
  return {
    source: `generated ${JSON.stringify(o)}`,
    compression: o.compression,
    invocations,
  };
}
