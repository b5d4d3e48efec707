// The fake VM refuses what the real VMM, guest and agent refuse; the controller tests rely on it.
import { describe, expect, it } from 'vitest';
import { AgentRequestError } from '../../../lib/agent/client.js';
import { HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import { FakeVm, GiB, MiB, RETRY_TIMER_MAX_MS, RETRY_TIMER_MIN_MS } from './fake-vm.js';

const command = ['/usr/bin/node', 'fn.mjs'];

async function resizeError(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HotplugMemoryError);
  return (error as HotplugMemoryError).code;
}

describe('FakeVm', () => {
  it('refuses sizes off the block grid or above the region', async () => {
    const vm = new FakeVm({ mode: 'bound', regionBytes: GiB });
    expect(await resizeError(vm.hotplug.resize(3 * MiB, { timeoutMs: 100 }))).toBe(
      'ERR_NOT_BLOCK_MULTIPLE',
    );
    expect(await resizeError(vm.hotplug.resize(2 * GiB, { timeoutMs: 100 }))).toBe(
      'ERR_ABOVE_REGION',
    );
  });

  it('completes a resize asynchronously, one memory block per step', async () => {
    const vm = new FakeVm({ mode: 'bound', blockStepMs: 10 });
    const resized = vm.hotplug.resize(256 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(10);
    expect(vm.plugged).toBe(128 * MiB);
    await vm.clock.advance(20);
    expect(await resized).toBe(20);
  });

  it('adds no memory while 1 GiB sits offline in bound mode', async () => {
    const vm = new FakeVm({ mode: 'bound' });
    const refused = resizeError(vm.hotplug.resize(2 * GiB, { timeoutMs: 1_000 }));
    await vm.clock.advance(1_000);
    expect(await refused).toBe('ERR_RESIZE_TIMEOUT');
    expect(vm.plugged).toBe(GiB);
  });

  it('refuses to start a bound instance without spare memory', async () => {
    const vm = new FakeVm({ mode: 'bound' });
    const refused = await vm.agent
      .createInstance({ command, memoryBytes: 128 * MiB })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AgentRequestError);
    expect((refused as AgentRequestError).code).toBe('HOTMEM_NO_PARTITION');
  });

  it('cannot unplug a partition an instance holds, nor memory a stock instance uses', async () => {
    for (const mode of ['bound', 'unbound'] as const) {
      const vm = new FakeVm({ mode });
      const plugged = vm.hotplug.resize(128 * MiB, { timeoutMs: 1_000 });
      await vm.clock.advance(20);
      await plugged;
      await vm.agent.createInstance({ command, memoryBytes: 100 * MiB });
      const refused = resizeError(vm.hotplug.resize(0, { timeoutMs: 500 }));
      await vm.clock.advance(600);
      expect(await refused).toBe('ERR_RESIZE_TIMEOUT');
      expect(vm.plugged).toBe(128 * MiB);
    }
  });

  it('reports a partition reclaimed only after its instance exited', async () => {
    const vm = new FakeVm({ mode: 'bound', exitDelayMs: 20, reclaimDelayMs: 30 });
    const plugged = vm.hotplug.resize(128 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(20);
    await plugged;
    const { id } = await vm.agent.createInstance({ command, memoryBytes: 128 * MiB });
    const events = (await vm.agent.events())[Symbol.asyncIterator]();
    const stopped = vm.agent.stopInstance(id, { graceMs: 0 });
    await vm.clock.advance(100);
    await stopped;
    expect(vm.log.slice(-2)).toEqual([`exited ${id}`, 'reclaimed p0']);
    expect((await events.next()).value).toMatchObject({
      type: 'instance-exited',
      instance: { id },
    });
    expect((await events.next()).value).toMatchObject({ type: 'partition-released' });
    expect((await events.next()).value).toMatchObject({
      type: 'partition-reclaimed',
      partition: 0,
    });
  });

  it('in ZONE_NORMAL unplugs around unmovable pages, then waits for its retry timer', async () => {
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel' });
    const plugged = vm.hotplug.resize(512 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(100);
    await plugged;
    const free = vm.pinUnmovable(4 * MiB);
    const refused = resizeError(vm.hotplug.resize(0, { timeoutMs: 1_000 }));
    await vm.clock.advance(1_000);
    expect(await refused).toBe('ERR_RESIZE_TIMEOUT');
    // Everything but the pinned sub-blocks went; the rest waits for the timer.
    expect(vm.plugged).toBe(4 * MiB);
    expect(vm.waitingForRetryTimer).toBe(true);
    // Freeing the pages does not wake the driver: only its timer, 50 s after it gave up.
    free();
    await vm.clock.advance(RETRY_TIMER_MIN_MS - 1_000 - 100);
    expect(vm.plugged).toBe(4 * MiB);
    await vm.clock.advance(200);
    expect([vm.plugged, vm.retryTimerFired]).toEqual([0, 1]);
  });

  it('doubles the retry timer each time it fires, up to 300 s, and starts again at 50 s', async () => {
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel', blockStepMs: 1 });
    const plugged = vm.hotplug.resize(128 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(10);
    await plugged;
    const free = vm.pinUnmovable(2 * MiB);
    void vm.hotplug.resize(0, { timeoutMs: 1 }).catch(() => {});
    await vm.clock.advance(1);
    // Fires 50 s after it gave up, then 100, 200, 300 and 300 s after each retry failed again.
    const stalled = vm.clock.now();
    const firedBy = async (seconds: number) => {
      await vm.clock.advance(stalled + seconds * 1_000 - vm.clock.now());
      return vm.retryTimerFired;
    };
    const counts: number[] = [];
    for (const at of [50, 150, 350, 650, 950]) {
      counts.push(await firedBy(at - 0.5), await firedBy(at + 0.5));
    }
    expect(counts).toEqual([0, 1, 1, 2, 2, 3, 3, 4, 4, 5]);
    expect([RETRY_TIMER_MIN_MS, RETRY_TIMER_MAX_MS]).toEqual([50_000, 300_000]);
    expect(vm.plugged).toBe(2 * MiB);
    free();
    await vm.clock.advance(300_000);
    expect(vm.plugged).toBe(0);
    // Met: the next unplug it cannot finish waits 50 s again.
    const again = vm.hotplug.resize(128 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(10);
    await again;
    vm.pinUnmovable(2 * MiB);
    void vm.hotplug.resize(0, { timeoutMs: 1 }).catch(() => {});
    const fired = vm.retryTimerFired;
    await vm.clock.advance(RETRY_TIMER_MIN_MS + 10);
    expect(vm.retryTimerFired).toBe(fired + 1);
  });

  it('retries at once when the request is sent again, as QEMU notifies the guest of it', async () => {
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel' });
    const plugged = vm.hotplug.resize(256 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(100);
    await plugged;
    const free = vm.pinUnmovable(8 * MiB);
    void vm.hotplug.resize(0, { timeoutMs: 100 }).catch(() => {});
    await vm.clock.advance(1_000);
    expect(vm.plugged).toBe(8 * MiB);
    free();
    const resent = vm.hotplug.resize(0, { timeoutMs: 1_000 });
    await vm.clock.advance(20);
    expect(await resent).toBeLessThanOrEqual(20);
    expect(vm.retryTimerFired).toBe(0);
  });

  it('puts unmovable pages only into plugged ZONE_NORMAL memory, whole sub-blocks', async () => {
    expect(() => new FakeVm({ mode: 'bound', onlining: 'kernel' })).toThrow(/partitions/);
    const movable = new FakeVm({ mode: 'unbound' });
    expect(() => movable.pinUnmovable(2 * MiB)).toThrow(/ZONE_NORMAL/);
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel' });
    expect(() => vm.pinUnmovable(2 * MiB)).toThrow(/0 free in plugged memory/);
    const plugged = vm.hotplug.resize(128 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(20);
    await plugged;
    expect(() => vm.pinUnmovable(MiB)).toThrow(/whole/);
    await vm.agent.createInstance({ command, memoryBytes: 100 * MiB });
    expect(() => vm.pinUnmovable(2 * MiB)).toThrow(/0 free in plugged memory/);
  });

  it('can leave unmovable pages behind in the memory an exiting instance used', async () => {
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel' });
    const plugged = vm.hotplug.resize(256 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(30);
    await plugged;
    const { id } = await vm.agent.createInstance({ command, memoryBytes: 256 * MiB });
    expect(() => vm.pinOnExit(id, 512 * MiB)).toThrow(/holds only/);
    expect(() => vm.pinOnExit('i-9', 2 * MiB)).toThrow(/not running/);
    const free = vm.pinOnExit(id, 6 * MiB);
    expect(vm.pinnedBytes).toBe(0);
    const stopped = vm.agent.stopInstance(id, { graceMs: 0 });
    await vm.clock.advance(20);
    await stopped;
    expect(vm.pinnedBytes).toBe(6 * MiB);
    void vm.hotplug.resize(0, { timeoutMs: 100 }).catch(() => {});
    await vm.clock.advance(100);
    expect(vm.plugged).toBe(6 * MiB);
    free();
    expect(vm.pinnedBytes).toBe(0);
  });

  it('with leftOnExit, every exited instance holds unmovable pages for a while', async () => {
    expect(() => new FakeVm({ mode: 'unbound', leftOnExit: { bytes: 2 * MiB, forMs: 1 } })).toThrow(
      /ZONE_NORMAL/,
    );
    const vm = new FakeVm({
      mode: 'unbound',
      onlining: 'kernel',
      leftOnExit: { bytes: 4 * MiB, forMs: 60_000 },
    });
    const plugged = vm.hotplug.resize(256 * MiB, { timeoutMs: 1_000 });
    await vm.clock.advance(30);
    await plugged;
    const { id } = await vm.agent.createInstance({ command, memoryBytes: 128 * MiB });
    expect(vm.pinnedBytes).toBe(0);
    vm.crash(id);
    expect(vm.pinnedBytes).toBe(4 * MiB);
    await vm.clock.advance(59_000);
    expect(vm.pinnedBytes).toBe(4 * MiB);
    await vm.clock.advance(1_000);
    expect(vm.pinnedBytes).toBe(0);
  });

  it('stops waiting for a resize when its signal aborts; the request stands', async () => {
    const vm = new FakeVm({ mode: 'unbound' });
    const abort = new AbortController();
    const waiting = vm.hotplug.resize(512 * MiB, { timeoutMs: 10_000, signal: abort.signal });
    await vm.clock.advance(10);
    abort.abort(new Error('moved'));
    await expect(waiting).rejects.toThrow('moved');
    expect(vm.requested).toBe(512 * MiB);
    await vm.clock.advance(100);
    expect(vm.plugged).toBe(512 * MiB);
  });
});
