// Reclamation benchmark: plug and unplug latency of hot-plugged memory in one guest, idle vs
// loaded, over a range of sizes, with the pages migrated and the guest CPU time spent.
//
//   tsx scripts/bench.ts [--sizes 128M,256M,512M,1G,2G] [--repeat N] [--out DIR]
//
// idle:   plug S, then unplug S with nothing else running.
// loaded: plug 2S; four memhogs of S/2 each fault their pages in together, so their pages
//         interleave across the plugged blocks like concurrent function instances; two exit
//         (scale-down) and S is unplugged while the other two keep running.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { GuestClient } from './testbed/guest.js';
import { GUEST_MEMHOG } from './testbed/initramfs.js';
import { projectRoot } from './testbed/paths.js';
import { type Sample, summarize, svgPlot, table } from './testbed/report.js';
import { bootGuest, buildKernel, type Guest, vmstat } from './testbed/testbed.js';
import { GiB, MiB } from './testbed/vm.js';

function parseSize(text: string): number {
  const m = /^(\d+)([MG])$/i.exec(text.trim());
  if (!m?.[1] || !m[2]) throw new Error(`--sizes: '${text}' is not a size like 128M or 2G`);
  const bytes = Number(m[1]) * (m[2].toUpperCase() === 'G' ? GiB : MiB);
  if (bytes % (128 * MiB) !== 0)
    throw new Error(`--sizes: ${text} is not a multiple of the 128 MiB memory block`);
  return bytes;
}

/** Guest CPU time in ms, all CPUs, user + system (from /proc/stat; USER_HZ is 100). */
async function guestCpuMs(guest: GuestClient): Promise<number> {
  const line = (await guest.read('/proc/stat')).split('\n')[0] ?? '';
  const [, user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0)) * 10;
}

async function measureUnplug(
  g: Guest,
  target: number,
): Promise<Omit<Sample, 'mode' | 'scenario' | 'sizeBytes' | 'plugMs'>> {
  const vmBefore = await vmstat(g.guest);
  const cpuBefore = await guestCpuMs(g.guest);
  const unplugMs = await g.vm.virtioMem.resize(target, { timeoutMs: 600_000 });
  const cpuAfter = await guestCpuMs(g.guest);
  const vmAfter = await vmstat(g.guest);
  return {
    unplugMs,
    pagesMigrated: (vmAfter.pgmigrate_success ?? 0) - (vmBefore.pgmigrate_success ?? 0),
    guestCpuMs: cpuAfter - cpuBefore,
  };
}

async function idle(g: Guest, size: number): Promise<Sample> {
  const plugMs = await g.vm.virtioMem.resize(size, { timeoutMs: 120_000 });
  return {
    mode: 'stock',
    scenario: 'idle',
    sizeBytes: size,
    plugMs,
    ...(await measureUnplug(g, 0)),
  };
}

async function loaded(g: Guest, size: number): Promise<Sample> {
  const plugMs = await g.vm.virtioMem.resize(2 * size, { timeoutMs: 120_000 });
  const hogMiB = String(size / 2 / MiB);
  const hogs = await Promise.all(
    [0, 1, 2, 3].map(() =>
      g.guest.spawn([GUEST_MEMHOG, hogMiB], { waitFor: 'memhog ready', timeoutMs: 600_000 }),
    ),
  );
  for (const pid of hogs.slice(0, 2)) {
    await g.guest.signal(pid, 'SIGKILL');
    await g.guest.wait(pid);
  }
  const sample: Sample = {
    mode: 'stock',
    scenario: 'loaded',
    sizeBytes: size,
    plugMs,
    ...(await measureUnplug(g, size)),
  };
  for (const pid of hogs.slice(2)) {
    await g.guest.signal(pid, 'SIGKILL');
    await g.guest.wait(pid);
  }
  await g.vm.virtioMem.resize(0, { timeoutMs: 600_000 });
  return sample;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '128M,256M,512M,1G,2G' },
      repeat: { type: 'string', default: '1' },
      out: { type: 'string', default: join(projectRoot(), 'bench-results') },
    },
  });
  const sizes = values.sizes.split(',').map(parseSize);
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20)
    throw new Error(`--repeat: '${values.repeat}' is not 1..20`);
  const largest = Math.max(...sizes);

  const kernel = await buildKernel();
  const g = await bootGuest(kernel, {
    append: ['memhp_default_state=online_movable'],
    hotplugRegion: 2 * largest,
    log: (l) => console.error(l),
  });
  const samples: Sample[] = [];
  try {
    for (let run = 0; run < repeat; run++) {
      for (const size of sizes) {
        for (const scenario of [idle, loaded]) {
          const s = await scenario(g, size);
          console.error(
            `${s.mode} ${s.scenario} ${s.sizeBytes / MiB} MiB: plug ${s.plugMs.toFixed(1)} ms, unplug ${s.unplugMs.toFixed(1)} ms, ` +
              `${s.pagesMigrated} pages migrated, guest CPU ${s.guestCpuMs} ms`,
          );
          samples.push(s);
        }
      }
    }
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
    sizes: sizes.map((s) => s / MiB),
    repeat,
  };
  writeFileSync(
    join(values.out, `bench-${stamp}.json`),
    `${JSON.stringify({ meta, rows, samples }, null, 2)}\n`,
  );
  writeFileSync(
    join(values.out, `bench-${stamp}.svg`),
    svgPlot(rows, `virtio-mem unplug latency (${g.vm.accel})`),
  );
  console.log(table(rows));
  console.log(`\nresults: ${join(values.out, `bench-${stamp}.{json,svg}`)}`);
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
