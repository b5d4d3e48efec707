// The controller through the real Cloud Hypervisor driver, against the fake Cloud Hypervisor API
// (test/unit/vmm/fake-cloud-hypervisor.ts), which refuses what Cloud Hypervisor refuses: sizes
// off the 2 MiB grid, above the region, the size already requested. The guest's agent and the
// instances are the fake VM's; their delays run on its hand-driven clock while the VMM's run in
// real time.
import { afterEach, describe, expect, it } from 'vitest';
import { Controller } from '../../../lib/host/controller/controller.js';
import {
  CloudHypervisorClient,
  CloudHypervisorHotplugMemory,
} from '../../../lib/host/vmm/cloud-hypervisor.js';
import { unixHttpRequest } from '../../../lib/host/vmm/unix-http.js';
import { FakeCloudHypervisor } from '../vmm/fake-cloud-hypervisor.js';
import { FakeVm, GiB, MiB } from './fake-vm.js';

let ch: FakeCloudHypervisor;

async function startCloudHypervisor(guestStepMs: number): Promise<void> {
  ch = await FakeCloudHypervisor.start({ guestStepMs, guestStepBlocks: 16 });
  for (const [endpoint, payload] of [
    ['vm.create', { memory: { size: GiB, hotplug_method: 'VirtioMem', hotplug_size: 4 * GiB } }],
    ['vm.boot', undefined],
  ] as const) {
    const { status } = await unixHttpRequest({
      socketPath: ch.socketPath,
      method: 'PUT',
      path: `/api/v1/${endpoint}`,
      payload,
      timeoutMs: 2_000,
      timeoutError: () => new Error(`${endpoint} timed out`),
    });
    expect(status).toBe(204);
  }
  ch.activateGuestDriver();
}

function resizesRequested(): number[] {
  return ch.requests
    .filter((r) => r.url === '/api/v1/vm.resize')
    .map((r) => (JSON.parse(r.body) as { desired_ram: number }).desired_ram - GiB);
}

afterEach(async () => {
  await ch.close();
});

/** Advances the fake VM's clock while real time passes, until `promise` settles. */
async function runUntil<T>(vm: FakeVm, promise: Promise<T>): Promise<T> {
  let settled = false;
  const result = promise.finally(() => {
    settled = true;
  });
  const deadline = Date.now() + 10_000;
  while (!settled) {
    if (Date.now() > deadline) throw new Error('did not settle within 10 s');
    await vm.clock.advance(10);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return result;
}

describe('Controller over Cloud Hypervisor', () => {
  it('plugs, serves, reuses and unplugs in stock mode', async () => {
    await startCloudHypervisor(1);
    const hotplug = new CloudHypervisorHotplugMemory(
      new CloudHypervisorClient({ socketPath: ch.socketPath }),
    );
    const vm = new FakeVm({ mode: 'unbound', hotplug });
    const controller = new Controller(
      { ...vm, instanceCommand: (name) => ({ command: ['/usr/bin/node', `/srv/${name}.mjs`] }) },
      { mode: 'stock', budgetBytes: GiB, keepAliveMs: 100, retryDelayMs: 50 },
    );
    await controller.start();
    const call = (functionName: string) =>
      controller.submit({ functionName, durationMs: 50, memoryBytes: 200 * MiB });
    const first = await runUntil(vm, Promise.all([call('a'), call('b')]));
    const again = await runUntil(vm, call('a'));
    await runUntil(vm, controller.close());

    expect([...first, again].map((r) => [r.start, r.error])).toEqual([
      ['cold', null],
      ['cold', null],
      ['warm', null],
    ]);
    expect(controller.metrics.scaleDowns.map((s) => s.outcome)).toEqual(['unplugged', 'unplugged']);
    expect(await hotplug.size()).toBe(0);
    expect(await hotplug.requestedSize()).toBe(0);
    // Every resize went through vm.resize with boot RAM + a 2 MiB multiple, never above budget.
    const resizes = resizesRequested();
    expect(resizes.length).toBeGreaterThanOrEqual(2);
    for (const size of resizes) {
      expect(size % (2 * MiB)).toBe(0);
      expect(size).toBeLessThanOrEqual(GiB);
    }
    expect(resizes.at(-1)).toBe(0);
  });

  it('waits out a slow guest: a timed-out resize stands, its size read until the guest is there', async () => {
    await startCloudHypervisor(0); // the guest driver moves only when the test steps it
    const hotplug = new CloudHypervisorHotplugMemory(
      new CloudHypervisorClient({ socketPath: ch.socketPath }),
    );
    const vm = new FakeVm({ mode: 'unbound', hotplug });
    const controller = new Controller(
      { ...vm, instanceCommand: (name) => ({ command: ['/usr/bin/node', `/srv/${name}.mjs`] }) },
      {
        mode: 'stock',
        budgetBytes: GiB,
        keepAliveMs: 60_000,
        retryDelayMs: 50,
        resizeTimeoutMs: 30,
      },
    );
    await controller.start();
    const done = controller.submit({ functionName: 'a', durationMs: 10, memoryBytes: 256 * MiB });
    for (let i = 0; i < 10; i++) {
      await vm.clock.advance(50); // a read each time: the request stands, the size lags
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    expect(vm.log).toEqual([]);
    for (let i = 0; i < 8; i++) ch.stepGuest(); // 8 × 32 MiB
    const record = await runUntil(vm, done);
    expect(record).toMatchObject({ start: 'cold', error: null });
    // Asked once: Cloud Hypervisor would refuse the same size again (ERR_SAME_SIZE), and QEMU
    // would wake the guest driver early; the retries only read the size.
    expect(resizesRequested()).toEqual([256 * MiB]);
    expect(await hotplug.size()).toBe(256 * MiB);
  });
});
