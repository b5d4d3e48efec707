// The whole HotMem path on each patched kernel, driven from the host over QMP: plug, populate a
// partition, a bound process fills it and exits, reclaim, virtio-mem unplug — with
// pgmigrate_success unchanged. Then the same steps in stock mode on the same kernel (blocks onlined
// movable, process unbound) show the migrations HotMem avoids, and the kselftest runs. The kernels:
// the 6.12 series (what CI builds), the same with KASAN, lockdep and DEBUG_VM — where any report in
// the console fails the suite —, and the 6.6 series when HOTMEM_V6_6_SOURCE names a 6.6.9 tree.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GUEST_HOTMEM_EXEC,
  GUEST_MEMHOG,
  GUEST_MOVEPAGES,
  GUEST_PACKAGE,
} from '../../scripts/testbed/initramfs.js';
import { isStockAltmapReport, kernelReports } from '../../scripts/testbed/kernel-reports.js';
import { projectRoot } from '../../scripts/testbed/paths.js';
import {
  bootGuest,
  buildDirectory,
  buildHotMemKernel,
  buildHotMemSelftest,
  buildKernel,
  extraKernelUnavailable,
  type Guest,
  hotMemKernels,
  kernelSuiteTitle,
  resizeMeasured,
  vmstat,
  vmstatSnapshot,
} from '../../scripts/testbed/testbed.js';
import { DimmEjectRefused, GiB, MiB } from '../../scripts/testbed/vm.js';

const PLUG = 512 * MiB;
const BLOCK = 128 * MiB;
const GUEST_SELFTEST = '/usr/bin/hotmem-selftest';
const HOG_MIB = 300;
const HOTMEM_SYSFS = '/sys/kernel/mm/hotmem';
const SWAP_DISK = 64 * MiB;
// Pages that many mms share never come from a partition: the swap cache, which swap-in
// readahead fills with other processes' pages too, and KSM's merged pages.
const SHARED_PAGE_CHECKS = [
  "HOTMEM_EVENT_RELEASED after a bound swap-in, others' pages still swapped out",
  "swap readahead for a bound process keeps others' pages out of its partition",
  "KSM never maps a partition's page into an unbound process",
  'HOTMEM_EVENT_RELEASED after a bound process exited, its twins merged by KSM',
];
const ZRAM_SWAP = 128 * MiB;
// zram reads synchronously: a fault on an entry only its mm holds reads it into a new page of
// that mm, skipping the swap cache, so a bound process's own pages come back into its
// partition; entries it shares with an unbound process still go through the swap cache.
const ZRAM_SWAP_CHECKS = [
  "swap-in from zram brings a bound process's own pages back into its partition",
  'swap-in from zram keeps pages shared with an unbound process out of its partition',
];

/** The kselftest checks among `checks` that did not pass (`ok N <check>`). */
function notPassed(stdout: string, checks: string[]): string[] {
  const passed = stdout.split('\n').map((line) => /^ok \d+ (.*)$/.exec(line)?.[1]);
  return checks.filter((check) => !passed.includes(check));
}

/** Each memory block's name and state, and its zone if online, in block order. */
async function memoryBlocks(g: Guest): Promise<{ name: string; state: string; zone: string }[]> {
  const out = await g.guest.check([
    '/bin/sh',
    '-c',
    'cd /sys/devices/system/memory && for b in memory*; do echo $b $(cat $b/state) $(cat $b/valid_zones); done',
  ]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [name = '', state = '', zone = ''] = line.split(' ');
      return { name, state, zone };
    })
    .sort((a, b) => Number(a.name.slice(6)) - Number(b.name.slice(6)));
}

/**
 * The offline blocks once all `count` of them are there: virtio-mem plugs a block's sub-blocks,
 * which the device counts, before it adds the block to Linux, so a plug that the host sees done
 * may still be adding its last block. Blocks named in `excluding` do not count.
 */
async function offlineBlocks(
  g: Guest,
  count: number,
  excluding: ReadonlySet<string> = new Set(),
): Promise<string[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const blocks = (await memoryBlocks(g))
      .filter((b) => b.state === 'offline' && !excluding.has(b.name))
      .map((b) => b.name);
    if (blocks.length >= count || Date.now() > deadline) return blocks;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Onlines memory blocks (memoryN names) into HotMem partition `partition`. */
async function onlineIntoPartition(g: Guest, blocks: string[], partition: number): Promise<void> {
  for (const b of blocks)
    await g.guest.write(`/sys/devices/system/memory/${b}/state`, `online_hotmem${partition}`);
}

/** The NUMA node a memory block belongs to (its nodeN link in sysfs). */
async function blockNode(g: Guest, block: string): Promise<number> {
  const out = await g.guest.check(['/bin/ls', `/sys/devices/system/memory/${block}`]);
  const node = /^node(\d+)$/m.exec(out)?.[1];
  if (node === undefined) throw new Error(`${block} has no node link`);
  return Number(node);
}

/** A populated HotMem zone, from /proc/zoneinfo: its partition, node and page counts. */
interface PartitionZone {
  partition: number;
  node: number;
  free: number;
  present: number;
  managed: number;
}

async function partitionZones(g: Guest): Promise<PartitionZone[]> {
  const zones: PartitionZone[] = [];
  for (const zone of (await g.guest.read('/proc/zoneinfo')).split(/^(?=Node \d+, zone)/m)) {
    const head = /^Node (\d+), zone\s+HotMem(\d+)$/m.exec(zone);
    const count = (name: string) =>
      Number(new RegExp(`^\\s+${name}\\s+(\\d+)$`, 'm').exec(zone)?.[1] ?? 0);
    if (head && count('present') > 0)
      zones.push({
        partition: Number(head[2]),
        node: Number(head[1]),
        free: count('pages free'),
        present: count('present'),
        managed: count('managed'),
      });
  }
  return zones;
}

/** What movepages (scripts/testbed/guest/movepages.c) saw: pages by node and by memory block. */
interface PageMove {
  pages: number;
  notMoved: number;
  before: Record<string, number>;
  after: Record<string, number>;
  blocks: Record<string, number>;
}

/**
 * move_pages(2) of the guest process's anonymous mapping of `mib` MiB (found in its
 * /proc/PID/maps) to `node`.
 */
async function movePages(g: Guest, pid: number, mib: number, node: number): Promise<PageMove> {
  const maps = await g.guest.read(`/proc/${pid}/maps`);
  const starts = maps.split('\n').flatMap((line) => {
    const [start = '', end = ''] =
      /^([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\s*$/.exec(line)?.slice(1) ?? [];
    return Number.parseInt(end, 16) - Number.parseInt(start, 16) === mib * MiB ? [start] : [];
  });
  const [start] = starts;
  if (start === undefined || starts.length > 1)
    throw new Error(`process ${pid} has ${starts.length} anonymous mappings of ${mib} MiB`);
  const argv = [GUEST_MOVEPAGES, String(pid), start, String(mib), String(node)];
  const out = await g.guest.check(argv);
  return JSON.parse(out) as PageMove;
}

async function partitionAttr(g: Guest, partition: number, attr: string): Promise<string> {
  return (await g.guest.read(`${HOTMEM_SYSFS}/partition${partition}/${attr}`)).trim();
}

/**
 * A partition's present bytes once they reach `bytes`, or after 30 s whatever they are: the
 * device reports an unplug done when the last sub-block is gone, and virtio-mem removes the
 * emptied block (which takes it out of the partition) just after.
 */
async function presentBytes(g: Guest, partition: number, bytes: number): Promise<number> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const present = Number(await partitionAttr(g, partition, 'present_bytes'));
    if (present === bytes || Date.now() > deadline) return present;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The virtio-mem patch: virtio-mem takes memory of free partitions (all of it free, so nothing
 * migrates) and never of a bound one, whatever the host asks for.
 */
async function unplugSparesBoundPartitions(g: Guest): Promise<void> {
  const half = PLUG / 2;
  await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
  const blocks = await offlineBlocks(g, PLUG / BLOCK);
  expect(blocks.length).toBe(PLUG / BLOCK);
  await onlineIntoPartition(g, blocks.slice(0, half / BLOCK), 1);
  await onlineIntoPartition(g, blocks.slice(half / BLOCK), 2);
  const hog = await g.guest.spawn(
    [GUEST_HOTMEM_EXEC, '--partition', '1', '--', GUEST_MEMHOG, String(HOG_MIB / 2)],
    { waitFor: 'memhog ready' },
  );
  // What is not free in the bound partition holds the instance's pages. Free pages on
  // per-CPU lists count as used until something drains them (the unplug does), so only
  // the lower bound is exact.
  const instanceBytes = (HOG_MIB / 2) * MiB;
  const usedInBound = async () =>
    Number(await partitionAttr(g, 1, 'present_bytes')) -
    Number(await partitionAttr(g, 1, 'free_bytes'));
  expect(await usedInBound()).toBeGreaterThanOrEqual(instanceBytes);
  const moved = await vmstatSnapshot(g.guest);

  // Half of the plugged memory is free partition 2: virtio-mem takes it, by fake-offlining
  // pages that are all free, so nothing migrates and bound partition 1 keeps every page.
  await g.vm.virtioMem.resize(half, { timeoutMs: 120_000 });
  expect(await presentBytes(g, 2, 0)).toBe(0);
  expect(Number(await partitionAttr(g, 1, 'present_bytes'))).toBe(half);
  expect(await usedInBound()).toBeGreaterThanOrEqual(instanceBytes);
  expect(await moved('pgmigrate_success')).toBe(0);

  // Asked for the rest, virtio-mem must leave the bound partition alone: the request stays
  // unmet for as long as we watch, and the instance keeps its memory.
  await g.vm.virtioMem.setRequestedSize(0);
  await expect(g.vm.virtioMem.waitForSize(0, { timeoutMs: 5_000 })).rejects.toThrow();
  expect(await g.vm.virtioMem.size()).toBe(half);
  expect(Number(await partitionAttr(g, 1, 'present_bytes'))).toBe(half);
  expect(await moved('pgmigrate_success')).toBe(0);

  // Once the instance exits, its partition is reclaimed and virtio-mem takes the rest. The
  // new request (a config change) spares waiting for virtio-mem's retry timer.
  await g.vm.virtioMem.setRequestedSize(half);
  await g.guest.signal(hog, 'SIGKILL');
  await g.guest.wait(hog);
  const reclaim = await g.guest.reclaim(1);
  expect(reclaim.pagesMigrated).toBe(0);
  await g.vm.virtioMem.resize(0, { timeoutMs: 60_000 });
  expect(await moved('pgmigrate_success')).toBe(0);
}

// Sub Block Mode unplugs part of a free partition's block (2 MiB sub-blocks at a time). Asked
// for memory again, virtio-mem must plug other memory: refilling that block would grow the
// partition behind the back of whoever placed memory into it.
async function plugLeavesPartitionsAlone(g: Guest): Promise<void> {
  const partition = 3;
  const free = async () => Number(await partitionAttr(g, partition, 'free_bytes'));
  await g.vm.virtioMem.resize(BLOCK, { timeoutMs: 60_000 });
  const blocks = await offlineBlocks(g, 1);
  expect(blocks.length).toBeGreaterThanOrEqual(1);
  await onlineIntoPartition(g, blocks.slice(0, 1), partition);
  const populated = await free();

  await g.vm.virtioMem.resize(BLOCK / 2, { timeoutMs: 60_000 });
  const shrunk = await free();
  console.log(`partition ${partition}: ${populated} bytes free, ${shrunk} after a half unplug`);
  expect(populated - shrunk).toBeGreaterThanOrEqual(BLOCK / 2);

  await g.vm.virtioMem.resize(BLOCK, { timeoutMs: 60_000 });
  const regrown = await free();
  console.log(`partition ${partition}: ${regrown} bytes free after plugging the half again`);
  expect(regrown - shrunk).toBeLessThan(8 * MiB);
  // The memory plugged instead is a new block, offline until userspace places it.
  expect(await offlineBlocks(g, 1)).toHaveLength(1);

  await g.vm.virtioMem.resize(0, { timeoutMs: 60_000 });
  expect(await presentBytes(g, partition, 0)).toBe(0);
}

for (const kernel of hotMemKernels()) {
  describe.skipIf(kernel.unavailable !== undefined)(
    kernelSuiteTitle('HotMem partition lifecycle', kernel),
    () => {
      let g: Guest;
      let selftest: string;

      beforeAll(async () => {
        const bzImage = await buildHotMemKernel(kernel);
        selftest = buildHotMemSelftest(bzImage);
        // No memhp_default_state: plugged blocks stay offline until userspace places them.
        g = await bootGuest(bzImage, {
          hotplugRegion: 2 * GiB,
          swapDisk: SWAP_DISK,
          extraFiles: { [GUEST_SELFTEST]: selftest },
        });
      });

      afterAll(async () => {
        await g?.stop();
        if (g) expect(g.vm.kernelProblems()).toEqual([]);
      });

      it('reclaims an exited instance partition with zero page migrations', async () => {
        await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
        const blocks = await offlineBlocks(g, PLUG / BLOCK);
        expect(blocks.length).toBe(PLUG / BLOCK);
        await onlineIntoPartition(g, blocks, 0);
        expect(await partitionAttr(g, 0, 'state')).toBe('free');
        expect(Number(await partitionAttr(g, 0, 'present_bytes'))).toBe(PLUG);

        const hog = await g.guest.spawn(
          [GUEST_HOTMEM_EXEC, '--partition', '0', '--', GUEST_MEMHOG, String(HOG_MIB)],
          {
            waitFor: 'memhog ready',
          },
        );
        expect(await partitionAttr(g, 0, 'state')).toBe('bound');
        const used = PLUG - Number(await partitionAttr(g, 0, 'free_bytes'));
        expect(used).toBeGreaterThanOrEqual(HOG_MIB * MiB);

        await g.guest.signal(hog, 'SIGKILL');
        await g.guest.wait(hog);
        expect(await partitionAttr(g, 0, 'state')).toBe('free');
        expect(Number(await partitionAttr(g, 0, 'free_bytes'))).toBe(PLUG);

        const moved = await vmstatSnapshot(g.guest);
        const reclaim = JSON.parse(
          await g.guest.check([
            '/usr/bin/node',
            `${GUEST_PACKAGE}/dist/lib/cli.js`,
            'reclaim',
            '0',
            '--json',
          ]),
        ) as { blocks: number; bytes: number; pagesMigrated: number };
        const ms = await g.vm.virtioMem.resize(0, { timeoutMs: 60_000 });
        const migrated = await moved('pgmigrate_success');

        console.log(
          `hotmem reclaim ${JSON.stringify(reclaim)}; virtio-mem unplug ${ms.toFixed(1)} ms`,
        );
        expect(reclaim).toMatchObject({ blocks: blocks.length, bytes: PLUG, pagesMigrated: 0 });
        expect(migrated).toBe(0);
        expect(await g.vm.virtioMem.size()).toBe(0);
      });

      it('migrates the same load in stock mode on the same kernel', async () => {
        await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
        for (const b of await offlineBlocks(g, PLUG / BLOCK))
          await g.guest.write(`/sys/devices/system/memory/${b}/state`, 'online_movable');
        const hog = await g.guest.spawn([GUEST_MEMHOG, String(HOG_MIB)], {
          waitFor: 'memhog ready',
        });
        const { ms, moved } = await resizeMeasured(g, 0, 240_000);
        const migrated = await moved('pgmigrate_success');

        console.log(
          `stock unplug on the patched kernel: ${ms.toFixed(1)} ms, pgmigrate_success +${migrated}`,
        );
        expect(migrated).toBeGreaterThan(0);
        await g.guest.signal(hog, 'SIGKILL');
        await g.guest.wait(hog);
      });

      it('lets virtio-mem unplug a free partition, without migrating, and never a bound one', () =>
        unplugSparesBoundPartitions(g));

      it('never grows a partition when virtio-mem plugs memory again', () =>
        plugLeavesPartitionsAlone(g));

      it('passes the HotMem kselftest with plugged memory to populate partitions from, swap and KSM', async () => {
        await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
        await g.guest.check(['/bin/sh', '-c', 'mkswap /dev/vda && swapon /dev/vda']);
        const r = await g.guest.run([GUEST_SELFTEST], { timeoutMs: 600_000 });
        console.log(r.stdout);
        expect(r.stdout).toMatch(/^# swap: [1-9]\d* of \d+ worker pages share/m);
        expect(notPassed(r.stdout, SHARED_PAGE_CHECKS)).toEqual([]);
        expect(r.stdout).toMatch(/^# Totals: pass:[1-9]\d* fail:0 /m);
        expect(r.code).toBe(0);
      });

      it('passes the HotMem kselftest again with swap on zram', async () => {
        // The first run leaves its blocks in free partitions: virtio-mem takes them back, and
        // plugs fresh offline ones for this run.
        await g.vm.virtioMem.resize(0, { timeoutMs: 120_000 });
        await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
        await offlineBlocks(g, PLUG / BLOCK);
        await g.guest.check([
          '/bin/sh',
          '-c',
          `swapoff /dev/vda && echo ${ZRAM_SWAP} > /sys/block/zram0/disksize && mkswap /dev/zram0 && swapon /dev/zram0`,
        ]);
        const r = await g.guest.run([GUEST_SELFTEST], { timeoutMs: 600_000 });
        console.log(r.stdout);
        expect(r.stdout).toMatch(/^# swap on zram: the worker's faults read [1-9]\d* pages/m);
        expect(notPassed(r.stdout, ZRAM_SWAP_CHECKS)).toEqual([]);
        expect(r.stdout).toMatch(/^# Totals: pass:[1-9]\d* fail:0 /m);
        expect(r.code).toBe(0);
      });
    },
  );
}

// Big Block Mode: a device block larger than a memory block makes virtio-mem add, and unplug,
// whole 256 MiB big blocks; it fake-offlines a big block's online memory before removing it.
for (const kernel of hotMemKernels()) {
  describe.skipIf(kernel.unavailable !== undefined)(
    kernelSuiteTitle('virtio-mem in Big Block Mode', kernel),
    () => {
      let g: Guest;

      beforeAll(async () => {
        g = await bootGuest(await buildHotMemKernel(kernel), {
          hotplugRegion: 2 * GiB,
          hotplugBlockSize: 2 * BLOCK,
        });
      });

      afterAll(async () => {
        await g?.stop();
        if (g) expect(g.vm.kernelProblems()).toEqual([]);
      });

      it('unplugs whole free partitions, without migrating, and never a bound one', async () => {
        expect(g.vm.consoleLog).toMatch(/virtio_mem virtio\d+: big block size: 0x10000000/);
        await unplugSparesBoundPartitions(g);
      });
    },
  );
}

const NODE_RECLAIM_SWAP = 512 * MiB;
const NODE_RECLAIM_BOUND_MIB = 96;
/** Node 0's ordinary memory the filler leaves free, below what the pressure asks for. */
const NODE_RECLAIM_HEADROOM = 48 * MiB;
const NODE_RECLAIM_PRESSURE_MIB = 256;
/** Node 1's movable memory, room for all the pressure. */
const NODE_RECLAIM_FALLBACK = 3 * BLOCK;
/** vm.zone_reclaim_mode: reclaim the node (1), write dirty pages out (2), swap (4). */
const RECLAIM_ZONE_WRITE_UNMAP = 1 | 2 | 4;

/** A node's MemFree (/sys/devices/system/node/nodeN/meminfo), bytes. */
async function nodeMemFree(g: Guest, node: number): Promise<number> {
  const meminfo = await g.guest.read(`/sys/devices/system/node/node${node}/meminfo`);
  const kib = new RegExp(`^Node ${node} MemFree:\\s+(\\d+) kB$`, 'm').exec(meminfo)?.[1];
  if (kib === undefined) throw new Error(`node ${node}'s meminfo gives no MemFree`);
  return Number(kib) * 1024;
}

/** A guest process's memory figure from /proc/PID/status (VmSwap, RssAnon), KiB. */
async function statusKiB(g: Guest, pid: number, field: 'VmSwap' | 'RssAnon'): Promise<number> {
  const status = await g.guest.read(`/proc/${pid}/status`);
  const kib = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1];
  if (kib === undefined) throw new Error(`process ${pid} has no ${field}`);
  return Number(kib);
}

// Two nodes, the second with only hot-plugged memory: the kselftest's migration checks need a
// node without the partition's memory to ask for, and skip on a one-node guest. Whatever a
// bound process or NUMA balancing asks for, a partition's pages must stay in it. The guest also
// has room for a DIMM, which QEMU puts on node 0: with a virtio-mem block of node 1, one
// partition then has a zone on each node, and a partition on node 0 shares that node's LRU
// lists with ordinary memory, for node_reclaim() to pass over (with the swap disk).
const MIGRATION_CHECKS = [
  'move_pages() to another node leaves partition pages in it',
  'mbind(MPOL_MF_MOVE) leaves partition pages in it',
  'set_mempolicy(MPOL_BIND) to another node: faults still come from the partition',
  'migrate_pages() leaves partition pages in it',
  'NUMA balancing leaves partition pages in it',
];

for (const kernel of hotMemKernels()) {
  describe.skipIf(kernel.unavailable !== undefined)(
    kernelSuiteTitle('A two-node guest', kernel),
    () => {
      let g: Guest;

      beforeAll(async () => {
        const bzImage = await buildHotMemKernel(kernel);
        g = await bootGuest(bzImage, {
          hotplugRegion: 2 * GiB,
          twoNodes: true,
          dimmRegion: BLOCK,
          swapDisk: NODE_RECLAIM_SWAP,
          extraFiles: { [GUEST_SELFTEST]: buildHotMemSelftest(bzImage) },
        });
      });

      afterAll(async () => {
        await g?.stop();
        if (g) expect(g.vm.kernelProblems()).toEqual([]);
      });

      it('keeps partition pages in their partition through every migration', async () => {
        await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
        const r = await g.guest.run([GUEST_SELFTEST], { timeoutMs: 600_000 });
        console.log(r.stdout);
        expect(r.stdout).toMatch(/^# migration: partition0 on node 1, target node 0$/m);
        expect(notPassed(r.stdout, MIGRATION_CHECKS)).toEqual([]);
        expect(r.stdout).toMatch(/^# Totals: pass:[1-9]\d* fail:0 /m);
        expect(r.code).toBe(0);
      });

      it('fills one partition on both nodes, moves pages between them only within it, then reclaims it whole without migrating', async () => {
        const partition = 5;
        // The kselftest left blocks behind: this test onlines only the two it adds.
        const before = new Set((await memoryBlocks(g)).map((b) => b.name));
        await g.vm.virtioMem.resize(PLUG + BLOCK, { timeoutMs: 60_000 });
        await g.vm.plugDimm('dimm0', BLOCK);
        const blocks = await offlineBlocks(g, 2, before);
        const blockNodes = await Promise.all(blocks.map((b) => blockNode(g, b)));
        expect([...blockNodes].sort()).toEqual([0, 1]);
        await onlineIntoPartition(g, blocks, partition);
        const zones = async () =>
          (await partitionZones(g)).filter((z) => z.partition === partition);
        expect((await zones()).map((z) => [z.node, z.present * 4096])).toEqual([
          [0, BLOCK],
          [1, BLOCK],
        ]);

        // More than one block holds: the partition's zonelist takes the rest from the other node's.
        const hogMiB = 200;
        const hog = await g.guest.spawn(
          [GUEST_HOTMEM_EXEC, '--partition', String(partition), '--', GUEST_MEMHOG, String(hogMiB)],
          { waitFor: 'memhog ready' },
        );
        const used = (await zones()).map((z) => ({
          node: z.node,
          bytes: (z.managed - z.free) * 4096,
        }));
        console.log(
          `partition on two nodes: ${used.map((z) => `node ${z.node} ${(z.bytes / MiB).toFixed(1)} MiB`).join(', ')} in use`,
        );
        expect(used.every((z) => z.bytes >= 8 * MiB)).toBe(true);
        expect(used.reduce((sum, z) => sum + z.bytes, 0)).toBeGreaterThanOrEqual(hogMiB * MiB);
        expect(await partitionAttr(g, partition, 'spilled_pages')).toBe('0');

        // move_pages() to node 0 takes each target page from the partition's zone there
        // (hotmem_alloc_migration_target()): pages move until that zone is full, the rest stay
        // where they are, and not one leaves the partition's blocks.
        const migrated = await vmstatSnapshot(g.guest);
        const move = await movePages(g, hog, hogMiB, 0);
        const blockIds = blocks.map((b) => b.replace('memory', ''));
        const movedPages = (move.after['0'] ?? 0) - (move.before['0'] ?? 0);
        console.log(
          `move_pages() to node 0: ${(movedPages / 256).toFixed(1)} MiB moved, ${move.notMoved} folios not (${JSON.stringify(move.after)} pages by node)`,
        );
        expect(move.pages).toBe((hogMiB * MiB) / 4096);
        expect(Object.keys(move.after).sort()).toEqual(['0', '1']);
        expect(movedPages).toBeGreaterThanOrEqual((8 * MiB) / 4096);
        // 200 MiB do not fit in node 0's 128 MiB of the partition.
        expect(move.notMoved).toBeGreaterThan(0);
        expect(Object.keys(move.blocks).sort()).toEqual([...blockIds].sort());
        expect(move.blocks[blockIds[blockNodes.indexOf(0)] ?? 'none']).toBe(move.after['0']);
        expect(await migrated('pgmigrate_success')).toBeGreaterThanOrEqual(movedPages);
        expect(await partitionAttr(g, partition, 'spilled_pages')).toBe('0');

        await g.guest.signal(hog, 'SIGKILL');
        await g.guest.wait(hog);
        expect(await partitionAttr(g, partition, 'state')).toBe('free');
        // Every page back in the buddy allocator of its node's zone once the release drained them.
        await expect
          .poll(async () => (await zones()).every((z) => z.free === z.managed))
          .toBe(true);
        const moved = await vmstatSnapshot(g.guest);
        const reclaim = await g.guest.reclaim(partition);
        expect(reclaim).toMatchObject({ blocks: 2, bytes: 2 * BLOCK, pagesMigrated: 0 });
        expect(await moved('pgmigrate_success')).toBe(0);
        expect(await partitionAttr(g, partition, 'state')).toBe('empty');
        await g.vm.unplugDimm('dimm0', 60_000);
      });

      // vm.zone_reclaim_mode makes an allocation reclaim its own node (node_reclaim()) before
      // it falls back to another. A partition on that node has its pages on the node's LRU
      // lists, here among the oldest there; node_reclaim() must pass over them (its
      // reclaim_idx is the request's highest zone), so a bound process loses no page to swap
      // while its unbound twin, started just after it, does.
      it('keeps node_reclaim() out of a partition on the node it reclaims', async () => {
        const partition = 6;
        const onNode0 = (argv: string[]) => ['/usr/bin/taskset', '-c', '0', ...argv];
        await g.guest.check(['/bin/sh', '-c', 'mkswap /dev/vda && swapon /dev/vda']);

        // Node 1: movable memory for node 0's allocations to fall back to.
        const before = new Set((await memoryBlocks(g)).map((b) => b.name));
        const deviceSize = await g.vm.virtioMem.size();
        await g.vm.virtioMem.resize(deviceSize + NODE_RECLAIM_FALLBACK, { timeoutMs: 60_000 });
        const movable = await offlineBlocks(g, NODE_RECLAIM_FALLBACK / BLOCK, before);
        expect(movable).toHaveLength(NODE_RECLAIM_FALLBACK / BLOCK);
        for (const b of movable) {
          expect(await blockNode(g, b)).toBe(1);
          await g.guest.write(`/sys/devices/system/memory/${b}/state`, 'online_movable');
        }

        // Node 0: a partition of one DIMM block, filled first by the bound process.
        await g.vm.plugDimm('dimm0', BLOCK);
        const [dimmBlock] = await offlineBlocks(g, 1, new Set([...before, ...movable]));
        expect(dimmBlock && (await blockNode(g, dimmBlock))).toBe(0);
        await onlineIntoPartition(g, [dimmBlock ?? ''], partition);
        const bound = await g.guest.spawn(
          onNode0([
            GUEST_HOTMEM_EXEC,
            '--partition',
            String(partition),
            '--',
            GUEST_MEMHOG,
            String(NODE_RECLAIM_BOUND_MIB),
          ]),
          { waitFor: 'memhog ready' },
        );
        const [zone] = (await partitionZones(g)).filter((z) => z.partition === partition);
        expect(zone?.node).toBe(0);
        const partitionFree = (zone?.free ?? 0) * 4096;
        const boundRss = await statusKiB(g, bound, 'RssAnon');
        // Its unbound twin, as old on node 0's LRU lists: what node_reclaim() does take.
        const twin = await g.guest.spawn(onNode0([GUEST_MEMHOG, String(NODE_RECLAIM_BOUND_MIB)]), {
          waitFor: 'memhog ready',
        });

        // Then unbound memory on node 0 until little of its ordinary memory is free.
        const ordinaryFree = (await nodeMemFree(g, 0)) - partitionFree;
        const fillerMib = Math.floor((ordinaryFree - NODE_RECLAIM_HEADROOM) / MiB);
        expect(fillerMib).toBeGreaterThan(128);
        const filler = await g.guest.spawn(onNode0([GUEST_MEMHOG, String(fillerMib)]), {
          waitFor: 'memhog ready',
          timeoutMs: 300_000,
        });

        await g.guest.write('/proc/sys/vm/zone_reclaim_mode', String(RECLAIM_ZONE_WRITE_UNMAP));
        const countersBefore = await vmstat(g.guest);
        const pressure = await g.guest.spawn(
          onNode0([GUEST_MEMHOG, String(NODE_RECLAIM_PRESSURE_MIB)]),
          { waitFor: 'memhog ready', timeoutMs: 300_000 },
        );
        // One reading for all the counters: each vmstatSnapshot() question reads it again.
        const counters = await vmstat(g.guest);
        const moved = (counter: string) =>
          (counters[counter] ?? 0) - (countersBefore[counter] ?? 0);
        const seen = {
          boundSwapKiB: await statusKiB(g, bound, 'VmSwap'),
          twinSwapKiB: await statusKiB(g, twin, 'VmSwap'),
          fillerSwapKiB: await statusKiB(g, filler, 'VmSwap'),
          pswpout: moved('pswpout'),
          pgstealDirect: moved('pgsteal_direct'),
          zoneReclaimSuccess: moved('zone_reclaim_success'),
          zoneReclaimFailed: moved('zone_reclaim_failed'),
          // Direct reclaim by the page allocator itself: the pressure's page tables and other
          // kernel memory can only come from node 0, node 1 having only ZONE_MOVABLE.
          allocStalls: ['dma', 'dma32', 'normal', 'movable']
            .map((z) => moved(`allocstall_${z}`))
            .reduce((sum, n) => sum + n, 0),
          node1FreeMib: Math.round((await nodeMemFree(g, 1)) / MiB),
        };
        console.log(
          `node_reclaim(): ${fillerMib} MiB filler, ${NODE_RECLAIM_PRESSURE_MIB} MiB pressure on node 0: ${JSON.stringify(seen)}`,
        );
        // Node 0 was reclaimed, the filler and the bound process's unbound twin swapped.
        expect(seen.pswpout).toBeGreaterThan(0);
        expect(seen.fillerSwapKiB).toBeGreaterThan(0);
        expect(seen.twinSwapKiB).toBeGreaterThan(0);
        expect(seen.pgstealDirect).toBeGreaterThan(0);
        // By node_reclaim(), where the kernel counts its outcomes (6.12 does; 6.6 counts only
        // its failures).
        if (counters.zone_reclaim_success !== undefined)
          expect(seen.zoneReclaimSuccess).toBeGreaterThan(0);
        // Not one page of the bound process left its partition or its memory.
        expect(seen.boundSwapKiB).toBe(0);
        expect(await statusKiB(g, bound, 'RssAnon')).toBe(boundRss);
        expect(await partitionAttr(g, partition, 'spilled_pages')).toBe('0');

        await g.guest.write('/proc/sys/vm/zone_reclaim_mode', '0');
        for (const pid of [pressure, filler, twin, bound]) {
          await g.guest.signal(pid, 'SIGKILL');
          await g.guest.wait(pid);
        }
        await g.guest.check(['/sbin/swapoff', '/dev/vda']);
        expect(await partitionAttr(g, partition, 'state')).toBe('free');
        expect(await g.guest.reclaim(partition)).toMatchObject({ blocks: 1, pagesMigrated: 0 });
        await g.vm.unplugDimm('dimm0', 60_000);
        await g.vm.virtioMem.resize(deviceSize, { timeoutMs: 120_000 });
      });
    },
  );
}

// memory_hotplug.memmap_on_memory puts a hot-plugged block's memory map (struct pages) on the
// block's own first pages: online, they belong to the block's zone, counted present but never
// managed nor free. A partition of such blocks must still count as released when its instance
// exits (its free pages then equal its managed ones, not its present ones), be reclaimed
// without migration, and go back to the host whole. virtio-mem does not use memmap_on_memory;
// ACPI-hot-plugged DIMMs do, so this guest gets two, one block each: 6.6 puts the memory map
// on the memory only for a request of exactly one block (6.12 splits larger ones).
// "force" pads each block's memory map to whole pageblocks, which 6.6 needs here: without
// HugeTLB its pageblocks are 4 MiB, twice a block's memory map.
const DIMMS = ['dimm0', 'dimm1'];
const DIMM = BLOCK;
const PARTITION_BYTES = DIMMS.length * DIMM;
// The memory map of one block: a 64-byte struct page per 4 KiB page, in whole pageblocks.
const blockMemmap = (pageblockBytes: number) =>
  Math.ceil(((BLOCK / 4096) * 64) / pageblockBytes) * pageblockBytes;

/** The guest's pageblock size, from /proc/pagetypeinfo. */
async function pageblockBytes(g: Guest): Promise<number> {
  const order = /^Page block order: (\d+)$/m.exec(await g.guest.read('/proc/pagetypeinfo'))?.[1];
  if (order === undefined) throw new Error('/proc/pagetypeinfo gives no page block order');
  return 4096 * 2 ** Number(order);
}

for (const kernel of hotMemKernels()) {
  describe.skipIf(kernel.unavailable !== undefined)(
    kernelSuiteTitle('A partition on DIMMs with memmap_on_memory', kernel),
    () => {
      let g: Guest;
      const partition = 4;

      beforeAll(async () => {
        g = await bootGuest(await buildHotMemKernel(kernel), {
          hotplugRegion: 2 * GiB,
          dimmRegion: PARTITION_BYTES,
          append: ['memory_hotplug.memmap_on_memory=force'],
        });
      });

      afterAll(async () => {
        await g?.stop();
        // Stock 6.6.9 warns when it removes a DIMM whose memory map was on it (see
        // isStockAltmapReport()), HotMem or not: that one report is let through there.
        const stock = kernel.series.endsWith('v6.6') ? isStockAltmapReport : () => false;
        if (g) expect(kernelReports(g.vm.consoleLog).filter((r) => !stock(r))).toEqual([]);
      });

      it('releases, reclaims and ejects it whole, and refuses the eject while it is bound', async () => {
        expect(await g.guest.read('/sys/module/memory_hotplug/parameters/memmap_on_memory')).toBe(
          'force\n',
        );
        for (const dimm of DIMMS) await g.vm.plugDimm(dimm, DIMM);
        const blocks = await offlineBlocks(g, PARTITION_BYTES / BLOCK);
        expect(blocks).toHaveLength(PARTITION_BYTES / BLOCK);
        await onlineIntoPartition(g, blocks, partition);
        const present = Number(await partitionAttr(g, partition, 'present_bytes'));
        const free = async () => Number(await partitionAttr(g, partition, 'free_bytes'));
        const managed = await free();
        // Proof that the memory map is on the DIMM: present in the partition, never free.
        expect(present).toBe(PARTITION_BYTES);
        const memmap = blockMemmap(await pageblockBytes(g));
        console.log(`memmap_on_memory DIMMs: ${memmap / MiB} MiB of memory map per block`);
        expect(present - managed).toBe((PARTITION_BYTES / BLOCK) * memmap);

        const hogMiB = 200;
        const hog = await g.guest.spawn(
          [GUEST_HOTMEM_EXEC, '--partition', String(partition), '--', GUEST_MEMHOG, String(hogMiB)],
          { waitFor: 'memhog ready' },
        );
        expect(await partitionAttr(g, partition, 'state')).toBe('bound');
        expect(managed - (await free())).toBeGreaterThanOrEqual(hogMiB * MiB);

        // The host takes a DIMM back while the instance runs: the guest must refuse, and keep
        // every page of the bound partition.
        const refused = await g.vm.unplugDimm('dimm1', 60_000).then(
          () => undefined,
          (err: unknown) => err,
        );
        console.log(`memmap_on_memory DIMMs, eject while bound: ${String(refused)}`);
        expect(refused).toBeInstanceOf(DimmEjectRefused);
        expect(await partitionAttr(g, partition, 'state')).toBe('bound');
        expect(Number(await partitionAttr(g, partition, 'present_bytes'))).toBe(PARTITION_BYTES);
        expect((await memoryBlocks(g)).filter((b) => blocks.includes(b.name))).toEqual(
          blocks.map((name) => ({ name, state: 'online', zone: expect.any(String) })),
        );

        await g.guest.signal(hog, 'SIGKILL');
        await g.guest.wait(hog);
        expect(await partitionAttr(g, partition, 'state')).toBe('free');
        expect(await free()).toBe(managed);

        const moved = await vmstatSnapshot(g.guest);
        const reclaim = await g.guest.reclaim(partition);
        console.log(`memmap_on_memory DIMMs: reclaim ${JSON.stringify(reclaim)}`);
        expect(reclaim).toMatchObject({
          blocks: PARTITION_BYTES / BLOCK,
          bytes: PARTITION_BYTES,
          pagesMigrated: 0,
        });
        expect(await moved('pgmigrate_success')).toBe(0);
        expect(Number(await partitionAttr(g, partition, 'present_bytes'))).toBe(0);

        for (const dimm of DIMMS) await g.vm.unplugDimm(dimm, 60_000);
        const left = (await memoryBlocks(g)).filter((b) => blocks.includes(b.name));
        expect(left).toEqual([]);
      });
    },
  );
}

// memory_hotplug.online_policy=auto-movable keeps MOVABLE:KERNEL memory within a ratio, and
// lets a virtio-mem device's own kernel memory raise its share of MOVABLE. Partition memory
// serves no kernel allocation: with a partition in the device, as many of its next blocks
// must go MOVABLE as without one. At this ratio, a 1 GiB guest onlines the next four blocks
// Movable, Movable, Normal, Normal; counting 256 MiB of partition as kernel memory makes the
// third Movable as well.
const AUTO_MOVABLE_RATIO = 32;
const PARTITION_MEMORY = 2 * BLOCK;
const AUTO_ONLINED = 4 * BLOCK;

/** The zones the auto-movable policy onlines AUTO_ONLINED of plugged memory to. */
async function autoOnlinedZones(bzImage: string, partitionMemory: number): Promise<string[]> {
  const g = await bootGuest(bzImage, { hotplugRegion: 2 * GiB });
  try {
    if (partitionMemory > 0) {
      await g.vm.virtioMem.resize(partitionMemory, { timeoutMs: 60_000 });
      await onlineIntoPartition(g, await offlineBlocks(g, partitionMemory / BLOCK), 0);
      expect(await partitionAttr(g, 0, 'present_bytes')).toBe(String(partitionMemory));
    }
    const params = '/sys/module/memory_hotplug/parameters';
    await g.guest.write(`${params}/online_policy`, 'auto-movable');
    await g.guest.write(`${params}/auto_movable_ratio`, String(AUTO_MOVABLE_RATIO));
    await g.guest.write('/sys/devices/system/memory/auto_online_blocks', 'online');
    const before = new Set((await memoryBlocks(g)).map((b) => b.name));
    await g.vm.virtioMem.resize(partitionMemory + AUTO_ONLINED, { timeoutMs: 60_000 });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const added = (await memoryBlocks(g)).filter((b) => !before.has(b.name));
      if (added.length === AUTO_ONLINED / BLOCK && added.every((b) => b.state === 'online'))
        return added.map((b) => b.zone);
      if (Date.now() > deadline)
        throw new Error(`blocks added: ${added.map((b) => `${b.name} ${b.state}`).join(', ')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await g.stop();
    expect(g.vm.kernelProblems()).toEqual([]);
  }
}

for (const kernel of hotMemKernels().filter((k) => !k.debug)) {
  describe.skipIf(kernel.unavailable !== undefined)(
    kernelSuiteTitle('The auto-movable online policy', kernel),
    () => {
      let bzImage: string;

      beforeAll(async () => {
        bzImage = await buildHotMemKernel(kernel);
      });

      it('onlines as much memory movable with a partition in the device as without', async () => {
        const without = await autoOnlinedZones(bzImage, 0);
        const withPartition = await autoOnlinedZones(bzImage, PARTITION_MEMORY);
        console.log(
          `auto-movable, ratio ${AUTO_MOVABLE_RATIO}: without a partition ${without.join(' ')}; with ${PARTITION_MEMORY / MiB} MiB of partition ${withPartition.join(' ')}`,
        );
        // The ratio must leave the policy a choice to make, or the comparison shows nothing
        expect(without).toContain('Movable');
        expect(without).toContain('Normal');
        const movable = (zones: string[]) => zones.filter((z) => z === 'Movable').length;
        expect(movable(withPartition)).toBe(movable(without));
      }, 600_000);
    },
  );
}

// virtio-mem as a module (scripts/kernel/modular.config), as distribution kernels may build it:
// the kernel must link it (every symbol the series has it use exported), and the module must
// behave as the built-in driver does, through a first load, an unload once its memory is gone
// and a second load. An extra kernel: built only when HOTMEM_EXTRA_KERNELS allows.
const MODULE = '/lib/modules/virtio_mem.ko';

for (const kernel of hotMemKernels().filter((k) => !k.debug)) {
  const modular = {
    source: kernel.source,
    patches: kernel.series,
    configs: [join(projectRoot(), 'scripts/kernel/modular.config')],
  };
  const unavailable = kernel.unavailable ?? extraKernelUnavailable('modular virtio-mem', modular);
  describe.skipIf(unavailable !== undefined)(
    kernelSuiteTitle('virtio-mem as a module', {
      name: `${kernel.name} + modular.config`,
      unavailable,
    }),
    () => {
      let g: Guest;

      beforeAll(async () => {
        const bzImage = await buildKernel(modular);
        g = await bootGuest(bzImage, {
          hotplugRegion: 2 * GiB,
          extraFiles: {
            [MODULE]: join(buildDirectory(bzImage), 'drivers/virtio/virtio_mem.ko'),
          },
        });
      });

      afterAll(async () => {
        await g?.stop();
        if (g) expect(g.vm.kernelProblems()).toEqual([]);
      });

      it('spares bound partitions, unloads once its memory is gone, and works loaded again', async () => {
        // Not loaded, nothing answers the device: a request goes unmet.
        await g.vm.virtioMem.setRequestedSize(BLOCK);
        await expect(g.vm.virtioMem.waitForSize(BLOCK, { timeoutMs: 3_000 })).rejects.toThrow();
        await g.vm.virtioMem.setRequestedSize(0);

        const bootBlocks = (await memoryBlocks(g)).map((b) => b.name);
        await g.guest.check(['/sbin/insmod', MODULE]);
        await unplugSparesBoundPartitions(g);
        await plugLeavesPartitionsAlone(g);
        // Every hot-plugged block is gone: the driver's remove has nothing to leave behind.
        expect((await memoryBlocks(g)).map((b) => b.name)).toEqual(bootBlocks);
        await g.guest.check(['/sbin/rmmod', 'virtio_mem']);
        expect(g.vm.consoleLog).not.toContain('device still has system memory added');

        await g.guest.check(['/sbin/insmod', MODULE]);
        await g.vm.virtioMem.resize(BLOCK, { timeoutMs: 60_000 });
        const blocks = await offlineBlocks(g, 1);
        await onlineIntoPartition(g, blocks, 7);
        const moved = await vmstatSnapshot(g.guest);
        await g.vm.virtioMem.resize(0, { timeoutMs: 60_000 });
        expect(await presentBytes(g, 7, 0)).toBe(0);
        expect(await moved('pgmigrate_success')).toBe(0);
      });
    },
  );
}
