// Trace replay, HotMem against stock: one booted guest on the patched kernel, the same trace and
// memory budget in each mode, the host controller plugging memory over QMP and the agent running
// function instances. Writes the runs' records (JSON), a Markdown report and plots.
//
//   tsx scripts/replay.ts [--shape bursty|steady] [--seed N] [--functions N] [--minutes N]
//                         [--compression N] [--budget SIZE] [--keep-alive MS] [--evict-idle yes|no]
//                         [--modes stock,stock-kernel,hotmem,hotmem-kept] [--function native|node]
//                         [--out DIR] [--kernel BZIMAGE]
//
// Modes (testbed/replay-modes.ts): stock, stock-kernel (stock with plugged blocks onlined to
// ZONE_NORMAL; runs after the others), hotmem, hotmem-kept.
//   tsx scripts/replay.ts --report RESULTS.json   (redraws the report and plots of a saved run)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { parseSize } from '../lib/cli.js';
import { generateTrace } from '../lib/host/trace/generate.js';
import { latencyCdfSpec, memoryTimelineSpec, renderSvg } from './testbed/charts.js';
import { projectRoot } from './testbed/paths.js';
import { type ModeRun, REPLAY_AGENT_PORT, replayInGuest } from './testbed/replay-guest.js';
import { replayModeSchema, runOrder } from './testbed/replay-modes.js';
import { replayReport } from './testbed/replay-report.js';
import { bootGuest, buildHotMemKernel } from './testbed/testbed.js';
import { GiB } from './testbed/vm.js';

const optionsSchema = z
  .object({
    shape: z.enum(['bursty', 'steady']),
    seed: z.coerce.number().int().min(0).max(0xffffffff),
    functions: z.coerce.number().int().min(1).max(100),
    minutes: z.coerce.number().positive().max(1440),
    compression: z.coerce.number().positive(),
    budget: z.string().transform((text) => parseSize(text, '--budget')),
    'keep-alive': z.coerce.number().int().min(0),
    'evict-idle': z.enum(['yes', 'no']).transform((answer) => answer === 'yes'),
    modes: z
      .string()
      .transform((text) => text.split(','))
      .pipe(z.array(replayModeSchema).min(1)),
    function: z.enum(['native', 'node']),
    out: z.string(),
    kernel: z.string().optional(),
    report: z.string().optional(),
  })
  .strict();

/** The report (Markdown) and plots of runs, written next to `base`.json. */
async function writeReport(base: string, runs: ModeRun[], accel: string): Promise<string> {
  const report = replayReport(runs);
  writeFileSync(`${base}.md`, `${report.markdown}\n`);
  writeFileSync(
    `${base}-memory.svg`,
    await renderSvg(
      memoryTimelineSpec(
        report.memory,
        report.invocationsPerSecond,
        `memory and invocations (${accel})`,
      ),
    ),
  );
  writeFileSync(
    `${base}-latency.svg`,
    await renderSvg(
      latencyCdfSpec(report.latencies, `invocation latency, queueing included (${accel})`),
    ),
  );
  const withSamples = Object.fromEntries(
    Object.entries(report.memoryBackMs).filter(([, samples]) => samples.length > 0),
  );
  if (Object.keys(withSamples).length > 0) {
    writeFileSync(
      `${base}-memory-back.svg`,
      await renderSvg(
        latencyCdfSpec(
          withSamples,
          `scale-down: instance exit to memory back with the host (${accel})`,
          'reclaim + unplug (ms, log)',
        ),
      ),
    );
  }
  return report.markdown;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: 'bursty' },
      seed: { type: 'string', default: '7' },
      functions: { type: 'string', default: '4' },
      minutes: { type: 'string', default: '10' },
      compression: { type: 'string', default: '10' },
      budget: { type: 'string', default: '1G' },
      'keep-alive': { type: 'string', default: '3000' },
      'evict-idle': { type: 'string', default: 'yes' },
      modes: { type: 'string', default: 'stock,hotmem' },
      function: { type: 'string', default: 'native' },
      out: { type: 'string', default: join(projectRoot(), 'replay-results') },
      kernel: { type: 'string' },
      report: { type: 'string' },
    },
  });
  const parsed = optionsSchema.safeParse(values);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`--${issue?.path.join('.')}: ${issue?.message}`);
  }
  const o = parsed.data;
  if (o.report) {
    if (!o.report.endsWith('.json')) throw new Error(`--report: ${o.report} is not a .json file`);
    const saved = JSON.parse(readFileSync(o.report, 'utf8')) as {
      meta?: { accel?: string };
      runs?: ModeRun[];
    };
    if (!Array.isArray(saved.runs) || saved.runs.length === 0)
      throw new Error(`--report: ${o.report} holds no runs`);
    console.log(
      await writeReport(o.report.slice(0, -'.json'.length), saved.runs, saved.meta?.accel ?? '?'),
    );
    return;
  }
  const trace = generateTrace({
    seed: o.seed,
    shape: o.shape,
    functions: o.functions,
    minutes: o.minutes,
    compression: o.compression,
    ratePerMinute: { min: 3, max: 12 },
    maxDurationMs: 1_500,
    memoryMiB: { min: 128, max: 256 },
    onFraction: 0.3,
    periodMinutes: 4,
  });
  console.error(`trace: ${trace.source}: ${trace.invocations.length} invocations`);

  const modes = runOrder(o.modes);
  if (modes.join() !== o.modes.join())
    console.error(`modes run in this order: ${modes.join(', ')}`);
  const controller = {
    budgetBytes: o.budget,
    keepAliveMs: o['keep-alive'],
    evictIdle: o['evict-idle'],
    reclaimTimeoutMs: 30_000,
    resizeTimeoutMs: 120_000,
    plugTimeoutMs: 120_000,
    unplugTimeoutMs: 30_000,
  };
  const g = await bootGuest(o.kernel ?? (await buildHotMemKernel()), {
    hotplugRegion: Math.max(2 * GiB, o.budget),
    guestPorts: [7070, REPLAY_AGENT_PORT],
    log: (l) => console.error(l),
  });
  const runs: ModeRun[] = [];
  let failure: unknown;
  try {
    for (const mode of modes) {
      runs.push(
        await replayInGuest(g, trace, mode, {
          function: o.function,
          controller,
          progress: (line) => console.error(line),
        }),
      );
    }
  } catch (error) {
    failure = error;
  } finally {
    await g.stop();
  }
  if (runs.length === 0) throw failure;

  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const base = join(o.out, `replay-${stamp}`);
  mkdirSync(o.out, { recursive: true });
  const meta = {
    date: new Date().toISOString(),
    accel: g.vm.accel,
    options: o,
    controller,
    trace: trace.source,
  };
  writeFileSync(`${base}.json`, `${JSON.stringify({ meta, trace, runs }, null, 2)}\n`);
  console.log(await writeReport(base, runs, meta.accel));
  console.log(`\nresults: ${base}{.json,.md,-memory.svg,-latency.svg,-memory-back.svg}`);
  if (failure) throw failure;
}

main().catch((err: unknown) => {
  console.error(`replay: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
