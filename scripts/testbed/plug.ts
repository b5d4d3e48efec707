// Plugging memory into a test-bed guest the way a FaaS host does: the host asks virtio-mem for
// more, the guest onlines the new memory blocks as they arrive (no udev in the guest), movable
// for stock use or into HotMem partitions. Shared by the benchmarks, so that every one of them
// plugs, onlines and times memory the same way.
import type { GuestClient } from './guest.js';
import type { Guest } from './testbed.js';
import { MiB } from './vm.js';

/** The guest's memory block (block_size_bytes under QEMU's x86_64 guests). */
export const BLOCK = 128 * MiB;

/** How new blocks are onlined: movable (stock use), or into HotMem partitions. */
export type Onlining = 'stock' | 'hotmem';

/** A guest, and how many memory blocks it had before anything was plugged. */
export type PlugGuest = Guest & { bootBlocks: number };

export async function memoryBlockCount(guest: GuestClient): Promise<number> {
  const out = await guest.check([
    '/bin/sh',
    '-c',
    'ls -d /sys/devices/system/memory/memory* | wc -l',
  ]);
  return Number(out.trim());
}

/** A booted guest with its boot-time block count recorded, before anything is plugged. */
export async function plugGuest(g: Guest): Promise<PlugGuest> {
  return { ...g, bootBlocks: await memoryBlockCount(g.guest) };
}

/**
 * Waits until the guest has removed every hot-plugged block. virtio-mem removes a block only
 * after its last sub-block is unplugged, a moment after the device reports size 0; plugging
 * before that refills the old block, online in its old zone, instead of adding offline blocks.
 */
export async function untilUnplugged(g: PlugGuest): Promise<void> {
  const deadline = performance.now() + 60_000;
  let blocks = await memoryBlockCount(g.guest);
  while (blocks > g.bootBlocks) {
    if (performance.now() > deadline)
      throw new Error(`${blocks - g.bootBlocks} hot-plugged blocks still present after 60 s`);
    await new Promise((r) => setTimeout(r, 100));
    blocks = await memoryBlockCount(g.guest);
  }
}

/**
 * Plugs `total` bytes and onlines the blocks as they arrive: movable (stock), or into consecutive
 * partitions of `blocksEach` blocks from partition 0 (hotmem). virtio-mem stops adding memory
 * while more than 1 GiB of it sits offline, and it plugs a block's sub-blocks (which the device
 * then counts) before it adds the block to Linux, so neither the device's size nor an empty round
 * says the plug is over: onlining runs in rounds until every expected block is online. The guest
 * holds no hot-plugged block before (untilUnplugged), so that number is total / BLOCK. Returns
 * the ms from the request to the last block online, and the partitions populated.
 */
export async function plug(
  g: PlugGuest,
  total: number,
  onlining: Onlining,
  blocksEach: number,
): Promise<{ ms: number; partitions: number[] }> {
  await untilUnplugged(g);
  const start = performance.now();
  const deadline = start + 300_000;
  await g.vm.virtioMem.setRequestedSize(total);
  const expected = total / BLOCK;
  let onlined = 0;
  while (onlined < expected) {
    if (performance.now() > deadline)
      throw new Error(
        `plug of ${total / MiB} MiB: ${onlined} of ${expected} blocks online after 300 s`,
      );
    const target =
      onlining === 'stock'
        ? 'online_movable'
        : `online_hotmem$(( (${onlined} + i) / ${blocksEach} ))`;
    const out = await g.guest.check([
      '/bin/sh',
      '-c',
      `i=0; for b in /sys/devices/system/memory/memory*; do [ "$(cat $b/state)" = offline ] || continue; echo ${target} > $b/state; i=$((i+1)); done; echo $i`,
    ]);
    const now = Number(out.trim());
    onlined += now;
    if (now === 0) await new Promise((r) => setTimeout(r, 20));
  }
  const ms = performance.now() - start;
  const partitions = Array.from({ length: Math.ceil(onlined / blocksEach) }, (_, i) => i);
  return { ms, partitions };
}
