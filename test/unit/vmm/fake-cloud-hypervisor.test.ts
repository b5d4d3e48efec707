// The fake Cloud Hypervisor must refuse what real Cloud Hypervisor refuses, or driver tests
// against it prove nothing. Raw HTTP here, so no driver check stands in front of the fake's rules.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unixHttpRequest } from '../../../lib/host/vmm/unix-http.js';
import { FakeCloudHypervisor } from './fake-cloud-hypervisor.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

let ch: FakeCloudHypervisor;

beforeEach(async () => {
  ch = await FakeCloudHypervisor.start({ guestStepMs: 0, guestStepBlocks: 64 });
});

afterEach(async () => {
  await ch.close();
});

function call(method: 'GET' | 'PUT', endpoint: string, payload?: unknown) {
  return unixHttpRequest({
    socketPath: ch.socketPath,
    method,
    path: `/api/v1/${endpoint}`,
    payload,
    timeoutMs: 2_000,
    timeoutError: () => new Error(`${method} ${endpoint} timed out`),
  });
}

async function expectStatus(
  method: 'GET' | 'PUT',
  endpoint: string,
  payload: unknown,
  status: number,
): Promise<string> {
  const response = await call(method, endpoint, payload);
  expect(response.status).toBe(status);
  return response.body;
}

const virtioMem = { size: GiB, hotplug_method: 'VirtioMem', hotplug_size: 4 * GiB };
const zoned = {
  size: 0,
  hotplug_method: 'VirtioMem',
  zones: [
    { id: 'boot', size: GiB },
    { id: 'fn', size: 512 * MiB, hotplug_size: 2 * GiB },
  ],
};

async function bootWith(memory: unknown): Promise<void> {
  await expectStatus('PUT', 'vm.create', { memory, payload: { kernel: '/vmlinux' } }, 204);
  await expectStatus('PUT', 'vm.boot', undefined, 204);
}

async function infoOf() {
  const body = await expectStatus('GET', 'vm.info', undefined, 200);
  return JSON.parse(body) as {
    state: string;
    memory_actual_size: number;
    config: { memory: Record<string, unknown> & { zones?: Record<string, unknown>[] } };
  };
}

describe('fake Cloud Hypervisor', () => {
  it('answers 404 VM not created until vm.create', async () => {
    for (const [method, endpoint, payload] of [
      ['GET', 'vm.info', undefined],
      ['PUT', 'vm.resize', { desired_ram: 2 * GiB }],
      ['PUT', 'vm.resize-zone', { id: 'fn', desired_ram: GiB }],
    ] as const) {
      const body = await expectStatus(method, endpoint, payload, 404);
      expect(JSON.parse(body)).toContain('VM is not created');
    }
  });

  it('takes hotplug_method only in its JSON spelling "VirtioMem"', async () => {
    const cli = { ...virtioMem, hotplug_method: 'virtio-mem' };
    const body = await expectStatus('PUT', 'vm.create', { memory: cli }, 400);
    expect(body).toMatch(/unknown variant `virtio-mem`, expected `Acpi` or `VirtioMem`/);
    await expectStatus('PUT', 'vm.create', { memory: virtioMem }, 204);
  });

  it('takes a resize before boot as new boot RAM, as lib.rs vm_resize does', async () => {
    await expectStatus('PUT', 'vm.create', { memory: virtioMem }, 204);
    await expectStatus('PUT', 'vm.resize', { desired_ram: 2 * GiB }, 204);
    expect((await infoOf()).config.memory).toMatchObject({ size: 2 * GiB });
  });

  it('refuses desired_ram below boot RAM', async () => {
    await bootWith(virtioMem);
    const body = await expectStatus('PUT', 'vm.resize', { desired_ram: GiB - 2 * MiB }, 500);
    expect(body).toMatch(/desired_size = 1071644672 below boot size = 1073741824/);
  });

  it('refuses a request off the 2 MiB grid or above the region', async () => {
    await bootWith(virtioMem);
    expect(await expectStatus('PUT', 'vm.resize', { desired_ram: GiB + MiB }, 500)).toMatch(
      /new size 0x100000 is not aligned on block_size 0x200000/,
    );
    expect(await expectStatus('PUT', 'vm.resize', { desired_ram: 6 * GiB }, 500)).toMatch(
      /new size 0x140000000 is bigger than region_size 0x100000000/,
    );
  });

  it('refuses to resize to the size already requested, 0 included', async () => {
    await bootWith(virtioMem);
    expect(await expectStatus('PUT', 'vm.resize', { desired_ram: GiB }, 500)).toMatch(
      /new size 0x0 and requested_size are identical/,
    );
    await expectStatus('PUT', 'vm.resize', { desired_ram: 2 * GiB }, 204);
    expect(await expectStatus('PUT', 'vm.resize', { desired_ram: 2 * GiB }, 500)).toMatch(
      /are identical/,
    );
  });

  it('ignores unknown fields, so a misspelt resize silently does nothing', async () => {
    await bootWith(virtioMem);
    await expectStatus('PUT', 'vm.resize', { desired_ram_bytes: 2 * GiB }, 204);
    expect((await infoOf()).config.memory.hotplugged_size).toBeUndefined();
  });

  it('accepts a resize before the guest driver is up; the guest plugs once it is', async () => {
    // virtio-devices/src/mem.rs Mem::resize only signals an active device; nothing refuses.
    await bootWith(virtioMem);
    await expectStatus('PUT', 'vm.resize', { desired_ram: GiB + 256 * MiB }, 204);
    ch.stepGuest();
    expect((await infoOf()).memory_actual_size).toBe(GiB);
    ch.activateGuestDriver();
    ch.stepGuest();
    expect((await infoOf()).memory_actual_size).toBe(GiB + 128 * MiB);
    ch.stepGuest();
    const info = await infoOf();
    expect(info.memory_actual_size).toBe(GiB + 256 * MiB);
    expect(info.config.memory.hotplugged_size).toBe(256 * MiB);
  });

  it('reports the requested size as memory_actual_size before v52', async () => {
    await ch.close();
    ch = await FakeCloudHypervisor.start({ version: 'v51.2', guestStepMs: 0 });
    await bootWith(virtioMem);
    await expectStatus('PUT', 'vm.resize', { desired_ram: 2 * GiB }, 204);
    expect((await infoOf()).memory_actual_size).toBe(2 * GiB);
  });

  it('resizes a VM built from zones only with vm.resize-zone', async () => {
    await bootWith(zoned);
    expect(await expectStatus('PUT', 'vm.resize', { desired_ram: 2 * GiB }, 500)).toMatch(
      /backed by user defined memory regions/,
    );
    await expectStatus('PUT', 'vm.resize-zone', { id: 'nope', desired_ram: GiB }, 500);
    expect(
      await expectStatus('PUT', 'vm.resize-zone', { id: 'fn', desired_ram: 256 * MiB }, 500),
    ).toMatch(/below boot size = 536870912/);
    await expectStatus('PUT', 'vm.resize-zone', { id: 'fn', desired_ram: GiB }, 204);
    expect((await infoOf()).config.memory.zones?.[1]).toMatchObject({
      id: 'fn',
      hotplugged_size: 512 * MiB,
    });
  });

  it('refuses vm.resize-zone on a VM without zones', async () => {
    await bootWith(virtioMem);
    expect(
      await expectStatus('PUT', 'vm.resize-zone', { id: 'mem0', desired_ram: 2 * GiB }, 500),
    ).toMatch(/Resizing the memory zone failed/);
  });
});
