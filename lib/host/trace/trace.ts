/**
 * A replay trace: invocations in arrival order, each with the function it calls, how long it
 * runs and how much memory its instance needs. Generators (generate.ts) and readers of public
 * traces (azure.ts) produce it; a replay feeds it to the controller.
 */
import { z } from 'zod';

export const traceInvocationSchema = z
  .object({
    /** From the start of the replay, after time compression. */
    atMs: z.number().nonnegative(),
    functionName: z.string().min(1),
    durationMs: z.number().nonnegative(),
    memoryBytes: z.number().int().positive(),
  })
  .strict();

export const traceSchema = z
  .object({
    /** Where it came from: generator options or source files, for the run's record. */
    source: z.string().min(1),
    /** Trace time per replay time: 60 makes a trace minute last one second. */
    compression: z.number().positive(),
    invocations: z.array(traceInvocationSchema),
  })
  .strict()
  .superRefine((trace, context) => {
    for (let i = 1; i < trace.invocations.length; i++) {
      if ((trace.invocations[i]?.atMs ?? 0) < (trace.invocations[i - 1]?.atMs ?? 0)) {
        context.addIssue({
          code: 'custom',
          path: ['invocations', i, 'atMs'],
          message: 'invocations must be in arrival order',
        });
        return;
      }
    }
  });

export type TraceInvocation = z.infer<typeof traceInvocationSchema>;
export type Trace = z.infer<typeof traceSchema>;

/** Parses a trace read from JSON; the error names the first bad path. */
export function parseTrace(value: unknown, source: string): Trace {
  const parsed = traceSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TypeError(`${source}: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  return parsed.data;
}

export const MiB = 2 ** 20;
