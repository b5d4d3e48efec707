// Plots of benchmark and replay results: Vega-Lite specs rendered to SVG in Node, so a
// figure is data plus a declarative spec rather than hand-placed SVG elements.
//
// vega 5 / vega-lite 5: the 6.x releases require Node 22, and the project supports Node 20.
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

/** Renders a Vega-Lite spec to a standalone SVG document (no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Every dataset of a spec after its transforms ran, by the names Vega-Lite gave them. */
export async function evaluatedData(spec: TopLevelSpec): Promise<Record<string, unknown[]>> {
  const compiled = compile(spec).spec;
  const view = new View(parse(compiled), { renderer: 'none' });
  try {
    await view.runAsync();
    return Object.fromEntries(
      (compiled.data ?? []).map((dataset) => [dataset.name, view.data(dataset.name)]),
    );
  } finally {
    view.finalize();
  }
}

function requireFinite(what: string, values: Iterable<number>): void {
  for (const value of values) {
    if (!Number.isFinite(value)) throw new RangeError(`${what}: ${value} is not a finite number`);
  }
}

export interface LatencyBySize {
  /** The line this point belongs to, e.g. "stock loaded". */
  series: string;
  sizeMiB: number;
  latencyMs: number;
}

/** Reclamation latency against size, one line per series, latency on a log scale. */
export function latencyBySizeSpec(points: LatencyBySize[], title: string): TopLevelSpec {
  if (points.length === 0) throw new RangeError(`${title}: no points to plot`);
  requireFinite(
    `${title}: latencyMs`,
    points.map((p) => p.latencyMs),
  );
  requireFinite(
    `${title}: sizeMiB`,
    points.map((p) => p.sizeMiB),
  );
  return {
    $schema: SCHEMA,
    title,
    width: 480,
    height: 320,
    background: 'white',
    // A log scale cannot show 0: a reclaim that took no measurable time is drawn at 0.1 ms.
    data: { values: points.map((p) => ({ ...p, latencyMs: Math.max(p.latencyMs, 0.1) })) },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'sizeMiB',
        type: 'ordinal',
        title: 'reclaimed size (MiB)',
        sort: 'ascending',
        axis: { labelAngle: 0 },
      },
      y: {
        field: 'latencyMs',
        type: 'quantitative',
        title: 'reclamation latency (ms, log)',
        scale: { type: 'log' },
      },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}

/** Empirical CDFs of latencies, one line per series, latency on a log scale. */
export function latencyCdfSpec(
  series: Record<string, number[]>,
  title: string,
  axisTitle = 'latency (ms, log)',
): TopLevelSpec {
  const values: { series: string; ms: number }[] = [];
  for (const [name, samples] of Object.entries(series)) {
    if (samples.length === 0) throw new RangeError(`${title}: series "${name}" has no samples`);
    requireFinite(`${title}: series "${name}"`, samples);
    for (const ms of samples) values.push({ series: name, ms: Math.max(ms, 0.1) });
  }
  if (values.length === 0) throw new RangeError(`${title}: no series to plot`);
  return {
    $schema: SCHEMA,
    title,
    width: 480,
    height: 320,
    background: 'white',
    data: { values },
    transform: [
      {
        sort: [{ field: 'ms' }],
        window: [{ op: 'cume_dist', as: 'fraction' }],
        groupby: ['series'],
      },
    ],
    mark: { type: 'line', interpolate: 'step-after' },
    encoding: {
      x: { field: 'ms', type: 'quantitative', title: axisTitle, scale: { type: 'log' } },
      y: { field: 'fraction', type: 'quantitative', title: 'fraction of samples' },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}

export interface MemoryPoint {
  /** Seconds since the start of the run. */
  timeS: number;
  /** e.g. "hotmem plugged", "stock used". */
  series: string;
  bytes: number;
}

export interface InvocationCount {
  /** Start of the interval, seconds since the start of the run. */
  timeS: number;
  /** e.g. "hotmem", "stock". */
  series: string;
  invocations: number;
}

/**
 * Memory over time above invocations over time, sharing the time axis: where a burst needed
 * memory and how soon it was given back.
 */
export function memoryTimelineSpec(
  memory: MemoryPoint[],
  invocations: InvocationCount[],
  title: string,
): TopLevelSpec {
  if (memory.length === 0) throw new RangeError(`${title}: no memory samples`);
  requireFinite(
    `${title}: memory bytes`,
    memory.map((m) => m.bytes),
  );
  requireFinite(
    `${title}: memory timeS`,
    memory.map((m) => m.timeS),
  );
  requireFinite(
    `${title}: invocations`,
    invocations.map((i) => i.invocations),
  );
  const MiB = 2 ** 20;
  const time = { field: 'timeS', type: 'quantitative', title: 'time (s)' } as const;
  return {
    $schema: SCHEMA,
    title,
    background: 'white',
    vconcat: [
      {
        width: 560,
        height: 240,
        data: { values: memory.map((m) => ({ ...m, mib: m.bytes / MiB })) },
        mark: { type: 'line', interpolate: 'step-after' },
        encoding: {
          x: time,
          y: { field: 'mib', type: 'quantitative', title: 'memory (MiB)' },
          color: { field: 'series', type: 'nominal', title: null },
        },
      },
      {
        width: 560,
        height: 120,
        data: { values: invocations },
        mark: { type: 'line', interpolate: 'step-after' },
        encoding: {
          x: time,
          y: { field: 'invocations', type: 'quantitative', title: 'invocations' },
          color: { field: 'series', type: 'nominal', title: null },
        },
      },
    ],
    resolve: { scale: { color: 'independent' } },
  };
}
