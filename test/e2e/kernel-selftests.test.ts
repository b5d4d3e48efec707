// The kernel's own memory-hotplug, THP, migration and compaction selftests on each stock kernel
// and on the same kernel with the HotMem series (6.12 always; 6.6 given a vanilla tree in
// HOTMEM_V6_6_SOURCE), one guest each with 512 MiB plugged over virtio-mem and onlined movable:
// every subtest that passes on stock must pass on the patched kernel, and neither console may show
// a kernel problem. Subtests that fail or skip on both are printed.
//
// Chosen (built statically from each kernel's own tree, run under a timeout):
// - memory-hotplug/mem-on-off-test.sh: offlines and onlines hot-removable blocks (the plugged
//   ones are movable, so offlining migrates what they hold). Its second half, memory notifier
//   error injection, needs debugfs and a module: it ends early on both kernels, as it says.
// - mm/cow, mm/mkdirty, mm/madv_populate: COW, dirty-bit and populate semantics on base pages,
//   PMD- and PTE-mapped THPs and mTHPs.
// - mm/khugepaged: collapse by khugepaged and MADV_COLLAPSE, anonymous and shmem.
// - mm/transhuge-stress: allocates THPs across all of memory for a bounded time, leaving a
//   base page behind in each, so later THPs need compaction, which migrates pages.
// Left out, because the test bed's guest config (tinyconfig + scripts/kernel/guest.config)
// lacks what they need, so they would only fail or skip on both kernels:
// - mm/split_huge_page_test: drives /sys/kernel/debug/split_huge_pages (CONFIG_DEBUG_FS off).
// - mm/compaction_test: allocates through /proc/sys/vm/nr_hugepages (CONFIG_HUGETLBFS off).
// - mm/migration: move_pages() between two NUMA nodes (CONFIG_NUMA off; the guest has one node).
// - mm/gup_longterm, pagemap_ioctl, uffd-*, ksm_*, hugetlb-*: need gup_test in debugfs,
//   liburing, userfaultfd, KSM or HugeTLB, all off or absent.
import { existsSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedLibraries } from '../../scripts/testbed/initramfs.js';
import {
  type OutputFormat,
  regressions,
  type SubtestResult,
  selftestResults,
  tally,
} from '../../scripts/testbed/kselftest.js';
import {
  blockStates,
  bootGuest,
  buildHotMemKernel,
  buildKernel,
  buildSelftest,
  extraKernelUnavailable,
  type Guest,
  type HotMemKernel,
  hotMemKernels,
  kernelSelftests,
  kernelSuiteTitle,
  type SelftestProgram,
  vmstat,
} from '../../scripts/testbed/testbed.js';
import { GiB, MiB } from '../../scripts/testbed/vm.js';

const PLUG = 512 * MiB;
const GUEST_SELFTESTS = '/usr/lib/kselftests';
/** Linked into every mm selftest, where the tree has them: 6.6 has no thp_settings.c yet. */
const MM_HELPERS = ['mm/vm_util.c', 'mm/thp_settings.c'];
/** vmstat counters that show a run reached THP, compaction and migration code. */
const COVERAGE_COUNTERS = [
  'thp_fault_alloc',
  'thp_collapse_alloc',
  'thp_split_page',
  'compact_stall',
  'compact_success',
  'pgmigrate_success',
];

function counterGrowth(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  return Object.fromEntries(COVERAGE_COUNTERS.map((c) => [c, (after[c] ?? 0) - (before[c] ?? 0)]));
}

interface Selftest {
  /** Under tools/testing/selftests: a C program, or a script run by `interpreter`. */
  source: string;
  args?: string[];
  interpreter?: string;
  /** Puts the guest in the state the test needs. */
  before?: (g: Guest) => Promise<void>;
  build?: Omit<SelftestProgram, 'source'>;
  output: OutputFormat;
  timeoutSeconds: number;
}

/** Takes the highest plugged block offline again, for mem-on-off-test.sh's first stage. */
async function offlineLastPluggedBlock(g: Guest): Promise<void> {
  const states = await blockStates(g.guest);
  const plugged = Object.keys(states)
    .filter((b) => states[b] === 'online Movable')
    .sort((a, b) => Number(a.slice('memory'.length)) - Number(b.slice('memory'.length)));
  const last = plugged.at(-1);
  if (!last) throw new Error(`no plugged block is online movable: ${JSON.stringify(states)}`);
  await g.guest.write(`/sys/devices/system/memory/${last}/state`, 'offline');
}

const SELFTESTS: Selftest[] = [
  // Bash, not busybox sh ($UID, $RANDOM, echo -e). The script offlines blocks in sysfs's
  // lexical order: memory0..memory3 (boot memory) before memory32.. (plugged). memory0 spans
  // two zones and never goes offline, so 50% of the 12 blocks (6) takes at least three plugged
  // ones offline and online again; the default 2% (1 block) stops at memory1.
  {
    source: 'memory-hotplug/mem-on-off-test.sh',
    args: ['-r', '50'],
    interpreter: '/bin/bash',
    before: offlineLastPluggedBlock,
    output: 'exit-status',
    timeoutSeconds: 120,
  },
  { source: 'mm/madv_populate.c', output: 'tap', timeoutSeconds: 60 },
  { source: 'mm/mkdirty.c', output: 'tap', timeoutSeconds: 60 },
  { source: 'mm/cow.c', output: 'tap', timeoutSeconds: 300 },
  // 6.12.117's khugepaged.c returns KSFT_SKIP without including kselftest.h.
  {
    source: 'mm/khugepaged.c',
    build: { extraCflags: ['-include', 'kselftest.h'] },
    output: 'khugepaged',
    timeoutSeconds: 300,
  },
  {
    source: 'mm/khugepaged.c',
    args: ['all:shmem'],
    build: { extraCflags: ['-include', 'kselftest.h'] },
    output: 'khugepaged',
    timeoutSeconds: 300,
  },
  { source: 'mm/transhuge-stress.c', args: ['-d', '20'], output: 'tap', timeoutSeconds: 120 },
];

function nameOf(test: Selftest): string {
  return [basename(test.source, '.c'), ...(test.args ?? [])].join(' ');
}

function guestPath(test: Selftest): string {
  return join(GUEST_SELFTESTS, test.source.replace(/\.c$/, ''));
}

/** Guest path -> host path of every selftest, built for (or taken from the tree of) bzImage. */
function selftestFiles(bzImage: string): Record<string, string> {
  const selftests = kernelSelftests(bzImage);
  const helpers = MM_HELPERS.filter((h) => existsSync(join(selftests, h)));
  const files: Record<string, string> = {};
  for (const test of SELFTESTS) {
    files[guestPath(test)] = test.source.endsWith('.c')
      ? buildSelftest(bzImage, { source: test.source, helpers, ...test.build })
      : join(selftests, test.source);
  }
  return files;
}

/** The host's bash with the libraries it loads: busybox sh lacks what the script uses. */
function bashFiles(): Record<string, string> {
  return Object.fromEntries(
    ['/bin/bash', ...sharedLibraries('/bin/bash')].map((f) => [f, realpathSync(f)]),
  );
}

interface SelftestRun {
  results: SubtestResult[];
  durationMs: number;
}

type SelftestKernel = Pick<HotMemKernel, 'name' | 'unavailable'> & {
  build: () => Promise<string>;
};

/** A patched kernel and the stock kernel built from the same source. */
interface KernelPair {
  stock: SelftestKernel;
  patched: SelftestKernel;
}

function pairOf(patched: HotMemKernel): KernelPair {
  return {
    stock: {
      name: patched.name.replace(/^patched /, 'stock '),
      unavailable:
        patched.unavailable ?? extraKernelUnavailable('stock', { source: patched.source }),
      build: () => buildKernel({ source: patched.source }),
    },
    patched: { ...patched, build: () => buildHotMemKernel(patched) },
  };
}

// Not on the debug builds: the partition suite boots those.
const PAIRS = hotMemKernels()
  .filter((k) => !k.debug)
  .map(pairOf);
const runs = new Map<string, Map<string, SelftestRun>>();

function selftestSuite(kernel: SelftestKernel): void {
  let g: Guest;
  let countersAtStart: Record<string, number>;
  const kernelRuns = new Map<string, SelftestRun>();
  runs.set(kernel.name, kernelRuns);

  beforeAll(async () => {
    const bzImage = await kernel.build();
    const t0 = Date.now();
    g = await bootGuest(bzImage, {
      append: ['memhp_default_state=online_movable'],
      hotplugRegion: 2 * GiB,
      extraFiles: { ...bashFiles(), ...selftestFiles(bzImage) },
    });
    await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
    countersAtStart = await vmstat(g.guest);
    console.log(`${kernel.name}: guest up with ${PLUG / MiB} MiB plugged in ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    await g?.stop();
    if (g) expect(g.vm.kernelProblems()).toEqual([]);
  });

  for (const test of SELFTESTS) {
    const name = nameOf(test);
    it(
      `runs ${name} to completion within ${test.timeoutSeconds} s`,
      async () => {
        await test.before?.(g);
        const before = await vmstat(g.guest);
        // busybox timeout execs the test in its own process: the server sees its real status.
        const r = await g.guest.run(
          [
            'timeout',
            '-s',
            'TERM',
            '-k',
            '10',
            String(test.timeoutSeconds),
            ...(test.interpreter ? [test.interpreter] : []),
            guestPath(test),
            ...(test.args ?? []),
          ],
          { timeoutMs: (test.timeoutSeconds + 30) * 1000 },
        );
        const after = await vmstat(g.guest);
        const results = selftestResults(name, test.output, r);
        const durationMs = r.durationMs ?? 0;
        kernelRuns.set(name, { results, durationMs });
        console.log(
          `--- ${name} on ${kernel.name}: ${JSON.stringify(tally(results))} in ${(durationMs / 1000).toFixed(1)} s; ${JSON.stringify(counterGrowth(before, after))}\n${r.stdout}${r.stderr ? `--- stderr\n${r.stderr}` : ''}`,
        );
        expect(r.signal, `${name} was killed (timeout ${test.timeoutSeconds} s)`).toBeNull();
      },
      (test.timeoutSeconds + 60) * 1000,
    );
  }

  // Compaction is left out: whether THP allocations needed it depends on fragmentation.
  it('reached THP faults, THP collapse and page migration', async () => {
    const grown = counterGrowth(countersAtStart, await vmstat(g.guest));
    console.log(`${kernel.name}, the whole run: ${JSON.stringify(grown)}`);
    expect(grown.thp_fault_alloc).toBeGreaterThan(0);
    expect(grown.thp_collapse_alloc).toBeGreaterThan(0);
    expect(grown.pgmigrate_success).toBeGreaterThan(0);
  });
}

function comparison({ stock, patched }: KernelPair): void {
  /** Every selftest's run on `kernel`, in SELFTESTS order; throws unless all of them ran. */
  function runsOn(kernel: string): { name: string; run: SelftestRun }[] {
    return SELFTESTS.map(nameOf).map((name) => {
      const run = runs.get(kernel)?.get(name);
      if (!run) throw new Error(`${name} has no results on the ${kernel} kernel`);
      return { name, run };
    });
  }

  it('has each chosen selftest pass on stock, so the comparison covers something', () => {
    const withoutPasses = runsOn(stock.name)
      .filter(({ run }) => !run.results.some((r) => r.outcome === 'pass'))
      .map(({ name }) => name);
    expect(withoutPasses).toEqual([]);
  });

  it('passes on the patched kernel every subtest that passes on stock', () => {
    // What failed or skipped, on either kernel, is shown rather than hidden.
    for (const kernel of [stock, patched]) {
      for (const { name, run } of runsOn(kernel.name)) {
        console.log(
          `${name} on ${kernel.name}: ${JSON.stringify(tally(run.results))}, ${(run.durationMs / 1000).toFixed(1)} s` +
            run.results
              .filter((r) => r.outcome !== 'pass')
              .map((r) => `\n  ${r.outcome}: ${r.title}`)
              .join(''),
        );
      }
    }
    const patchedRuns = runsOn(patched.name);
    const regressed = runsOn(stock.name).flatMap(({ run }, i) =>
      regressions(run.results, patchedRuns[i]?.run.results ?? []),
    );
    expect(regressed).toEqual([]);
  });
}

// The patched kernel's run stands on its own (no report in its console, each test runs to
// completion) when the stock kernel is left out; the comparison needs both.
for (const pair of PAIRS) {
  for (const kernel of [pair.stock, pair.patched]) {
    describe.skipIf(kernel.unavailable !== undefined)(
      kernelSuiteTitle("the kernel's selftests", kernel),
      () => selftestSuite(kernel),
    );
  }
  describe.skipIf(pair.stock.unavailable !== undefined)(
    kernelSuiteTitle(`the selftests against ${pair.stock.name}`, pair.stock),
    () => comparison(pair),
  );
}
