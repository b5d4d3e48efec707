// Stock virtio-mem, driven from the host over QMP, on the test bed's guest kernel: what HotMem
// is measured against. Blocks are onlined into ZONE_MOVABLE as a stock FaaS guest would do.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUEST_MEMHOG } from '../../scripts/testbed/initramfs.js';
import {
  blockStates,
  bootGuest,
  buildKernel,
  extraKernelUnavailable,
  type Guest,
  meminfo,
  resizeMeasured,
} from '../../scripts/testbed/testbed.js';
import { GiB, MiB } from '../../scripts/testbed/vm.js';

const PLUG = 1 * GiB;

function onlineMovable(states: Record<string, string>): string[] {
  return Object.keys(states).filter((b) => states[b] === 'online Movable');
}

const stockUnavailable = extraKernelUnavailable('stock');

describe.skipIf(stockUnavailable !== undefined)(
  `stock virtio-mem (blocks onlined movable)${stockUnavailable ? ` (skipped: ${stockUnavailable})` : ''}`,
  () => {
    let g: Guest;

    beforeAll(async () => {
      const kernel = await buildKernel();
      g = await bootGuest(kernel, {
        append: ['memhp_default_state=online_movable'],
        hotplugRegion: 2 * GiB,
      });
    });

    afterAll(async () => {
      await g?.stop();
      if (g) expect(g.vm.kernelProblems()).toEqual([]);
    });

    it('plugs 1 GiB: new memory blocks come online and MemTotal grows by it', async () => {
      const before = await meminfo(g.guest);
      const blocksBefore = onlineMovable(await blockStates(g.guest));
      const ms = await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
      const after = await meminfo(g.guest);
      const blocksAfter = onlineMovable(await blockStates(g.guest));
      const blockSize = Number.parseInt(
        await g.guest.read('/sys/devices/system/memory/block_size_bytes'),
        16,
      );

      console.log(`stock plug of ${PLUG / MiB} MiB took ${ms.toFixed(1)} ms (${g.vm.accel})`);
      expect(await g.vm.virtioMem.size()).toBe(PLUG);
      expect(blocksAfter.length - blocksBefore.length).toBe(PLUG / blockSize);
      expect((after.MemTotal ?? 0) - (before.MemTotal ?? 0)).toBe(PLUG);
    });

    it('unplugs it again from an idle guest', async () => {
      const before = await meminfo(g.guest);
      const ms = await g.vm.virtioMem.resize(0, { timeoutMs: 120_000 });
      const after = await meminfo(g.guest);

      console.log(`stock idle unplug of ${PLUG / MiB} MiB took ${ms.toFixed(1)} ms`);
      expect(await g.vm.virtioMem.size()).toBe(0);
      expect(onlineMovable(await blockStates(g.guest))).toEqual([]);
      expect((before.MemTotal ?? 0) - (after.MemTotal ?? 0)).toBe(PLUG);
    });

    it('unplugs while a process holds most of the plugged memory, migrating its pages', async () => {
      await g.vm.virtioMem.resize(PLUG, { timeoutMs: 60_000 });
      // Movable allocations prefer ZONE_MOVABLE, so the hog's pages land in the plugged blocks.
      const hog = await g.guest.spawn([GUEST_MEMHOG, String(Math.round((0.6 * PLUG) / MiB))], {
        waitFor: 'memhog ready',
      });
      const { ms, moved } = await resizeMeasured(g, 0, 240_000);
      const migrated = await moved('pgmigrate_success');

      console.log(
        `stock loaded unplug of ${PLUG / MiB} MiB took ${ms.toFixed(1)} ms, ` +
          `pgmigrate_success +${migrated}, pgmigrate_fail +${await moved('pgmigrate_fail')}`,
      );
      expect(await g.vm.virtioMem.size()).toBe(0);
      // The hog's pages had to move out of the unplugged blocks: this is the cost HotMem removes.
      expect(migrated).toBeGreaterThan((0.3 * PLUG) / 4096);
      await g.guest.signal(hog, 'SIGKILL');
      expect((await g.guest.wait(hog)).signal).toBe('SIGKILL');
    });
  },
);
