// "No tax": what the HotMem series costs a guest that does not use it. Stock 6.12 against the
// same base and config with the series (the kernels scripts/build-kernel.sh builds and
// caches), booted in turns, in one run:
//
//   tsx scripts/notax.ts [--boots N] [--reps N] [--plugs N] [--fault-mib MIB] [--fork-hold-mib MIB]
//                        [--forks N] [--base KERNEL] [--patched KERNEL] [--icount]
//                        [--series DIR --source TREE] [--report FILE.json]
//
// KERNEL is stock, all (the series), N (its first N patches) or a directory holding a series to
// build like it (BASE and patches; with patch 1, for CONFIG_HOTMEM): either side may be any of
// them, to tell which patch a cost comes from, or how much moving code alone costs under TCG
// (docs/notax.md, the placebo). Default: --base stock --patched all. --series names the series
// "all" and N refer to (default kernel-patches/v6.12) and --source the tree every kernel of the
// run is built from (default Debian's linux-source-6.12): kernel-patches/v6.6 and a 6.6.9 tree
// compare stock 6.6.9 with the 6.6 series. With --icount the guests run with QEMU's instruction
// counting (TCG only): the guest's clock advances one nanosecond per instruction executed, so
// the figures the guest times (faults, fork+exit, plug-guest) count instructions and do not move
// with the host's speed; the plug, timed on the host, still does.
//
//   tsx scripts/notax.ts --from FILE.json
//
// prints a run --report saved again, its ratios computed anew from the samples.
//
// Per boot, on both kernels, nothing plugged, every process unbound:
//   fault-4k, fault-thp  anonymous fault throughput over --fault-mib MiB, MADV_NOHUGEPAGE or
//                        MADV_HUGEPAGE (scripts/testbed/guest/notax.c), --reps repetitions;
//   fork                 fork+_exit rate of a parent holding --fork-hold-mib MiB, --reps x --forks;
//   plug                 1 GiB asked of virtio-mem over QMP until every new block is online,
//                        onlined movable as the kernel adds it by the guest's notax program,
//                        listening for uevents, on both kernels (stock onlining), --plugs times,
//                        each unplugged after; timed by the host from its request to the
//                        program's exit;
//   plug-guest           the same plugs timed by the guest, from the first block added to the
//                        last online: the guest's work without the host's (with --icount, its
//                        instructions).
// Then on the patched kernel only, when it has the whole series: 1 GiB plugged into partition 0,
// and the same faults by an unbound process and by one bound to the partition with hotmem-exec
// (partition-*).
// Before the boots, each kernel's struct zone and pg_data_t sizes are read from its build (nm,
// and gdb on one object recompiled with -g); each boot reads /proc/zoneinfo, MemTotal and the
// kernel's "Memory: … reserved" line. With --boots N each kernel boots N times, alternating,
// the first kernel of each pair alternating too. The defaults (6 boots each, 8 repetitions,
// 8 plugs, 256 MiB faulted) took 4–7 min under TCG on two cores (2026-12-06), both kernels built.
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { GUEST_HOTMEM_EXEC, GUEST_NOTAX } from './testbed/initramfs.js';
import {
  bindingRows,
  gdbValues,
  type Kernel,
  kernelRows,
  lineValue,
  METRICS,
  type MemoryCost,
  type Metric,
  type MetricRow,
  memoryTable,
  metricTable,
  nmSize,
  parseBootMemory,
  parseNotax,
  type Sample,
  targetRatio,
  zoneNames,
} from './testbed/notax-report.js';
import { BLOCK, type PlugGuest, plug, plugGuest, untilUnplugged } from './testbed/plug.js';
import {
  bootGuest,
  buildDirectory,
  buildKernel,
  extraKernelUnavailable,
  HOTMEM_SERIES,
  hasPatches,
  meminfo,
} from './testbed/testbed.js';
import { GiB, MiB } from './testbed/vm.js';

interface Options {
  boots: number;
  reps: number;
  plugs: number;
  faultMib: number;
  forkHoldMib: number;
  forks: number;
  icount: boolean;
  kernels: Record<Kernel, KernelSpec>;
}

/** The series "all" and N refer to, its patches, and the tree every kernel is built from. */
interface Source {
  series: string;
  patches: string[];
  /** Debian's linux-source-6.12 when absent. */
  source: string | undefined;
}

/** A kernel to compare: stock, the first `count` patches of the series, or another series. */
type KernelSpec = { patches: number } | { series: string };

/** The partition the bound process runs in, and how much is plugged into it. */
const PARTITION = 0;

/**
 * sizeof(struct zone) and sizeof(pg_data_t) from a kernel build without debug info: one of its
 * objects (mm/mm_init.o) compiled again, exactly as kbuild compiled it (its .cmd file), with -g
 * and into a scratch file, and asked of gdb.
 */
function structSizes(build: string): { zoneBytes: number; nodeBytes: number } {
  const saved = readFileSync(join(build, 'mm/.mm_init.o.cmd'), 'utf8').split('\n')[0] ?? '';
  const m = /^savedcmd_mm\/mm_init\.o := (.*)$/.exec(saved);
  if (!m?.[1]) throw new Error(`${build}/mm/.mm_init.o.cmd: no savedcmd line`);
  // Only the compiler: kbuild appends objtool and others after ';'.
  const compile = (m[1].split(/\s;\s/)[0] ?? '').replace(/-Wp,-MMD,\S+/, '');
  const scratch = mkdtempSync(join(tmpdir(), 'notax-'));
  try {
    const object = join(scratch, 'mm_init.o');
    execFileSync('/bin/sh', ['-c', `${compile.replace(/-o mm\/mm_init\.o/, `-g -o ${object}`)}`], {
      cwd: build,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const [zoneBytes, nodeBytes] = gdbValues(
      execFileSync(
        'gdb',
        ['-batch', '-ex', 'print sizeof(struct zone)', '-ex', 'print sizeof(pg_data_t)', object],
        { encoding: 'utf8' },
      ),
    );
    if (zoneBytes === undefined || nodeBytes === undefined)
      throw new Error(`gdb gave no sizes for ${object}`);
    return { zoneBytes, nodeBytes };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The static memory figures of a kernel build; the boot's figures are added per boot. */
function buildMemory(bzImage: string): Pick<MemoryCost, 'zoneBytes' | 'nodeBytes'> & {
  contigPageDataBytes?: number;
} {
  const build = buildDirectory(bzImage);
  const nm = execFileSync('nm', ['-S', join(build, 'vmlinux')], {
    encoding: 'utf8',
    maxBuffer: 256 * MiB,
  });
  return { ...structSizes(build), contigPageDataBytes: nmSize(nm, 'contig_page_data') };
}

async function notax(g: PlugGuest, argv: string[]) {
  return parseNotax(await g.guest.check(argv, { timeoutMs: 900_000 }));
}

/**
 * 1 GiB asked of virtio-mem while the guest's notax program onlines each block movable as the
 * kernel adds it: the host's ms from its request to the program's exit (plug), and the guest's
 * own from the first block added to the last online (plug-guest).
 */
async function timedPlug(g: PlugGuest): Promise<{ hostMs: number; guestMs: number }> {
  await untilUnplugged(g);
  const argv = [GUEST_NOTAX, 'plug', String(GiB / BLOCK)];
  const pid = await g.guest.spawn(argv, { waitFor: 'listening' });
  const start = performance.now();
  await g.vm.virtioMem.setRequestedSize(GiB);
  const r = await g.guest.wait(pid, 300_000).catch(async (err: Error) => {
    await g.guest.signal(pid, 'SIGKILL');
    throw err;
  });
  const hostMs = performance.now() - start;
  if (r.code !== 0)
    throw new Error(`guest: '${argv.join(' ')}' exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  const [line] = parseNotax(r.stdout);
  if (line?.kind !== 'plug') throw new Error(`guest: '${argv.join(' ')}' printed no plug line`);
  return { hostMs, guestMs: lineValue(line).value };
}

/** One boot's measurements; `push` records each sample as it comes. */
async function measureBoot(
  g: PlugGuest,
  kernel: Kernel,
  boot: number,
  o: Options,
  partitions: boolean,
  push: (s: Sample) => void,
): Promise<void> {
  const record = (metric: Metric, lines: Awaited<ReturnType<typeof notax>>) => {
    for (const line of lines) push({ kernel, boot, metric, ...lineValue(line) });
  };
  const reps = String(o.reps);
  const fault = (page: '4k' | 'thp') => [GUEST_NOTAX, 'fault', page, String(o.faultMib), reps];
  record('fault-4k', await notax(g, fault('4k')));
  record('fault-thp', await notax(g, fault('thp')));
  record(
    'fork',
    await notax(g, [GUEST_NOTAX, 'fork', String(o.forkHoldMib), String(o.forks), reps]),
  );

  // The first plug of a boot runs code TCG has not translated yet: plugged, not recorded.
  for (let i = 0; i <= o.plugs; i++) {
    const { hostMs, guestMs } = await timedPlug(g);
    if (i > 0) {
      push({ kernel, boot, metric: 'plug', value: hostMs });
      push({ kernel, boot, metric: 'plug-guest', value: guestMs });
    }
    await g.vm.virtioMem.resize(0, { timeoutMs: 120_000 });
  }
  await untilUnplugged(g);
  if (!partitions) return;

  await plug(g, GiB, 'hotmem', GiB / BLOCK);
  const bound = (argv: string[]) => [
    GUEST_HOTMEM_EXEC,
    '--partition',
    String(PARTITION),
    '--',
    ...argv,
  ];
  for (const page of ['4k', 'thp'] as const) {
    const runs = [
      { metric: `partition-fault-${page}-unbound` as const, argv: fault(page) },
      { metric: `partition-fault-${page}-bound` as const, argv: bound(fault(page)) },
    ];
    // Which goes first alternates from boot to boot.
    for (const r of boot % 2 ? runs.reverse() : runs) record(r.metric, await notax(g, r.argv));
  }
}

function count(name: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`--${name}: '${text}' is not ${min}..${max}`);
  return n;
}

const positive = (name: string, text: string, max: number) => count(name, text, 1, max);

/** The series' patches in order, cover letter left out. */
function seriesPatches(series: string): string[] {
  return readdirSync(series)
    .filter((f) => /^\d{4}-.*\.patch$/.test(f) && !f.startsWith('0000-'))
    .sort();
}

function kernelSpec(name: string, text: string, total: number): KernelSpec {
  if (text === 'stock') return { patches: 0 };
  if (text === 'all') return { patches: total };
  if (/^\d+$/.test(text)) return { patches: count(name, text, 1, total) };
  if (!hasPatches(text))
    throw new Error(`--${name}: '${text}' is not stock, all, 1..${total} or a patch series`);
  return { series: resolve(text) };
}

/** How the tables name a kernel. */
function kernelLabel(spec: KernelSpec, total: number): string {
  if ('series' in spec) return basename(spec.series);
  if (spec.patches === 0) return 'stock';
  if (spec.patches === total) return 'patched';
  return spec.patches === 1 ? 'patch 1' : `patches 1–${spec.patches}`;
}

/**
 * Builds (or finds) a kernel: stock, the series itself, another series, or a scratch copy of
 * the series' BASE and first patches (the build's cache key is the patches' diffs, not where
 * they are).
 */
async function buildSpec(spec: KernelSpec, from: Source): Promise<string> {
  const { source } = from;
  if ('series' in spec) return buildKernel({ source, patches: spec.series });
  if (spec.patches === 0) return buildKernel({ source });
  if (spec.patches === from.patches.length) return buildKernel({ source, patches: from.series });
  const series = mkdtempSync(join(tmpdir(), `notax-patches-1-${spec.patches}-`));
  try {
    for (const f of ['BASE', ...from.patches.slice(0, spec.patches)])
      copyFileSync(join(from.series, f), join(series, f));
    return await buildKernel({ source, patches: series });
  } finally {
    rmSync(series, { recursive: true, force: true });
  }
}

/** What a THP run's huge-page share says, if it was not all huge pages. */
function thpNotes(samples: Sample[], labels: Record<Kernel, string>): string[] {
  const notes: string[] = [];
  for (const kernel of ['stock', 'patched'] as const)
    for (const metric of [...new Set(samples.map((s) => s.metric))]) {
      const shares = samples
        .filter((s) => s.kernel === kernel && s.metric === metric && s.thpShare !== undefined)
        .map((s) => s.thpShare as number);
      if (shares.length && Math.min(...shares) < 1)
        notes.push(
          `${labels[kernel]} ${metric}: huge pages backed ${(100 * Math.min(...shares)).toFixed(0)}–${(100 * Math.max(...shares)).toFixed(0)}% of the region`,
        );
    }
  return notes;
}

/**
 * One sentence per targeted metric: met, missed, or what the noise allows to say, of the ratio
 * the verdict read (boot by boot when it has an interval, pooled otherwise).
 */
function targetLines(rows: MetricRow[], labels: Record<Kernel, string>): string[] {
  return rows
    .filter((r) => r.targeted)
    .map((r) => {
      const { ratio, ratioInterval, basis } = targetRatio(r);
      const [low, high] = ratioInterval ?? [Number.NaN, Number.NaN];
      const width = ((high - low) / 2) * 100;
      const noise =
        width > 3 ? `; the interval is ±${width.toFixed(1)}%, wider than the 3% target` : '';
      const how = basis === 'by boot' ? `boot by boot (${r.byBoot.n} pairs)` : 'pooled';
      return `${r.label}: ${labels.patched}/${labels.stock} ${how} ${ratio.toFixed(3)} [${low.toFixed(3)}–${high.toFixed(3)}]: ${r.verdict}${noise}`;
    });
}

/** What a run measured, as --report writes it (with the rows computed from the samples). */
const savedRun = z.object({
  meta: z.object({
    accel: z.string(),
    minutes: z.number(),
    // Runs before --base and --patched compared stock with the series.
    labels: z.object({ stock: z.string(), patched: z.string() }).optional(),
    options: z.object({
      boots: z.number(),
      reps: z.number(),
      plugs: z.number(),
      faultMib: z.number(),
      forkHoldMib: z.number(),
      forks: z.number(),
      icount: z.boolean().optional(),
    }),
  }),
  memory: z.record(
    z.enum(['stock', 'patched']),
    z.object({
      zones: z.number(),
      zoneBytes: z.number().optional(),
      nodeBytes: z.number().optional(),
      bootMemory: z
        .object({ availableKiB: z.number(), totalKiB: z.number(), reservedKiB: z.number() })
        .optional(),
      memTotal: z.number().optional(),
    }),
  ),
  built: z.record(
    z.enum(['stock', 'patched']),
    z.object({ contigPageDataBytes: z.number().optional() }),
  ),
  samples: z.array(
    z.object({
      kernel: z.enum(['stock', 'patched']),
      boot: z.number().int().nonnegative(),
      metric: z.enum(METRICS),
      value: z.number(),
      thpShare: z.number().optional(),
    }),
  ),
});

interface Run {
  accel: string;
  minutes: number;
  labels: Record<Kernel, string>;
  options: Omit<Options, 'kernels'>;
  memory: Partial<Record<Kernel, MemoryCost>>;
  contigPageDataBytes: Partial<Record<Kernel, number>>;
  samples: Sample[];
}

/** Reads a report --report wrote, to print it again (--from). */
function readRun(file: string): Run {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`--from ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = savedRun.safeParse(json);
  if (!parsed.success)
    throw new Error(
      `--from ${file}: not a notax report: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const { meta, memory, built, samples } = parsed.data;
  return {
    accel: meta.accel,
    minutes: meta.minutes,
    labels: meta.labels ?? { stock: 'stock', patched: 'patched' },
    options: { ...meta.options, icount: meta.options.icount ?? false },
    memory,
    contigPageDataBytes: {
      stock: built.stock?.contigPageDataBytes,
      patched: built.patched?.contigPageDataBytes,
    },
    samples,
  };
}

/** Prints a run's tables and notes; returns the rows, for the report. */
function printRun(run: Run): { kRows: MetricRow[]; bRows: MetricRow[] } {
  const { options: o, labels, memory } = run;
  const kRows = kernelRows(run.samples);
  const bRows = bindingRows(run.samples);
  console.log(
    `notax: ${o.boots} boots per kernel (${run.accel}), ${o.reps} repetitions per boot, ${o.plugs} plugs per boot; ` +
      `faults over ${o.faultMib} MiB, fork+exit x${o.forks} holding ${o.forkHoldMib} MiB; ${run.minutes.toFixed(1)} min`,
  );
  console.log(`\n${metricTable(kRows, labels.stock, labels.patched)}`);
  if (bRows.length)
    console.log(
      `\npatched kernel, 1 GiB in partition ${PARTITION}:\n${metricTable(bRows, 'unbound', 'bound')}`,
    );
  if (memory.stock && memory.patched) {
    console.log(`\n${memoryTable(memory.stock, memory.patched, labels)}`);
  }
  if (memory.stock && memory.patched && labels.stock === 'stock') {
    const perNode = (memory.patched.nodeBytes ?? 0) - (memory.stock.nodeBytes ?? 0);
    console.log(
      `\nper node, the ${memory.patched.zones - memory.stock.zones} partition zones cost ${perNode} bytes of pg_data_t ` +
        `(${(perNode / 1024).toFixed(1)} KiB); contig_page_data in vmlinux: ${run.contigPageDataBytes.stock ?? 'n/a'} -> ${run.contigPageDataBytes.patched ?? 'n/a'} bytes`,
    );
  }
  const notes = [...targetLines(kRows, labels), ...thpNotes(run.samples, labels)];
  if (notes.length) console.log(`\n${notes.join('\n')}`);
  return { kRows, bRows };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      boots: { type: 'string', default: '6' },
      reps: { type: 'string', default: '8' },
      plugs: { type: 'string', default: '8' },
      'fault-mib': { type: 'string', default: '256' },
      'fork-hold-mib': { type: 'string', default: '64' },
      forks: { type: 'string', default: '100' },
      base: { type: 'string', default: 'stock' },
      patched: { type: 'string', default: 'all' },
      series: { type: 'string', default: HOTMEM_SERIES },
      source: { type: 'string' },
      icount: { type: 'boolean', default: false },
      report: { type: 'string' },
      from: { type: 'string' },
    },
  });
  if (values.from) {
    printRun(readRun(values.from));
    return;
  }
  const series = resolve(values.series);
  const source = values.source && resolve(values.source);
  if (!hasPatches(series)) throw new Error(`--series: no patches in ${series}`);
  if (series !== HOTMEM_SERIES && !source)
    throw new Error(`--series ${values.series} needs --source, the tree it applies to`);
  const from: Source = { series, patches: seriesPatches(series), source };
  const o: Options = {
    boots: positive('boots', values.boots, 50),
    reps: positive('reps', values.reps, 100),
    plugs: positive('plugs', values.plugs, 100),
    faultMib: positive('fault-mib', values['fault-mib'], 512),
    forkHoldMib: positive('fork-hold-mib', values['fork-hold-mib'], 512),
    forks: positive('forks', values.forks, 100_000),
    icount: values.icount,
    kernels: {
      stock: kernelSpec('base', values.base, from.patches.length),
      patched: kernelSpec('patched', values.patched, from.patches.length),
    },
  };
  const labels: Record<Kernel, string> = {
    stock: kernelLabel(o.kernels.stock, from.patches.length),
    patched: kernelLabel(o.kernels.patched, from.patches.length),
  };
  if (labels.stock === labels.patched)
    throw new Error(`--base and --patched are both ${labels.stock}`);
  // The partition phase binds with hotmem-exec: it needs the whole series.
  const partitions = labels.patched === 'patched';
  const fromStock = labels.stock === 'stock';
  if (fromStock) {
    const stockUnavailable = extraKernelUnavailable('stock', { source: from.source });
    if (stockUnavailable) throw new Error(stockUnavailable);
  }

  const started = Date.now();
  const kernels: Record<Kernel, string> = {
    patched: await buildSpec(o.kernels.patched, from),
    stock: await buildSpec(o.kernels.stock, from),
  };
  const built = { stock: buildMemory(kernels.stock), patched: buildMemory(kernels.patched) };
  const booted: Partial<Record<Kernel, Omit<MemoryCost, 'zoneBytes' | 'nodeBytes'>>> = {};
  const samples: Sample[] = [];
  let accel = '';
  let failure: unknown;
  try {
    for (let boot = 0; boot < o.boots; boot++) {
      // Every other pair the patched kernel boots first.
      for (const kernel of boot % 2
        ? (['patched', 'stock'] as const)
        : (['stock', 'patched'] as const)) {
        const t0 = Date.now();
        const g = await plugGuest(
          await bootGuest(kernels[kernel], {
            hotplugRegion: 2 * GiB,
            icount: o.icount,
            log: (l) => console.error(l),
          }),
        );
        accel = o.icount ? `${g.vm.accel}, icount` : g.vm.accel;
        const before = samples.length;
        try {
          booted[kernel] ??= {
            zones: zoneNames(await g.guest.read('/proc/zoneinfo')).filter((z) => z.startsWith('0 '))
              .length,
            bootMemory: parseBootMemory(g.vm.consoleLog),
            memTotal: (await meminfo(g.guest)).MemTotal,
          };
          await measureBoot(g, kernel, boot, o, partitions && kernel === 'patched', (s) =>
            samples.push(s),
          );
        } finally {
          await g.stop();
        }
        const problems = g.vm.kernelProblems();
        if (problems.length)
          throw new Error(`${labels[kernel]} boot ${boot}: ${problems.join('\n')}`);
        console.error(
          `${labels[kernel]} boot ${boot}: ${samples.length - before} samples in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
        );
      }
    }
  } catch (err) {
    // Keep what was measured: the figures so far are printed and written, then the run fails.
    failure = err;
  }

  const memory: Partial<Record<Kernel, MemoryCost>> = {};
  for (const k of ['stock', 'patched'] as const)
    if (booted[k])
      memory[k] = { ...booted[k], zoneBytes: built[k].zoneBytes, nodeBytes: built[k].nodeBytes };
  const minutes = (Date.now() - started) / 60_000;
  const { kRows, bRows } = printRun({
    accel,
    minutes,
    labels,
    options: o,
    memory,
    contigPageDataBytes: {
      stock: built.stock.contigPageDataBytes,
      patched: built.patched.contigPageDataBytes,
    },
    samples,
  });

  if (values.report) {
    const meta = {
      date: new Date().toISOString(),
      accel,
      hostCpus: cpus().length,
      hostCpu: cpus()[0]?.model,
      kernels,
      series: from.series,
      source: from.source ?? 'Debian linux-source-6.12',
      labels,
      options: o,
      minutes,
    };
    writeFileSync(
      values.report,
      `${JSON.stringify({ meta, kernelRows: kRows, bindingRows: bRows, memory, built, samples }, null, 2)}\n`,
    );
    console.log(`\nreport: ${values.report}`);
  }
  if (failure) throw failure;
}

main().catch((err: unknown) => {
  console.error(`notax: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
