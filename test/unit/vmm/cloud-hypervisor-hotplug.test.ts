// CloudHypervisorHotplugMemory against the fake Cloud Hypervisor API, which refuses what real
// Cloud Hypervisor refuses (fake-cloud-hypervisor.test.ts).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CloudHypervisorApiError,
  CloudHypervisorClient,
  CloudHypervisorHotplugMemory,
} from '../../../lib/host/vmm/cloud-hypervisor.js';
import { type HotplugMemory, HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import { unixHttpRequest } from '../../../lib/host/vmm/unix-http.js';
import { FakeCloudHypervisor, type FakeCloudHypervisorOptions } from './fake-cloud-hypervisor.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const virtioMem = { size: GiB, hotplug_method: 'VirtioMem', hotplug_size: 4 * GiB };

let ch: FakeCloudHypervisor;
let client: CloudHypervisorClient;

async function startFake(options: FakeCloudHypervisorOptions = {}): Promise<void> {
  ch = await FakeCloudHypervisor.start({ guestStepMs: 1, guestStepBlocks: 16, ...options });
  client = new CloudHypervisorClient({ socketPath: ch.socketPath });
}

beforeEach(() => startFake());

afterEach(async () => {
  await ch.close();
});

async function put(endpoint: string, payload?: unknown): Promise<void> {
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

/** Created, booted, guest driver up. */
async function runningVm(memory: unknown = virtioMem, zoneId?: string): Promise<HotplugMemory> {
  await put('vm.create', { memory });
  await put('vm.boot');
  ch.activateGuestDriver();
  return new CloudHypervisorHotplugMemory(client, zoneId);
}

function failureOf(promise: Promise<unknown>): Promise<HotplugMemoryError> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (error: unknown) => {
      expect(error).toBeInstanceOf(HotplugMemoryError);
      return error as HotplugMemoryError;
    },
  );
}

const resizes = () => ch.requests.filter((r) => r.method === 'PUT' && r.url.includes('resize'));

describe('CloudHypervisorHotplugMemory', () => {
  it('reports the device geometry from vm.info', async () => {
    const memory = await runningVm();
    expect(await memory.blockSize()).toBe(2 * MiB);
    expect(await memory.regionSize()).toBe(4 * GiB);
    expect(await memory.requestedSize()).toBe(0);
    expect(await memory.size()).toBe(0);
  });

  it('resizes with desired_ram = boot RAM + request and waits for the plug', async () => {
    const memory = await runningVm();
    const ms = await memory.resize(512 * MiB, { timeoutMs: 5_000 });
    expect(ms).toBeGreaterThan(0);
    expect(resizes().map((r) => JSON.parse(r.body))).toEqual([{ desired_ram: GiB + 512 * MiB }]);
    expect(await memory.size()).toBe(512 * MiB);
    expect(await memory.requestedSize()).toBe(512 * MiB);
    // 512 MiB take the guest several steps: the driver polled instead of trusting the 204.
    expect(ch.requests.filter((r) => r.url.endsWith('vm.info')).length).toBeGreaterThan(3);
    await memory.resize(0, { timeoutMs: 5_000 });
    expect(await memory.size()).toBe(0);
  });

  it('maps a resize to the size already requested to ERR_SAME_SIZE', async () => {
    const memory = await runningVm();
    const error = await failureOf(memory.resize(0, { timeoutMs: 1_000 }));
    expect(error).toMatchObject({ code: 'ERR_SAME_SIZE', requestedBytes: 0 });
    expect(error.cause).toBeInstanceOf(CloudHypervisorApiError);
    expect(error.message).toMatch(/are identical/);
  });

  it('maps refusals above the region and off the 2 MiB grid', async () => {
    const memory = await runningVm();
    const above = await failureOf(memory.resize(5 * GiB, { timeoutMs: 1_000 }));
    expect(above.code).toBe('ERR_ABOVE_REGION');
    expect(above.message).toMatch(/bigger than region_size/);
    const offGrid = await failureOf(memory.resize(3 * MiB, { timeoutMs: 1_000 }));
    expect(offGrid.code).toBe('ERR_NOT_BLOCK_MULTIPLE');
    expect(offGrid.message).toMatch(/not aligned on block_size/);
    expect(await memory.requestedSize()).toBe(0);
  });

  it('refuses to resize a VM not yet booted, which would change its boot RAM', async () => {
    await put('vm.create', { memory: virtioMem });
    const memory = new CloudHypervisorHotplugMemory(client);
    const error = await failureOf(memory.resize(256 * MiB, { timeoutMs: 1_000 }));
    expect(error.code).toBe('ERR_DEVICE_NOT_ACTIVE');
    expect(resizes()).toHaveLength(0);
  });

  it('maps 404 VM not created to ERR_DEVICE_NOT_ACTIVE', async () => {
    const memory = new CloudHypervisorHotplugMemory(client);
    const error = await failureOf(memory.resize(256 * MiB, { timeoutMs: 1_000 }));
    expect(error.code).toBe('ERR_DEVICE_NOT_ACTIVE');
    expect(error.cause).toMatchObject({ status: 404 });
  });

  it('times out with the last plugged size while the guest driver is not up', async () => {
    await put('vm.create', { memory: virtioMem });
    await put('vm.boot');
    const memory = new CloudHypervisorHotplugMemory(client);
    const error = await failureOf(memory.resize(256 * MiB, { timeoutMs: 300 }));
    expect(error).toMatchObject({ code: 'ERR_RESIZE_TIMEOUT', lastSize: 0 });
    expect(error.message).toMatch(/plugged size is 0 bytes, not 268435456, after 300 ms/);
  });

  it('resizes a zone with vm.resize-zone, counting from the zone size', async () => {
    const zoned = {
      size: 0,
      hotplug_method: 'VirtioMem',
      zones: [
        { id: 'boot', size: GiB },
        { id: 'fn', size: 512 * MiB, hotplug_size: 2 * GiB },
      ],
    };
    const memory = await runningVm(zoned, 'fn');
    expect(await memory.regionSize()).toBe(2 * GiB);
    await memory.resize(256 * MiB, { timeoutMs: 5_000 });
    expect(resizes().map((r) => [r.url, JSON.parse(r.body)])).toEqual([
      ['/api/v1/vm.resize-zone', { id: 'fn', desired_ram: 768 * MiB }],
    ]);
    expect(await memory.size()).toBe(256 * MiB);
    await expect(new CloudHypervisorHotplugMemory(client).regionSize()).rejects.toThrow(
      /built from memory zones: name the zone/,
    );
  });

  it('refuses to read a plugged size that memory_actual_size mixes with other memory', async () => {
    await put('vm.create', { memory: virtioMem, balloon: { size: 256 * MiB } });
    await put('vm.boot');
    await expect(new CloudHypervisorHotplugMemory(client).size()).rejects.toThrow(
      /also counts the balloon/,
    );
    await ch.close();
    await startFake();
    const twoZones = {
      size: 0,
      hotplug_method: 'VirtioMem',
      zones: [
        { id: 'a', size: GiB, hotplug_size: GiB },
        { id: 'b', size: GiB, hotplug_size: GiB },
      ],
    };
    const memory = await runningVm(twoZones, 'a');
    await expect(memory.size()).rejects.toThrow(/other zones' virtio-mem devices/);
  });

  it('refuses to work where memory_actual_size shows the request (before v52)', async () => {
    await ch.close();
    await startFake({ version: 'v51.2' });
    const memory = await runningVm();
    await expect(memory.resize(256 * MiB, { timeoutMs: 1_000 })).rejects.toThrow(
      /v51\.2: before v52 vm\.info reports the requested size/,
    );
    await expect(memory.size()).rejects.toThrow(/before v52/);
    expect(resizes()).toHaveLength(0);
  });
});
