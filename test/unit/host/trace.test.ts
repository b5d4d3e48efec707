// Trace generation and the Azure Functions 2019 reader. The CSV rows below are SYNTHETIC, made
// up in the Azure format for these tests; they are not from the Azure Public Dataset.
import { describe, expect, it } from 'vitest';
import {
  parseAppMemory,
  parseFunctionDurations,
  parseInvocationsPerFunction,
  traceFromAzure,
} from '../../../lib/host/trace/azure.js';
import { generateTrace } from '../../../lib/host/trace/generate.js';
import { parseTrace, type Trace } from '../../../lib/host/trace/trace.js';

const MiB = 2 ** 20;
const minutesHeader = Array.from({ length: 1440 }, (_, i) => i + 1).join(',');
const invocationsHeader = `HashOwner,HashApp,HashFunction,Trigger,${minutesHeader}`;
const durationsHeader =
  'HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,' +
  'percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,' +
  'percentile_Average_99,percentile_Average_100';
const memoryHeader =
  'HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,' +
  'AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,' +
  'AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,' +
  'AverageAllocatedMb_pct100';

/** Minute counts: `counts` from minute 1 on, zero after. */
function minutes(counts: number[]): string {
  return Array.from({ length: 1440 }, (_, i) => counts[i] ?? 0).join(',');
}

const synthetic = {
  invocations: [
    invocationsHeader,
    `aa01,bb01,cc01,http,${minutes([3, 0, 2])}`,
    `aa01,bb01,cc02,timer,${minutes([1, 1, 1])}`,
    `aa02,bb02,cc03,queue,${minutes([5])}`, // no duration row: skipped
  ].join('\n'),
  durations: [
    durationsHeader,
    'aa01,bb01,cc01,120,5,10,900,10,12,60,100,150,800,900',
    'aa01,bb01,cc02,30,3,20,40,20,20,25,30,35,40,40',
  ].join('\n'),
  memory: [memoryHeader, 'aa01,bb01,40,150,100,110,130,150,170,190,200,210'].join('\n'),
};

function readSynthetic() {
  return {
    invocations: parseInvocationsPerFunction(synthetic.invocations, 'inv.csv'),
    durations: parseFunctionDurations(synthetic.durations, 'dur.csv'),
    memory: parseAppMemory(synthetic.memory, 'mem.csv'),
  };
}

function perMinuteCounts(trace: Trace, minutesLong: number): number[] {
  const counts = new Array<number>(minutesLong).fill(0);
  for (const { atMs } of trace.invocations) {
    const minute = Math.floor((atMs * trace.compression) / 60_000);
    counts[minute] = (counts[minute] ?? 0) + 1;
  }
  return counts;
}

describe('generateTrace', () => {
  const base = { seed: 7, functions: 20, minutes: 60 } as const;

  it('gives the same trace for the same seed, another for another seed', () => {
    const a = generateTrace({ ...base, shape: 'bursty' });
    expect(generateTrace({ ...base, shape: 'bursty' })).toEqual(a);
    expect(generateTrace({ ...base, seed: 8, shape: 'bursty' }).invocations).not.toEqual(
      a.invocations,
    );
  });

  it('produces valid traces: in arrival order, sizes and durations within bounds', () => {
    for (const shape of ['steady', 'bursty'] as const) {
      const trace = generateTrace({ ...base, shape, memoryMiB: { min: 128, max: 512 } });
      expect(parseTrace(trace, shape)).toEqual(trace);
      expect(trace.invocations.length).toBeGreaterThan(100);
      const sizes = trace.invocations.map((i) => i.memoryBytes);
      expect(Math.min(...sizes)).toBeGreaterThanOrEqual(128 * MiB);
      expect(Math.max(...sizes)).toBeLessThanOrEqual(512 * MiB);
      expect(Math.max(...trace.invocations.map((i) => i.durationMs))).toBeLessThanOrEqual(60_000);
    }
  });

  it('makes the bursty shape burstier than the steady one at a similar volume', () => {
    const dispersion = (counts: number[]) => {
      const mean = counts.reduce((s, n) => s + n, 0) / counts.length;
      const variance = counts.reduce((s, n) => s + (n - mean) ** 2, 0) / counts.length;
      return { mean, index: variance / mean };
    };
    const steady = dispersion(perMinuteCounts(generateTrace({ ...base, shape: 'steady' }), 60));
    const bursty = dispersion(perMinuteCounts(generateTrace({ ...base, shape: 'bursty' }), 60));
    expect(bursty.mean / steady.mean).toBeGreaterThan(0.5);
    expect(bursty.mean / steady.mean).toBeLessThan(2);
    expect(bursty.index).toBeGreaterThan(3 * steady.index);
  });

  it('compresses arrival times, not durations', () => {
    const plain = generateTrace({ ...base, shape: 'steady' });
    const fast = generateTrace({ ...base, shape: 'steady', compression: 60 });
    expect(fast.invocations.length).toBe(plain.invocations.length);
    fast.invocations.forEach((invocation, i) => {
      expect(invocation.atMs).toBeCloseTo((plain.invocations[i]?.atMs ?? 0) / 60, 6);
      expect(invocation.durationMs).toBe(plain.invocations[i]?.durationMs);
    });
  });

  it('names the option that is wrong', () => {
    expect(() => generateTrace({ ...base, shape: 'steady', compression: 0 })).toThrow(
      /^trace generator: compression: /,
    );
  });
});

describe('Azure Functions 2019 reader', () => {
  it('reads the three files', () => {
    const { invocations, durations, memory } = readSynthetic();
    expect(invocations).toHaveLength(3);
    expect(invocations[0]).toMatchObject({ function: 'cc01', trigger: 'http' });
    expect(invocations[0]?.perMinute.slice(0, 4)).toEqual([3, 0, 2, 0]);
    expect(durations[0]?.percentilesMs).toEqual([10, 12, 60, 100, 150, 800, 900]);
    expect(memory[0]?.percentilesMb).toEqual([100, 110, 130, 150, 170, 190, 200, 210]);
  });

  it('names the row and column of a malformed cell', () => {
    const bad = (row: string) =>
      `${invocationsHeader}\naa01,bb01,cc01,http,${minutes([1])}\n${row}`;
    expect(() =>
      parseInvocationsPerFunction(bad(`aa01,bb01,cc02,http,${minutes([1.5])}`), 'inv.csv'),
    ).toThrow("inv.csv: row 3: column 1: expected an integer (got '1.5')");
    expect(() =>
      parseInvocationsPerFunction(bad(`aa01,zz,cc02,http,${minutes([])}`), 'inv.csv'),
    ).toThrow("inv.csv: row 3: column HashApp: expected a hexadecimal hash (got 'zz')");
    expect(() => parseInvocationsPerFunction(bad('aa01,bb01,cc02,http,1,2'), 'inv.csv')).toThrow(
      'inv.csv: row 3: expected 1444 columns, found 6',
    );
    expect(() =>
      parseInvocationsPerFunction(bad(`aa01,bb01,cc02,http,,${minutes([]).slice(2)}`), 'inv.csv'),
    ).toThrow("inv.csv: row 3: column 1: empty (got '')");
  });

  it('refuses a wrong header and percentiles that decrease', () => {
    expect(() => parseAppMemory('HashOwner,App\n', 'mem.csv')).toThrow(
      "mem.csv: row 1: column 2: expected header 'HashApp', found 'App'",
    );
    const decreasing = `${durationsHeader}\naa01,bb01,cc01,1,1,1,1,10,9,60,100,150,800,900`;
    expect(() => parseFunctionDurations(decreasing, 'dur.csv')).toThrow(
      /^dur\.csv: row 2: percentile_Average_\*: percentiles must not decrease/,
    );
  });

  it('turns a window into a replay trace with the minute counts kept', () => {
    const { trace, skippedFunctions } = traceFromAzure(readSynthetic(), {
      seed: 1,
      startMinute: 0,
      minutes: 3,
      compression: 60,
    });
    expect(skippedFunctions).toBe(1);
    expect(perMinuteCounts(trace, 3)).toEqual([4, 1, 3]);
    expect(trace.invocations.every((i) => i.memoryBytes === 200 * MiB)).toBe(true);
    const cc02 = trace.invocations.filter((i) => i.functionName === 'az-cc02');
    for (const { durationMs } of cc02) {
      expect(durationMs).toBeGreaterThanOrEqual(20);
      expect(durationMs).toBeLessThanOrEqual(40);
    }
    expect(parseTrace(trace, 'azure')).toEqual(trace);
    expect(
      traceFromAzure(readSynthetic(), { seed: 1, startMinute: 0, minutes: 3 }).trace.invocations,
    ).toHaveLength(8);
  });

  it('refuses a window past the end of the day', () => {
    expect(() =>
      traceFromAzure(readSynthetic(), { seed: 1, startMinute: 1439, minutes: 2 }),
    ).toThrow('azure window: minutes: the window ends after the day');
  });
});
