// The Firecracker client and its HotplugMemory driver against the fake Firecracker API, which
// refuses what real Firecracker refuses (fake-firecracker.test.ts), plus a bare server for
// answers no Firecracker gives.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  FirecrackerApiError,
  FirecrackerClient,
  FirecrackerHotplugMemory,
  FirecrackerTimeoutError,
  type MemoryHotplugConfig,
} from '../../../lib/host/vmm/firecracker.js';
import { type HotplugMemory, HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import { unixHttpRequest } from '../../../lib/host/vmm/unix-http.js';
import { FakeFirecracker } from './fake-firecracker.js';

const MiB = 1024 * 1024;

let fc: FakeFirecracker;
let client: FirecrackerClient;

beforeEach(async () => {
  fc = await FakeFirecracker.start({ guestStepMs: 1, guestStepBlocks: 16 });
  client = new FirecrackerClient({ socketPath: fc.socketPath });
});

afterEach(async () => {
  await fc.close();
});

async function instanceStart(): Promise<void> {
  const { status } = await unixHttpRequest({
    socketPath: fc.socketPath,
    method: 'PUT',
    path: '/actions',
    payload: { action_type: 'InstanceStart' },
    timeoutMs: 2_000,
    timeoutError: () => new Error('InstanceStart timed out'),
  });
  expect(status).toBe(204);
}

/** Configured, booted, guest driver up: the state a controller works in. */
async function runningVm(
  config: MemoryHotplugConfig = { totalSizeMib: 1024 },
): Promise<HotplugMemory> {
  await client.configureHotplugMemory(config);
  await instanceStart();
  fc.activateGuestDriver();
  return new FirecrackerHotplugMemory(client);
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

describe('FirecrackerClient', () => {
  it('configures with PUT /hotplug/memory, sending only the fields given', async () => {
    await client.configureHotplugMemory({ totalSizeMib: 2048, blockSizeMib: 4 });
    expect(fc.requests).toEqual([
      {
        method: 'PUT',
        url: '/hotplug/memory',
        body: JSON.stringify({ total_size_mib: 2048, block_size_mib: 4 }),
      },
    ]);
    await instanceStart();
    await expect(client.hotplugMemoryStatus()).resolves.toEqual({
      totalSizeMib: 2048,
      slotSizeMib: 128,
      blockSizeMib: 4,
      pluggedSizeMib: 0,
      requestedSizeMib: 0,
    });
  });

  it('carries status and fault_message of a refusal', async () => {
    await instanceStart();
    const error = await client
      .configureHotplugMemory({ totalSizeMib: 1024 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(FirecrackerApiError);
    expect(error).toMatchObject({
      method: 'PUT',
      path: '/hotplug/memory',
      status: 400,
      faultMessage: 'The requested operation is not supported after starting the microVM.',
    });
  });

  it('refuses sizes the API cannot carry before sending anything', async () => {
    await expect(client.configureHotplugMemory({ totalSizeMib: 2 ** 32 })).rejects.toThrow(
      /totalSizeMib/,
    );
    await expect(client.requestHotplugMemory(1.5)).rejects.toThrow(/requestedSizeMib/);
    expect(fc.requests).toHaveLength(0);
  });
});

describe('FirecrackerHotplugMemory', () => {
  it('reads block and region size once, from GET /hotplug/memory', async () => {
    const memory = await runningVm({ totalSizeMib: 1024 });
    expect(await memory.blockSize()).toBe(2 * MiB);
    expect(await memory.regionSize()).toBe(1024 * MiB);
    expect(await memory.blockSize()).toBe(2 * MiB);
    expect(fc.requests.filter((r) => r.method === 'GET')).toHaveLength(1);
  });

  it('plugs and unplugs, resolving once the plugged size reaches the request', async () => {
    const memory = await runningVm();
    const ms = await memory.resize(512 * MiB, { timeoutMs: 5_000 });
    expect(ms).toBeGreaterThan(0);
    expect(await memory.size()).toBe(512 * MiB);
    expect(await memory.requestedSize()).toBe(512 * MiB);
    const patches = fc.requests.filter((r) => r.method === 'PATCH');
    expect(patches).toEqual([
      { method: 'PATCH', url: '/hotplug/memory', body: '{"requested_size_mib":512}' },
    ]);
    // The guest needs several steps: the driver polled rather than trusting the 204.
    expect(fc.requests.filter((r) => r.method === 'GET').length).toBeGreaterThan(1);
    await memory.resize(0, { timeoutMs: 5_000 });
    expect(await memory.size()).toBe(0);
  });

  it('stops waiting when its signal aborts; the request stands and the guest goes on', async () => {
    await fc.close();
    fc = await FakeFirecracker.start({ guestStepMs: 0, guestStepBlocks: 64 }); // moved by the test
    client = new FirecrackerClient({ socketPath: fc.socketPath });
    const memory = await runningVm();
    const abort = new AbortController();
    const waiting = memory.resize(256 * MiB, { timeoutMs: 10_000, signal: abort.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    abort.abort(new Error('the target moved'));
    await expect(waiting).rejects.toThrow('the target moved');
    expect(await memory.requestedSize()).toBe(256 * MiB);
    for (let i = 0; i < 2; i++) fc.stepGuest(); // 2 × 128 MiB
    expect(await memory.size()).toBe(256 * MiB);
  });

  it('accepts the size already requested, as Firecracker does', async () => {
    const memory = await runningVm();
    await memory.resize(64 * MiB, { timeoutMs: 5_000 });
    await expect(memory.resize(64 * MiB, { timeoutMs: 5_000 })).resolves.toBeGreaterThanOrEqual(0);
  });

  it('maps DeviceNotActive, and a VM not started, to ERR_DEVICE_NOT_ACTIVE', async () => {
    await client.configureHotplugMemory({ totalSizeMib: 1024 });
    const memory = new FirecrackerHotplugMemory(client);
    const notStarted = await failureOf(memory.resize(128 * MiB, { timeoutMs: 1_000 }));
    expect(notStarted).toMatchObject({ code: 'ERR_DEVICE_NOT_ACTIVE', requestedBytes: 128 * MiB });
    expect(notStarted.message).toMatch(/not supported before starting the microVM/);
    await instanceStart();
    const notActive = await failureOf(memory.resize(128 * MiB, { timeoutMs: 1_000 }));
    expect(notActive.code).toBe('ERR_DEVICE_NOT_ACTIVE');
    expect(notActive.message).toMatch(/Device is not active/);
    expect(notActive.cause).toBeInstanceOf(FirecrackerApiError);
  });

  it('tells a size off the block grid from one above the region, both InvalidSize', async () => {
    const memory = await runningVm({ totalSizeMib: 1024, blockSizeMib: 4 });
    const offGrid = await failureOf(memory.resize(6 * MiB, { timeoutMs: 1_000 }));
    expect(offGrid).toMatchObject({ code: 'ERR_NOT_BLOCK_MULTIPLE', requestedBytes: 6 * MiB });
    expect(offGrid.message).toMatch(
      /multiple of the block size 4194304: .*Size 6291456 is invalid/,
    );
    const above = await failureOf(memory.resize(1028 * MiB, { timeoutMs: 1_000 }));
    expect(above.code).toBe('ERR_ABOVE_REGION');
    expect(above.message).toMatch(/at most the region size 1073741824/);
    expect(await memory.requestedSize()).toBe(0);
  });

  it('refuses a size that is not whole MiB without sending it', async () => {
    const memory = await runningVm();
    const before = fc.requests.length;
    const error = await failureOf(memory.resize(3 * MiB + 4096, { timeoutMs: 1_000 }));
    expect(error.code).toBe('ERR_NOT_BLOCK_MULTIPLE');
    expect(fc.requests).toHaveLength(before);
  });

  it('times out with the last plugged size when the guest cannot give memory back', async () => {
    const memory = await runningVm();
    await memory.resize(512 * MiB, { timeoutMs: 5_000 });
    fc.holdInGuest(256);
    const error = await failureOf(memory.resize(0, { timeoutMs: 300 }));
    expect(error).toMatchObject({
      code: 'ERR_RESIZE_TIMEOUT',
      requestedBytes: 0,
      lastSize: 256 * MiB,
    });
    expect(error.message).toMatch(/plugged size is 268435456 bytes, not 0, after 300 ms/);
  });
});

describe('FirecrackerClient against a misbehaving server', () => {
  let dir: string;
  let server: http.Server;
  let socketPath: string;
  let reply: (response: http.ServerResponse) => void;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'hotmem-fc-raw-'));
    socketPath = path.join(dir, 'api.sock');
    server = http.createServer((_request, response) => reply(response));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('rejects a status whose body does not match MemoryHotplugStatus', async () => {
    reply = (response) =>
      response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ plugged_memory_mib: 0, requested_memory_mib: 0 }));
    await expect(new FirecrackerClient({ socketPath }).hotplugMemoryStatus()).rejects.toThrow(
      /GET \/hotplug\/memory -> 200 \(total_size_mib: /,
    );
  });

  it('times out when Firecracker does not answer', async () => {
    reply = () => {};
    const slow = new FirecrackerClient({ socketPath, timeoutMs: 100 });
    await expect(slow.hotplugMemoryStatus()).rejects.toBeInstanceOf(FirecrackerTimeoutError);
  });
});
