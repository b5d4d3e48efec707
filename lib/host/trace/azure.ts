/**
 * Reads the Azure Functions 2019 trace (Azure Public Dataset, CC-BY 4.0; Shahrad et al.,
 * "Serverless in the Wild", USENIX ATC'20) and turns a window of it into a replay trace. Any
 * excerpt of the data kept with a run must carry that attribution.
 *
 * Files, one day each (dNN):
 * - invocations_per_function_md.anon.dNN.csv: HashOwner, HashApp, HashFunction, Trigger, 1..1440
 *   (invocations in each minute of the day);
 * - function_durations_percentiles.anon.dNN.csv: HashOwner, HashApp, HashFunction, Average,
 *   Count, Minimum, Maximum, percentile_Average_{0,1,25,50,75,99,100} (ms);
 * - app_memory_percentiles.anon.dNN.csv: HashOwner, HashApp, SampleCount, AverageAllocatedMb,
 *   AverageAllocatedMb_pct{1,5,25,50,75,95,99,100}.
 *
 * Every error names the file, the row (1 = the header) and the column.
 */
import { z } from 'zod';
import { seededRandom } from '../../seeded-random.js';
import { MiB, type Trace, type TraceInvocation } from './trace.js';

const MINUTES_PER_DAY = 1440;
const DURATION_PERCENTILES = [0, 1, 25, 50, 75, 99, 100] as const;
const MEMORY_PERCENTILES = [1, 5, 25, 50, 75, 95, 99, 100] as const;

const hash = z.string().regex(/^[0-9a-f]+$/i, 'expected a hexadecimal hash');
const count = z.coerce.number().int('expected an integer').nonnegative('expected a count ≥ 0');
const measure = z.coerce.number().nonnegative('expected a number ≥ 0');

const invocationsColumns = [
  'HashOwner',
  'HashApp',
  'HashFunction',
  'Trigger',
  ...Array.from({ length: MINUTES_PER_DAY }, (_, i) => String(i + 1)),
];
const durationsColumns = [
  'HashOwner',
  'HashApp',
  'HashFunction',
  'Average',
  'Count',
  'Minimum',
  'Maximum',
  ...DURATION_PERCENTILES.map((p) => `percentile_Average_${p}`),
];
const memoryColumns = [
  'HashOwner',
  'HashApp',
  'SampleCount',
  'AverageAllocatedMb',
  ...MEMORY_PERCENTILES.map((p) => `AverageAllocatedMb_pct${p}`),
];

const columnSchemas: Record<string, z.ZodTypeAny> = {
  HashOwner: hash,
  HashApp: hash,
  HashFunction: hash,
  Trigger: z.string().min(1, 'expected a trigger name'),
  Count: count,
  SampleCount: count,
};

export interface FunctionInvocations {
  owner: string;
  app: string;
  function: string;
  trigger: string;
  /** Invocations in each minute of the day, 1440 entries. */
  perMinute: number[];
}

export interface FunctionDurations {
  owner: string;
  app: string;
  function: string;
  /** Milliseconds at percentiles 0, 1, 25, 50, 75, 99, 100. */
  percentilesMs: number[];
}

export interface AppMemory {
  owner: string;
  app: string;
  /** Allocated MB at percentiles 1, 5, 25, 50, 75, 95, 99, 100. */
  percentilesMb: number[];
}

/** Splits a CSV file with the expected header into validated rows of strings and numbers. */
function readCsv(text: string, source: string, columns: string[]): Array<Record<string, unknown>> {
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines.at(-1) === '') lines.pop();
  const header = (lines[0] ?? '').split(',');
  for (let i = 0; i < columns.length; i++) {
    if (header[i] !== columns[i]) {
      throw new TypeError(
        `${source}: row 1: column ${i + 1}: expected header '${columns[i]}', found '${header[i] ?? ''}'`,
      );
    }
  }
  if (header.length !== columns.length) {
    throw new TypeError(
      `${source}: row 1: expected ${columns.length} columns, found ${header.length}`,
    );
  }
  return lines.slice(1).map((line, index) => {
    const row = index + 2;
    const cells = line.split(',');
    if (cells.length !== columns.length) {
      throw new TypeError(
        `${source}: row ${row}: expected ${columns.length} columns, found ${cells.length}`,
      );
    }
    const record: Record<string, unknown> = {};
    cells.forEach((cell, i) => {
      const column = columns[i] as string;
      const schema = columnSchemas[column] ?? (/^\d+$/.test(column) ? count : measure);
      // An empty cell would coerce to 0: refuse it instead.
      const parsed = cell === '' ? undefined : schema.safeParse(cell);
      if (!parsed?.success) {
        const message = parsed?.error.issues[0]?.message ?? 'empty';
        throw new TypeError(`${source}: row ${row}: column ${column}: ${message} (got '${cell}')`);
      }
      record[column] = parsed.data;
    });
    return record;
  });
}

export function parseInvocationsPerFunction(text: string, source: string): FunctionInvocations[] {
  return readCsv(text, source, invocationsColumns).map((r) => ({
    owner: r.HashOwner as string,
    app: r.HashApp as string,
    function: r.HashFunction as string,
    trigger: r.Trigger as string,
    perMinute: invocationsColumns.slice(4).map((minute) => r[minute] as number),
  }));
}

export function parseFunctionDurations(text: string, source: string): FunctionDurations[] {
  return readCsv(text, source, durationsColumns).map((r, index) => {
    const percentilesMs = DURATION_PERCENTILES.map((p) => r[`percentile_Average_${p}`] as number);
    assertAscending(percentilesMs, `${source}: row ${index + 2}: percentile_Average_*`);
    return {
      owner: r.HashOwner as string,
      app: r.HashApp as string,
      function: r.HashFunction as string,
      percentilesMs,
    };
  });
}

export function parseAppMemory(text: string, source: string): AppMemory[] {
  return readCsv(text, source, memoryColumns).map((r, index) => {
    const percentilesMb = MEMORY_PERCENTILES.map((p) => r[`AverageAllocatedMb_pct${p}`] as number);
    assertAscending(percentilesMb, `${source}: row ${index + 2}: AverageAllocatedMb_pct*`);
    return { owner: r.HashOwner as string, app: r.HashApp as string, percentilesMb };
  });
}

function assertAscending(values: number[], where: string): void {
  for (let i = 1; i < values.length; i++) {
    if ((values[i] ?? 0) < (values[i - 1] ?? 0)) {
      throw new TypeError(`${where}: percentiles must not decrease (${values.join(', ')})`);
    }
  }
}

export const azureWindowSchema = z
  .object({
    seed: z.number().int().min(0).max(0xffffffff),
    /** First minute of the day to replay (0-based) and how many. */
    startMinute: z
      .number()
      .int()
      .min(0)
      .max(MINUTES_PER_DAY - 1),
    minutes: z.number().int().min(1).max(MINUTES_PER_DAY),
    compression: z.number().positive().default(1),
    /** Keep the busiest functions only (by invocations in the window). */
    maxFunctions: z.number().int().positive().optional(),
    maxDurationMs: z.number().positive().default(60_000),
  })
  .strict()
  .refine((w) => w.startMinute + w.minutes <= MINUTES_PER_DAY, {
    message: 'the window ends after the day',
    path: ['minutes'],
  });

export type AzureWindow = z.input<typeof azureWindowSchema>;

/**
 * A replay of `minutes` minutes of the day: each minute's invocations at uniform random moments
 * within it, durations drawn between the function's duration percentiles, memory at the app's
 * 99th allocated percentile (an instance sized so it is rarely short). Functions with no
 * duration or memory row are left out and counted.
 */
export function traceFromAzure(
  data: { invocations: FunctionInvocations[]; durations: FunctionDurations[]; memory: AppMemory[] },
  window: AzureWindow,
): { trace: Trace; skippedFunctions: number } {
  const parsed = azureWindowSchema.safeParse(window);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TypeError(`azure window: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const w = parsed.data;
  const random = seededRandom(w.seed);
  const durations = new Map(data.durations.map((d) => [`${d.owner}/${d.app}/${d.function}`, d]));
  const memory = new Map(data.memory.map((m) => [`${m.owner}/${m.app}`, m]));
  const inWindow = (f: FunctionInvocations) =>
    f.perMinute.slice(w.startMinute, w.startMinute + w.minutes);
  const total = (f: FunctionInvocations) => inWindow(f).reduce((sum, n) => sum + n, 0);

  let skippedFunctions = 0;
  const usable = data.invocations.filter((f) => {
    const known =
      durations.has(`${f.owner}/${f.app}/${f.function}`) && memory.has(`${f.owner}/${f.app}`);
    if (!known) skippedFunctions += 1;
    return known && total(f) > 0;
  });
  usable.sort((a, b) => total(b) - total(a));
  const chosen = usable.slice(0, w.maxFunctions ?? usable.length);

  const invocations: TraceInvocation[] = [];
  for (const f of chosen) {
    const { percentilesMs } = durations.get(
      `${f.owner}/${f.app}/${f.function}`,
    ) as FunctionDurations;
    const { percentilesMb } = memory.get(`${f.owner}/${f.app}`) as AppMemory;
    const memoryBytes = Math.max(4, Math.ceil(percentilesMb[6] ?? 0)) * MiB;
    const functionName = `az-${f.function.slice(0, 16)}`;
    inWindow(f).forEach((n, minute) => {
      for (let i = 0; i < n; i++) {
        invocations.push({
          atMs: ((minute + random()) * 60_000) / w.compression,
          functionName,
          durationMs: Math.min(w.maxDurationMs, betweenPercentiles(percentilesMs, random())),
          memoryBytes,
        });
      }
    });
  }
  invocations.sort((a, b) => a.atMs - b.atMs || a.functionName.localeCompare(b.functionName));
  return {
    trace: {
      source: `azure-functions-2019 minutes ${w.startMinute}..${w.startMinute + w.minutes - 1} seed ${w.seed}`,
      compression: w.compression,
      invocations,
    },
    skippedFunctions,
  };
}

/** Inverse CDF, linear between the percentiles 0, 1, 25, 50, 75, 99, 100. */
function betweenPercentiles(values: number[], u: number): number {
  const at = DURATION_PERCENTILES.map((p) => p / 100);
  for (let i = 1; i < at.length; i++) {
    const hi = at[i] as number;
    if (u <= hi) {
      const lo = at[i - 1] as number;
      const from = values[i - 1] as number;
      const to = values[i] as number;
      return from + ((to - from) * (u - lo)) / (hi - lo);
    }
  }
  return values.at(-1) as number;
}
