// The reconciler on its own, against the fake VM's device.
import { describe, expect, it } from 'vitest';
import { MemoryReconciler } from '../../../lib/host/controller/memory-reconciler.js';
import { silentLogger } from '../../../lib/log.js';
import { FakeVm, MiB } from './fake-vm.js';

function reconciler(vm: FakeVm, keepPlugged = false) {
  return new MemoryReconciler(
    vm.hotplug,
    { requestedBytes: 0, pluggedBytes: 0 },
    {
      stepBytes: 1024 * MiB,
      resizeTimeoutMs: 1_000,
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
});
