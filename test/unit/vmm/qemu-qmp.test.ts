// The QMP client against a real QEMU process: a q35 machine with a virtio-mem device that never
// starts its vCPUs (-S), so no guest kernel is involved and the device's plugged size stays 0.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type HotplugMemory, HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import {
  QmpClient,
  QmpCommandError,
  QmpConnectionError,
  VirtioMemDevice,
} from '../../../lib/host/vmm/qemu.js';

const MiB = 1024 * 1024;

function startQemu(socket: string): ChildProcess {
  return spawn(
    'qemu-system-x86_64',
    [
      '-machine',
      'q35',
      '-accel',
      'tcg',
      '-S',
      '-nodefaults',
      '-display',
      'none',
      '-m',
      '128M,maxmem=1152M',
      '-object',
      'memory-backend-ram,id=vmem0,size=1G',
      '-device',
      'virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0',
      '-qmp',
      `unix:${socket},server=on,wait=off`,
    ],
    { stdio: 'ignore' },
  );
}

describe('QmpClient against qemu-system-x86_64', () => {
  let dir: string;
  let qemu: ChildProcess;
  let qmp: QmpClient;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qmp-test-'));
    qemu = startQemu(join(dir, 'qmp.sock'));
    qmp = await QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: 20_000 });
  });

  afterAll(() => {
    qmp?.close();
    qemu?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('negotiates capabilities and reports QEMU version', async () => {
    expect(qmp.version?.major).toBeGreaterThanOrEqual(7);
    const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
    expect(status).toMatchObject({ status: 'prelaunch', running: false });
  });

  it('rejects an unknown command with QEMU error class and description', async () => {
    const err = await qmp.execute('no-such-command').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({ command: 'no-such-command', errorClass: 'CommandNotFound' });
  });

  it('reads and sets the virtio-mem requested size', async () => {
    const dev = new VirtioMemDevice(qmp, 'vm0');
    expect(await dev.blockSize()).toBe(2 * MiB);
    expect(await dev.regionSize()).toBe(1024 * MiB);
    expect(await dev.size()).toBe(0);
    await dev.setRequestedSize(256 * MiB);
    expect(await dev.requestedSize()).toBe(256 * MiB);
    await dev.setRequestedSize(0);
  });

  it('reads the block size once, so a resize costs QEMU one command', async () => {
    const dev = new VirtioMemDevice(qmp, 'vm0');
    const sent: string[] = [];
    const execute = qmp.execute.bind(qmp);
    const spy = vi.spyOn(qmp, 'execute').mockImplementation((command, args, opts) => {
      sent.push(command);
      return execute(command, args, opts);
    });
    try {
      await dev.setRequestedSize(4 * MiB);
      await dev.setRequestedSize(0);
    } finally {
      spy.mockRestore();
    }
    expect(sent).toEqual(['qom-get', 'qom-set', 'qom-set']);
  });

  it('refuses a requested size that is not a multiple of the block size, without sending it', async () => {
    const dev = new VirtioMemDevice(qmp, 'vm0');
    const error = await dev.setRequestedSize(3 * MiB).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugMemoryError);
    expect(error).toMatchObject({ code: 'ERR_NOT_BLOCK_MULTIPLE', requestedBytes: 3 * MiB });
    expect((error as Error).message).toMatch(/multiple of the block size 2097152/);
    await expect(dev.resize(-2 * MiB, { timeoutMs: 100 })).rejects.toMatchObject({
      code: 'ERR_NOT_BLOCK_MULTIPLE',
    });
    expect(await dev.requestedSize()).toBe(0);
  });

  it('maps QEMU refusing a size above the region to ERR_ABOVE_REGION', async () => {
    const memory: HotplugMemory = new VirtioMemDevice(qmp, 'vm0');
    const error = await memory.resize(1026 * MiB, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugMemoryError);
    expect(error).toMatchObject({ code: 'ERR_ABOVE_REGION', requestedBytes: 1026 * MiB });
    expect((error as HotplugMemoryError).cause).toBeInstanceOf(QmpCommandError);
    expect(await memory.requestedSize()).toBe(0);
  });

  it('gives up waiting for a size the guest never reaches, saying what it saw', async () => {
    // The vCPUs never run, so nothing is plugged however long we wait.
    const dev = new VirtioMemDevice(qmp, 'vm0');
    await dev.setRequestedSize(64 * MiB);
    const error = await dev.waitForSize(64 * MiB, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugMemoryError);
    expect(error).toMatchObject({ code: 'ERR_RESIZE_TIMEOUT', lastSize: 0 });
    expect((error as Error).message).toMatch(/plugged size is 0 bytes, not 67108864, after 300 ms/);
    await expect(dev.resize(32 * MiB, { timeoutMs: 200 })).rejects.toMatchObject({
      code: 'ERR_RESIZE_TIMEOUT',
      requestedBytes: 32 * MiB,
      lastSize: 0,
    });
    await dev.setRequestedSize(0);
  });

  it('stops waiting when its signal aborts, leaving the request standing', async () => {
    const dev = new VirtioMemDevice(qmp, 'vm0');
    const abort = new AbortController();
    const reason = new Error('the target moved');
    const waiting = dev.resize(64 * MiB, { timeoutMs: 10_000, signal: abort.signal });
    setTimeout(() => abort.abort(reason), 50);
    const began = performance.now();
    await expect(waiting).rejects.toBe(reason);
    expect(performance.now() - began).toBeLessThan(5_000);
    expect(await dev.requestedSize()).toBe(64 * MiB);
    await dev.setRequestedSize(0);
  });

  it('reports an unknown device clearly', async () => {
    await expect(new VirtioMemDevice(qmp, 'nope').regionSize()).rejects.toThrow(
      /no virtio-mem device 'nope'/,
    );
    await expect(new VirtioMemDevice(qmp, 'nope').size()).rejects.toBeInstanceOf(QmpCommandError);
  });

  it('fails commands once QEMU has gone away', async () => {
    const socket = join(dir, 'second.sock');
    const second = startQemu(socket);
    const client = await QmpClient.connect(socket, { timeoutMs: 20_000 });
    const closed = once(client, 'close');
    second.kill('SIGKILL');
    await closed;
    await expect(client.execute('query-status')).rejects.toBeInstanceOf(QmpConnectionError);
  });
});

describe('QmpClient.connect', () => {
  it('gives up on a socket nobody serves, naming it', async () => {
    const path = join(tmpdir(), `no-qemu-${process.pid}.sock`);
    await expect(QmpClient.connect(path, { timeoutMs: 300 })).rejects.toThrow(
      new RegExp(`cannot connect to QMP socket '${path}'`),
    );
  });
});
