// Reclamation benchmark: how long it takes to give an exited instance's memory back to the host,
// HotMem against stock virtio-mem, idle and loaded, over a range of sizes — in one guest, one run.
//
//   tsx scripts/bench.ts [--sizes 128M,256M,512M,1G,2G] [--modes stock,hotmem] [--repeat N] [--out DIR]
//                        [--kernel BZIMAGE]   (default: built by scripts/build-kernel.sh)
//
// Instances are memhogs of size I = max(S/2, one memory block), each filling 90% of I.
// untouched: plug S, place it (in partitions of I, as the others do), reclaim S: nothing ever ran.
// idle:      plug S; S/I instances fault their pages in together, exit, and S is reclaimed with
//            nothing else running.
// loaded:    plug S + 2I; S/I instances and two more fault their pages in together (interleaved
//            across the plugged blocks in stock mode); the first S/I exit (scale-down) and their
//            S is reclaimed while the other two keep running.
// idle and loaded differ only in the two instances left running, so loaded/idle measures what
// load costs; untouched shows what the instances' use of the memory costs (the host gives back
// pages they populated).
// stock:  blocks onlined movable, instances unbound; reclaim = virtio-mem unplug (migrating).
// hotmem: each instance bound to its own partition of I; reclaim = HOTMEM_IOC_RECLAIM of the
//         exited partitions (the whole ioctl, timed in the guest), then virtio-mem unplug of
//         their (now offline) blocks.
// With hotmem among the modes the guest runs the patched kernel (kernel-patches/v6.12), and
// stock mode is measured on that same kernel with HotMem unused.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseSize } from '../lib/cli.js';
import type { GuestClient } from './testbed/guest.js';
import { GUEST_HOTMEM_EXEC, GUEST_MEMHOG } from './testbed/initramfs.js';
import { projectRoot } from './testbed/paths.js';
import { BLOCK, type PlugGuest, plug, plugGuest } from './testbed/plug.js';
import { ratios, reclaimLatencyPlot, type Sample, summarize, table } from './testbed/report.js';
import {
  bootGuest,
  buildHotMemKernel,
  buildKernel,
  HOTMEM_SERIES,
  hasPatches,
  vmstatSnapshot,
} from './testbed/testbed.js';
import { MiB } from './testbed/vm.js';

type Mode = Sample['mode'];
type BenchGuest = PlugGuest;

/** A size from --sizes (the CLI's syntax: 128M, 2G), which must be whole memory blocks. */
function blockMultiple(text: string): number {
  const bytes = parseSize(text, '--sizes');
  if (bytes % BLOCK !== 0)
    throw new Error(`--sizes: ${text} is not a multiple of the 128 MiB memory block`);
  return bytes;
}

/** Guest CPU time in ms, all CPUs, user + system + irq (from /proc/stat; USER_HZ is 100). */
async function guestCpuMs(guest: GuestClient): Promise<number> {
  const line = (await guest.read('/proc/stat')).split('\n')[0] ?? '';
  const [, user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0)) * 10;
}

async function startInstances(
  g: BenchGuest,
  mode: Mode,
  count: number,
  bytes: number,
  partitions: number[],
): Promise<number[]> {
  const mib = String(Math.floor((0.9 * bytes) / MiB));
  return Promise.all(
    Array.from({ length: count }, (_, i) => {
      const argv =
        mode === 'stock'
          ? [GUEST_MEMHOG, mib]
          : [GUEST_HOTMEM_EXEC, '--partition', String(partitions[i]), '--', GUEST_MEMHOG, mib];
      return g.guest.spawn(argv, { waitFor: 'memhog ready', timeoutMs: 600_000 });
    }),
  );
}

async function kill(g: BenchGuest, pids: number[]): Promise<void> {
  for (const pid of pids) {
    await g.guest.signal(pid, 'SIGKILL');
    await g.guest.wait(pid);
  }
}

/** Reclaims the given partitions (hotmem) and unplugs down to `target`, measuring all of it. */
async function reclaim(g: BenchGuest, mode: Mode, partitions: number[], target: number) {
  const moved = await vmstatSnapshot(g.guest);
  const cpuBefore = await guestCpuMs(g.guest);
  let reclaimMs = 0;
  let offlineMs = 0;
  for (const p of mode === 'hotmem' ? partitions : []) {
    const report = await g.guest.reclaim(p);
    if (report.pagesMigrated !== 0)
      throw new Error(`partition ${p}: reclaim migrated ${report.pagesMigrated} pages`);
    reclaimMs += report.elapsedNs / 1e6;
    offlineMs += report.durationNs / 1e6;
  }
  const unplugMs = await g.vm.virtioMem.resize(target, { timeoutMs: 600_000 });
  const cpuAfter = await guestCpuMs(g.guest);
  return {
    reclaimMs,
    offlineMs,
    unplugMs,
    pagesMigrated: await moved('pgmigrate_success'),
    guestCpuMs: cpuAfter - cpuBefore,
  };
}

/** The size of one instance, and so of one partition, in a run reclaiming `size`. */
function instanceSize(size: number): number {
  return Math.max(size / 2, BLOCK);
}

// Each scenario reclaims the same partitions, one per exiting instance.

async function untouched(g: BenchGuest, mode: Mode, size: number): Promise<Sample> {
  const placed = await plug(g, size, mode, instanceSize(size) / BLOCK);
  const measured = await reclaim(g, mode, placed.partitions, 0);
  return { mode, scenario: 'untouched', sizeBytes: size, plugMs: placed.ms, ...measured };
}

/**
 * A scale-down: S/I instances and `staying` more fault their memory in together, the S/I exit
 * and their S is reclaimed (measured) while the others keep running; then those go too.
 */
async function scaleDown(g: BenchGuest, mode: Mode, size: number, staying: number) {
  const instance = instanceSize(size);
  const exiting = size / instance;
  const placed = await plug(g, size + staying * instance, mode, instance / BLOCK);
  const pids = await startInstances(g, mode, exiting + staying, instance, placed.partitions);
  await kill(g, pids.slice(0, exiting));
  const measured = await reclaim(g, mode, placed.partitions.slice(0, exiting), staying * instance);
  if (staying > 0) {
    await kill(g, pids.slice(exiting));
    await reclaim(g, mode, placed.partitions.slice(exiting), 0);
  }
  return { plugMs: placed.ms, ...measured };
}

async function idle(g: BenchGuest, mode: Mode, size: number): Promise<Sample> {
  return { mode, scenario: 'idle', sizeBytes: size, ...(await scaleDown(g, mode, size, 0)) };
}

async function loaded(g: BenchGuest, mode: Mode, size: number): Promise<Sample> {
  return { mode, scenario: 'loaded', sizeBytes: size, ...(await scaleDown(g, mode, size, 2)) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '128M,256M,512M,1G,2G' },
      modes: { type: 'string', default: hasPatches(HOTMEM_SERIES) ? 'stock,hotmem' : 'stock' },
      repeat: { type: 'string', default: '1' },
      out: { type: 'string', default: join(projectRoot(), 'bench-results') },
      kernel: { type: 'string' },
    },
  });
  const sizes = values.sizes.split(',').map(blockMultiple);
  const modes = values.modes.split(',').map((m) => {
    if (m !== 'stock' && m !== 'hotmem')
      throw new Error(`--modes: '${m}' is neither stock nor hotmem`);
    return m as Mode;
  });
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20)
    throw new Error(`--repeat: '${values.repeat}' is not 1..20`);
  const largest = Math.max(...sizes);

  const kernel =
    values.kernel ?? (modes.includes('hotmem') ? await buildHotMemKernel() : await buildKernel());
  const booted = await bootGuest(kernel, {
    hotplugRegion: 2 * largest + 2 * BLOCK,
    log: (l) => console.error(l),
  });
  const g: BenchGuest = await plugGuest(booted);
  const samples: Sample[] = [];
  let failure: unknown;
  try {
    for (let run = 0; run < repeat; run++) {
      for (const size of sizes) {
        for (const scenario of [untouched, idle, loaded]) {
          // Every other run the other mode goes first: whatever one mode's measurement leaves
          // behind (stock's loaded scale-down moves GiBs) must not always fall on the other.
          for (const mode of run % 2 ? [...modes].reverse() : modes) {
            const s = await scenario(g, mode, size);
            console.error(
              `${s.mode} ${s.scenario} ${s.sizeBytes / MiB} MiB: plug ${s.plugMs.toFixed(1)} ms, reclaim ${s.reclaimMs.toFixed(1)} ms (offlining ${s.offlineMs.toFixed(1)}), ` +
                `unplug ${s.unplugMs.toFixed(1)} ms, ${s.pagesMigrated} pages migrated, guest CPU ${s.guestCpuMs} ms`,
            );
            samples.push(s);
          }
        }
      }
    }
  } catch (err) {
    // Keep what was measured: the samples so far are written below, then the run fails.
    failure = err;
  } finally {
    await g.stop();
  }
  const rows = summarize(samples);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  mkdirSync(values.out, { recursive: true });
  const meta = {
    date: new Date().toISOString(),
    accel: g.vm.accel,
    kernel,
    modes,
    sizes: sizes.map((s) => s / MiB),
    repeat,
  };
  writeFileSync(
    join(values.out, `bench-${stamp}.json`),
    `${JSON.stringify({ meta, rows, samples }, null, 2)}\n`,
  );
  writeFileSync(
    join(values.out, `bench-${stamp}.svg`),
    await reclaimLatencyPlot(rows, `memory reclamation latency (${g.vm.accel})`),
  );
  console.log(table(rows));
  const lines = ratios(samples);
  if (lines.length) console.log(`\nratios (same VM, same run):\n${lines.join('\n')}`);
  console.log(`\nresults: ${join(values.out, `bench-${stamp}.{json,svg}`)}`);
  if (failure) throw failure;
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
