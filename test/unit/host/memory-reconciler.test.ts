// The reconciler on its own, against the fake VM's device.
import { describe, expect, it } from 'vitest';
import { MemoryReconciler } from '../../../lib/host/controller/memory-reconciler.js';
import { silentLogger } from '../../../lib/log.js';
import { FakeVm, MiB } from './fake-vm.js';

function reconciler(vm: FakeVm, keepPlugged = false, resizeTimeoutMs = 1_000) {
  return new MemoryReconciler(
    vm.hotplug,
    { requestedBytes: 0, pluggedBytes: 0 },
    {
      stepBytes: 1024 * MiB,
      resizeTimeoutMs,
      retryDelayMs: 100,
      clock: vm.clock,
      logger: silentLogger(),
      onChange: () => {},
      keepPlugged,
    },
  );
}

describe('MemoryReconciler', () => {
  it('settles at once a target the device already has', async () => {
    const vm = new FakeVm({ mode: 'unbound' });
    const memory = reconciler(vm);
    const up = memory.setTarget(256 * MiB);
    await vm.clock.advance(100);
    await memory.whenSettled(up);
    // Nothing to resize: settled inside setTarget(), before the wait began.
    let settled = false;
    void memory.whenSettled(memory.setTarget(256 * MiB)).then(() => {
      settled = true;
    });
    await vm.clock.advance(0);
    expect(settled).toBe(true);
  });

  it('with keepPlugged, never lowers the device: a lower target settles at the current size', async () => {
    const vm = new FakeVm({ mode: 'unbound' });
    const memory = reconciler(vm, true);
    await Promise.all([memory.whenSettled(memory.setTarget(512 * MiB)), vm.clock.advance(200)]);
    await memory.whenSettled(memory.setTarget(128 * MiB));
    expect([memory.targetBytes, vm.requested, vm.plugged]).toEqual([
      512 * MiB,
      512 * MiB,
      512 * MiB,
    ]);
  });

  /**
   * A guest onlining to ZONE_NORMAL with `bytes` plugged, an instance using `runningBytes` of them
   * and 4 MiB of unmovable pages in the rest.
   */
  async function pinnedGuest(bytes: number, resizeTimeoutMs = 1_000, runningBytes = 0) {
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel' });
    const memory = reconciler(vm, false, resizeTimeoutMs);
    const plugged = memory.whenSettled(memory.setTarget(bytes));
    await vm.clock.advance(100);
    await plugged;
    if (runningBytes > 0) {
      await vm.agent.createInstance({ command: ['/srv/fn'], memoryBytes: runningBytes });
    }
    return { vm, memory, free: vm.pinUnmovable(4 * MiB) };
  }

  it('does not send a request again while it stands: reads the size until the guest is there', async () => {
    const { vm, memory, free } = await pinnedGuest(512 * MiB);
    let settled = false;
    void memory.whenSettled(memory.setTarget(0)).then(() => {
      settled = true;
    });
    await vm.clock.advance(5_000);
    // The resize timed out after 1 s; since then the size is read every 100 ms, nothing sent.
    expect(vm.resizes).toEqual([512 * MiB, 0]);
    expect([memory.requestedBytes, memory.pluggedBytes, settled]).toEqual([0, 4 * MiB, false]);
    expect(memory.failures).toBe(1);
    // The guest gets there on its own retry timer, 50 s after it gave up, and nothing woke it.
    free();
    await vm.clock.advance(44_000);
    expect(settled).toBe(false);
    await vm.clock.advance(2_000);
    expect(settled).toBe(true);
    expect(vm.retryTimerFired).toBe(1);
    expect(vm.resizes).toEqual([512 * MiB, 0]);
    expect(memory.pluggedBytes).toBe(0);
  });

  it('sends a new target at once, not after an unplug the guest cannot finish', async () => {
    const { vm, memory } = await pinnedGuest(256 * MiB, 120_000, 128 * MiB);
    const down = memory.setTarget(128 * MiB);
    await vm.clock.advance(1_000);
    expect(vm.plugged).toBe(132 * MiB);
    expect(memory.ceilingBytes).toBe(256 * MiB); // the wait goes on: last seen at 256 MiB
    let upSettled = false;
    void memory.whenSettled(memory.setTarget(384 * MiB)).then(() => {
      upSettled = true;
    });
    await vm.clock.advance(100);
    expect(vm.resizes).toEqual([256 * MiB, 128 * MiB, 384 * MiB]);
    expect(upSettled).toBe(true);
    // The unplug merged into the plug that took its memory: both settled at 384 MiB.
    await memory.whenSettled(down);
    expect([vm.plugged, memory.pluggedBytes, memory.ceilingBytes]).toEqual([
      384 * MiB,
      384 * MiB,
      384 * MiB,
    ]);
    expect(memory.failures).toBe(0);
  });

  it('counts what the device may hold: plugged, requested and in flight', async () => {
    const { vm, memory } = await pinnedGuest(256 * MiB);
    memory.setTarget(0);
    expect(memory.ceilingBytes).toBe(256 * MiB);
    await vm.clock.advance(2_000); // timed out: plugged read back at the 4 pinned MiB
    expect([memory.ceilingBytes, memory.pluggedBytes, memory.requestedBytes]).toEqual([
      4 * MiB,
      4 * MiB,
      0,
    ]);
    memory.setTarget(512 * MiB);
    expect(memory.ceilingBytes).toBe(512 * MiB);
  });

  it('reads the plugged size on request while a wait goes on', async () => {
    const { vm, memory } = await pinnedGuest(256 * MiB, 120_000, 128 * MiB);
    memory.setTarget(128 * MiB);
    await vm.clock.advance(1_000);
    expect([memory.pluggedBytes, memory.ceilingBytes]).toEqual([256 * MiB, 256 * MiB]);
    await memory.refresh();
    expect([memory.pluggedBytes, memory.ceilingBytes]).toEqual([132 * MiB, 132 * MiB]);
  });

  it('sends a target that came while a standing request was read at once, not at the next read', async () => {
    const vm = new FakeVm({ mode: 'unbound', onlining: 'kernel' });
    let gate: Promise<void> | undefined;
    const hotplug = {
      ...vm.hotplug,
      size: async () => {
        await gate;
        return vm.hotplug.size();
      },
    };
    const memory = new MemoryReconciler(
      hotplug,
      { requestedBytes: 0, pluggedBytes: 0 },
      {
        stepBytes: 1024 * MiB,
        resizeTimeoutMs: 1_000,
        retryDelayMs: 100,
        clock: vm.clock,
        logger: silentLogger(),
        onChange: () => {},
      },
    );
    const plugged = memory.whenSettled(memory.setTarget(256 * MiB));
    await vm.clock.advance(100);
    await plugged;
    vm.pinUnmovable(4 * MiB);
    memory.setTarget(0);
    await vm.clock.advance(1_050); // timed out at 4 MiB; the size is read every 100 ms
    let open = () => {};
    gate = new Promise((resolve) => {
      open = resolve;
    });
    await vm.clock.advance(100); // a read, held at the gate
    memory.setTarget(128 * MiB);
    gate = undefined;
    open();
    await vm.clock.advance(0);
    expect(vm.resizes).toEqual([256 * MiB, 0, 128 * MiB]);
  });

  it('stops waiting on close(): the request stands and nothing is left polling', async () => {
    const { vm, memory } = await pinnedGuest(256 * MiB, 120_000);
    memory.setTarget(0);
    await vm.clock.advance(1_000);
    memory.close();
    await vm.clock.advance(1);
    // What is left is the guest's own retry timer.
    expect([vm.waitingForRetryTimer, vm.clock.pendingTimers]).toEqual([true, 1]);
    expect(vm.resizes).toEqual([256 * MiB, 0]);
  });
});
