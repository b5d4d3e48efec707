/**
 * PartitionManager's logic against FakeHotplugKernel, an in-memory fake of memory-block sysfs and
 * /dev/hotmem: unit tests, not integration (the e2e suite runs the manager on the real kernel).
 */
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { PartitionManager } from '../../lib/partition-manager.js';
import { FakeHotplugKernel } from './fixtures/fake-hotplug-kernel.js';
import { MIB } from './fixtures/sysfs-tree.js';

const BLOCK = 128 * MIB;

/** A manager on a fake kernel with a fake clock that only moves when the manager waits. */
function setup(opts: { partitions?: number; onDelay?: (ms: number) => void } = {}) {
  const kernel = new FakeHotplugKernel(BLOCK, { partitions: opts.partitions ?? 4, bootBlocks: 2 });
  let clock = 0;
  const delays: number[] = [];
  const manager = new PartitionManager({
    blocks: kernel,
    device: kernel,
    now: () => clock,
    delay: async (ms) => {
      delays.push(ms);
      clock += ms;
      opts.onDelay?.(ms);
    },
  });
  return { kernel, manager, delays };
}

describe('PartitionManager.acquire (fake kernel)', () => {
  it('onlines whole blocks into the first empty partition, rounding up', async () => {
    const { kernel, manager } = setup();
    const [a, b, c] = kernel.plug(4);
    const acquired = await manager.acquire(300 * MIB);
    expect(acquired).toEqual({ partition: 0, bytes: 3 * BLOCK, blocks: [a, b, c] });
    expect(kernel.partition(0)).toMatchObject({ state: 'free', nrBlocks: 3 });
    expect(kernel.calls).toEqual([
      `online ${a} HotMem0`,
      `online ${b} HotMem0`,
      `online ${c} HotMem0`,
      'setFlags 0 {"spill":false,"autoReclaim":false}',
    ]);
  });

  it('gives concurrent acquires distinct partitions and distinct blocks', async () => {
    const { kernel, manager } = setup();
    kernel.plug(4);
    const [first, second] = await Promise.all([
      manager.acquire(2 * BLOCK, { spill: true }),
      manager.acquire(2 * BLOCK),
    ]);
    expect([first.partition, second.partition].sort()).toEqual([0, 1]);
    expect(new Set([...first.blocks, ...second.blocks]).size).toBe(4);
    expect(kernel.partition(first.partition).flags.spill).toBe(true);
    expect(kernel.partition(second.partition).flags.spill).toBe(false);
  });

  it('waits with growing delays while the host is still plugging', async () => {
    let kernel: FakeHotplugKernel | undefined;
    const env = setup({
      onDelay: () => {
        if (env.delays.length === 3) kernel?.plug(1);
      },
    });
    kernel = env.kernel;
    kernel.plug(1);
    const acquired = await env.manager.acquire(2 * BLOCK, { timeoutMs: 5_000 });
    expect(acquired.blocks).toHaveLength(2);
    expect(env.delays).toEqual([10, 20, 40]);
  });

  it('gives up at the deadline, offlines what it onlined and names the shortfall', async () => {
    const { kernel, manager, delays } = setup();
    const [only] = kernel.plug(1);
    const failure = manager.acquire(3 * BLOCK, { timeoutMs: 500 });
    await expect(failure).rejects.toMatchObject({
      name: 'HotMemError',
      code: 'ERR_PARTITION_TIMEOUT',
      message: expect.stringMatching(
        /partition 0 needs 3 block\(s\) for \d+ bytes but only 1 could be onlined within 500 ms/,
      ),
    });
    expect(delays.reduce((sum, ms) => sum + ms, 0)).toBe(500);
    expect(Math.max(...delays)).toBeLessThanOrEqual(1_000);
    expect(kernel.calls.at(-1)).toBe(`offline ${only}`);
    expect(kernel.partition(0).state).toBe('empty');
    // The rolled-back partition is available again.
    kernel.plug(2);
    expect((await manager.acquire(3 * BLOCK, { timeoutMs: 0 })).partition).toBe(0);
  });

  it('fails at once with ERR_NO_MEMORY when told not to wait', async () => {
    const { kernel, manager, delays } = setup();
    kernel.plug(1);
    await expect(manager.acquire(2 * BLOCK, { timeoutMs: 0 })).rejects.toMatchObject({
      code: 'ERR_NO_MEMORY',
      message: expect.stringContaining('no more offline blocks'),
    });
    expect(delays).toEqual([]);
  });

  it('skips a block the kernel refuses and says which when it runs short', async () => {
    const { kernel, manager } = setup();
    const [busy, good, spare] = kernel.plug(3);
    kernel.failOnline.set(busy as number, 'EBUSY');
    expect((await manager.acquire(2 * BLOCK)).blocks).toEqual([good, spare]);

    const second = setup();
    const [refused] = second.kernel.plug(1);
    second.kernel.failOnline.set(refused as number, 'EINVAL');
    await expect(second.manager.acquire(BLOCK, { timeoutMs: 0 })).rejects.toThrow(
      `failed: memory${refused}: EINVAL`,
    );
  });

  it('does not hand out a partition whose rollback failed', async () => {
    const { kernel, manager } = setup();
    const [stuck] = kernel.plug(1);
    kernel.failOffline.set(stuck as number, 'EBUSY');
    await expect(manager.acquire(2 * BLOCK, { timeoutMs: 0 })).rejects.toMatchObject({
      code: 'ERR_NO_MEMORY',
    });
    expect(kernel.partition(0).state).toBe('free');
    kernel.plug(1);
    expect((await manager.acquire(BLOCK, { timeoutMs: 0 })).partition).toBe(1);
  });

  it('reports ERR_NO_PARTITION when every partition is populated', async () => {
    const { kernel, manager } = setup({ partitions: 1 });
    kernel.plug(2);
    await manager.acquire(BLOCK);
    await expect(manager.acquire(BLOCK)).rejects.toMatchObject({
      code: 'ERR_NO_PARTITION',
      message: 'no empty partition left: all 1 are populated or being populated',
    });
  });

  it('rejects sizes that are not positive integers', async () => {
    const { manager } = setup();
    await expect(manager.acquire(0)).rejects.toThrow(TypeError);
    await expect(manager.acquire(1.5)).rejects.toThrow(/positive integer, got 1.5/);
    await expect(manager.acquire(1, { timeoutMs: -1 })).rejects.toThrow(/timeoutMs/);
  });
});

describe('PartitionManager release and reclaim (fake kernel)', () => {
  // Reclaiming on release is the agent's decision: test/unit/agent/agent-partition-manager.test.ts.
  it('leaves released partitions alone: when to reclaim is for its caller to decide', async () => {
    const { kernel, manager } = setup();
    await manager.init();
    kernel.plug(1);
    const { partition } = await manager.acquire(BLOCK);
    kernel.bindProcess(partition);
    const released = once(manager, 'released');
    kernel.releaseProcess(partition);
    await released;
    expect(kernel.calls).not.toContain(`reclaim ${partition}`);
    expect(kernel.partition(partition).state).toBe('free');
  });

  it('reports a failed reclaim as reclaimFailed and rejects', async () => {
    const { kernel, manager } = setup();
    kernel.plug(1);
    const { partition } = await manager.acquire(BLOCK);
    kernel.bindProcess(partition);
    const failed = once(manager, 'reclaimFailed');
    await expect(manager.reclaim(partition)).rejects.toMatchObject({ code: 'EBUSY' });
    const [{ partition: which, error }] = (await failed) as [{ partition: number; error: Error }];
    expect(which).toBe(partition);
    expect(error).toMatchObject({ code: 'EBUSY' });
  });

  it('keeps a partition an acquire() is populating when an earlier reclaimed event arrives', async () => {
    let kernel: FakeHotplugKernel | undefined;
    let second: Promise<unknown> | undefined;
    const env = setup({
      onDelay: () => {
        if (env.delays.length !== 1 || !kernel) return;
        // Partition 0 is being populated (no block plugged yet) when the event of its last
        // reclaim comes in late; a second acquire() must still not pick it.
        kernel.queue('reclaimed', 0, BLOCK);
        kernel.plug(2);
        second = env.manager.acquire(BLOCK, { timeoutMs: 0 }).catch((error: unknown) => error);
      },
    });
    kernel = env.kernel;
    await env.manager.init();
    const first = await env.manager.acquire(BLOCK, { timeoutMs: 5_000 });
    expect(first.partition).toBe(0);
    expect(await second).toMatchObject({ partition: 1 });
    env.manager.close();
  });

  it('forwards oom and overflow events', async () => {
    const { kernel, manager } = setup();
    await manager.init();
    const oom = once(manager, 'oom');
    const overflow = once(manager, 'overflow');
    kernel.queue('oom', 2, 4242);
    kernel.queue('overflow', 0, 17);
    expect(await oom).toEqual([{ partition: 2, pid: 4242 }]);
    expect(await overflow).toEqual([{ dropped: 17 }]);
  });
});

describe('PartitionManager and a failing event stream (fake kernel)', () => {
  it('reports the failure as streamError instead of crashing, and detaches on close', async () => {
    const { kernel, manager } = setup();
    await manager.init();
    const failed = once(manager, 'streamError');
    const error = new Error('EIO: i/o error, read');
    kernel.emit('error', error);
    expect(await failed).toEqual([{ error }]);
    manager.close();
    expect(kernel.listenerCount('event') + kernel.listenerCount('error')).toBe(0);
  });
});

describe('PartitionManager.init after a restart (fake kernel)', () => {
  it('never reuses a populated partition and reclaims nothing itself', async () => {
    const { kernel } = setup();
    const before = new PartitionManager({ blocks: kernel, device: kernel });
    kernel.plug(3);
    const bound = await before.acquire(BLOCK);
    const leftover = await before.acquire(BLOCK);
    kernel.bindProcess(bound.partition);

    const after = new PartitionManager({ blocks: kernel, device: kernel });
    await after.init();
    expect(kernel.calls.filter((call) => call.startsWith('reclaim'))).toEqual([]);
    expect(kernel.partition(leftover.partition).state).toBe('free');
    const next = await after.acquire(BLOCK);
    expect([bound.partition, leftover.partition]).not.toContain(next.partition);
    after.close();
  });
});

describe('PartitionManager.status (fake kernel)', () => {
  it('sums all, online, offline and partition bytes from the blocks', async () => {
    const { kernel, manager } = setup();
    kernel.plug(3);
    await manager.acquire(BLOCK);
    const status = await manager.status();
    expect(status).toMatchObject({
      blockSize: BLOCK,
      totalBytes: 5 * BLOCK,
      onlineBytes: 3 * BLOCK,
      offlineBytes: 2 * BLOCK,
      partitionBytes: BLOCK,
    });
    expect(status.partitions.map((p) => p.state)).toEqual(['free', 'empty', 'empty', 'empty']);
  });
});
