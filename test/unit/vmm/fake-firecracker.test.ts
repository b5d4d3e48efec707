// The fake Firecracker must refuse what real Firecracker refuses, or driver tests against it
// prove nothing. Raw HTTP here, so no driver check stands in front of the fake's own rules.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unixHttpRequest } from '../../../lib/host/vmm/unix-http.js';
import { FakeFirecracker } from './fake-firecracker.js';

let fc: FakeFirecracker;

beforeEach(async () => {
  fc = await FakeFirecracker.start({ guestStepMs: 1, guestStepBlocks: 16 });
});

afterEach(async () => {
  await fc.close();
});

function call(method: 'GET' | 'PUT' | 'PATCH', path: string, payload?: unknown) {
  return unixHttpRequest({
    socketPath: fc.socketPath,
    method,
    path,
    payload,
    timeoutMs: 2_000,
    timeoutError: () => new Error(`${method} ${path} timed out`),
  });
}

async function faultOf(method: 'GET' | 'PUT' | 'PATCH', path: string, payload?: unknown) {
  const { status, body } = await call(method, path, payload);
  expect(status).toBe(400);
  return (JSON.parse(body) as { fault_message: string }).fault_message;
}

const boot = () => call('PUT', '/actions', { action_type: 'InstanceStart' });

async function bootedWithDevice(config: Record<string, number> = { total_size_mib: 1024 }) {
  expect((await call('PUT', '/hotplug/memory', config)).status).toBe(204);
  expect((await boot()).status).toBe(204);
}

async function statusOf() {
  const { status, body } = await call('GET', '/hotplug/memory');
  expect(status).toBe(200);
  return JSON.parse(body) as {
    total_size_mib: number;
    slot_size_mib: number;
    block_size_mib: number;
    plugged_size_mib: number;
    requested_size_mib: number;
  };
}

describe('fake Firecracker: PUT /hotplug/memory', () => {
  it('applies the defaults slot 128 MiB and block 2 MiB', async () => {
    await bootedWithDevice({ total_size_mib: 1024 });
    expect(await statusOf()).toEqual({
      total_size_mib: 1024,
      slot_size_mib: 128,
      block_size_mib: 2,
      plugged_size_mib: 0,
      requested_size_mib: 0,
    });
  });

  it('is refused once the microVM has started', async () => {
    await boot();
    expect(await faultOf('PUT', '/hotplug/memory', { total_size_mib: 1024 })).toBe(
      'The requested operation is not supported after starting the microVM.',
    );
  });

  it('enforces the field minimums and their alignment', async () => {
    const refusals: [Record<string, number>, RegExp][] = [
      [{ total_size_mib: 1024, block_size_mib: 1 }, /Block size must not be lower than 2 MiB/],
      [{ total_size_mib: 1024, block_size_mib: 6 }, /Block size must be a power of 2/],
      [{ total_size_mib: 1024, slot_size_mib: 64 }, /Slot size must not be lower than 128 MiB/],
      [
        { total_size_mib: 1024, slot_size_mib: 130, block_size_mib: 4 },
        /Slot size must be a multiple of block size \(4 MiB\)/,
      ],
      [{ total_size_mib: 64 }, /Total size must not be lower than slot size \(128 MiB\)/],
      [{ total_size_mib: 1000 }, /Total size must be a multiple of slot size \(128 MiB\)/],
    ];
    for (const [config, message] of refusals) {
      expect(await faultOf('PUT', '/hotplug/memory', config)).toMatch(message);
    }
  });

  it('rejects unknown, missing and out-of-range fields as serde does', async () => {
    expect(
      await faultOf('PUT', '/hotplug/memory', { total_size_mib: 1024, block_size: 2 }),
    ).toMatch(/deserializing the json body of a request: unknown field `block_size`/);
    expect(await faultOf('PUT', '/hotplug/memory', { slot_size_mib: 128 })).toMatch(
      /missing field `total_size_mib`/,
    );
    expect(await faultOf('PUT', '/hotplug/memory', { total_size_mib: 2 ** 32 })).toMatch(
      /invalid value: integer `4294967296`, expected u32/,
    );
  });
});

describe('fake Firecracker: PATCH and GET /hotplug/memory', () => {
  it('refuses both before the microVM has started', async () => {
    await call('PUT', '/hotplug/memory', { total_size_mib: 1024 });
    const preBoot = 'The requested operation is not supported before starting the microVM.';
    expect(await faultOf('GET', '/hotplug/memory')).toBe(preBoot);
    expect(await faultOf('PATCH', '/hotplug/memory', { requested_size_mib: 0 })).toBe(preBoot);
  });

  it('reports a VM started without the device as device not found', async () => {
    await boot();
    expect(await faultOf('GET', '/hotplug/memory')).toMatch(/Device not found/);
    expect(await faultOf('PATCH', '/hotplug/memory', { requested_size_mib: 0 })).toMatch(
      /Device not found/,
    );
  });

  it('refuses a request until the guest driver is up (DeviceNotActive)', async () => {
    await bootedWithDevice();
    expect(await faultOf('PATCH', '/hotplug/memory', { requested_size_mib: 128 })).toMatch(
      /Device is not active/,
    );
    fc.activateGuestDriver();
    expect((await call('PATCH', '/hotplug/memory', { requested_size_mib: 128 })).status).toBe(204);
  });

  it('refuses sizes off the block grid or above the region (InvalidSize)', async () => {
    await bootedWithDevice({ total_size_mib: 1024, block_size_mib: 4 });
    fc.activateGuestDriver();
    expect(await faultOf('PATCH', '/hotplug/memory', { requested_size_mib: 6 })).toMatch(
      /Size 6291456 is invalid: it must be a multiple of block size/,
    );
    expect(await faultOf('PATCH', '/hotplug/memory', { requested_size_mib: 1028 })).toMatch(
      /Size 1077936128 is invalid/,
    );
    expect(await statusOf()).toMatchObject({ requested_size_mib: 0 });
  });

  it('rejects unknown fields in the update instead of ignoring them', async () => {
    await bootedWithDevice();
    fc.activateGuestDriver();
    expect(await faultOf('PATCH', '/hotplug/memory', { requested_size: 128 })).toMatch(
      /unknown field `requested_size`, expected one of `requested_size_mib`/,
    );
  });

  it('accepts the size already requested', async () => {
    await bootedWithDevice();
    fc.activateGuestDriver();
    expect((await call('PATCH', '/hotplug/memory', { requested_size_mib: 0 })).status).toBe(204);
  });

  it('plugs and unplugs asynchronously, a few blocks a step, never past the request', async () => {
    await fc.close();
    fc = await FakeFirecracker.start({ guestStepMs: 0, guestStepBlocks: 100 });
    await bootedWithDevice();
    fc.activateGuestDriver();
    await call('PATCH', '/hotplug/memory', { requested_size_mib: 512 });
    const plugged = async () => (await statusOf()).plugged_size_mib;
    expect(await plugged()).toBe(0);
    fc.stepGuest();
    expect(await plugged()).toBe(200);
    fc.stepGuest();
    fc.stepGuest();
    expect(await plugged()).toBe(512);
    fc.stepGuest();
    expect(await statusOf()).toMatchObject({ plugged_size_mib: 512, requested_size_mib: 512 });
    await call('PATCH', '/hotplug/memory', { requested_size_mib: 0 });
    fc.holdInGuest(100);
    fc.stepGuest();
    expect(await plugged()).toBe(312);
    fc.stepGuest();
    fc.stepGuest();
    expect(await plugged()).toBe(100);
  });

  it('answers an unknown route with InvalidPathMethod', async () => {
    expect(await faultOf('GET', '/hotplug/memry')).toBe(
      'Invalid request method and/or path: GET /hotplug/memry.',
    );
  });
});
