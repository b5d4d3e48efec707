// The fake VM refuses what the real VMM, guest and agent refuse; the controller tests rely on it.
import { describe, expect, it } from 'vitest';
import { AgentRequestError } from '../../../lib/agent/client.js';
import { HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import { FakeVm, GiB, MiB } from './fake-vm.js';

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
});
