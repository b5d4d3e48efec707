/**
 * /dev/hotmem needs the HotMem kernel (the e2e suite covers the real ioctls). Here: the error
 * shapes without it, argument checks, the sysfs view against a temp-dir tree, and the event
 * transport with a FIFO standing in for the device (same poll/read path, records written by the
 * test).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { binding, type RawEvent } from '../../../lib/binding.js';
import { HotMemDevice, HotMemSysfs, toHotMemEvent } from '../../../lib/hotmem-device.js';
import { makeSysfsTree, type SysfsTree } from '../fixtures/sysfs-tree.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hotmem-dev-'));
  mkdirSync(join(dir, 'dev'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('HotMemDevice without a HotMem kernel', () => {
  it('reports the missing device as a Node-style ENOENT naming the path', () => {
    const path = join(dir, 'dev/hotmem');
    expect(HotMemDevice.available({ root: dir })).toBe(false);
    expect(() => HotMemDevice.open({ root: dir })).toThrow(
      expect.objectContaining({
        errno: -2,
        code: 'ENOENT',
        syscall: 'open',
        path,
        message: `ENOENT: no such file or directory, open '${path}'`,
      }),
    );
  });

  it('reports a file that is not the device as ENOTTY from the version ioctl', () => {
    writeFileSync(join(dir, 'dev/hotmem'), '');
    expect(HotMemDevice.available({ root: dir })).toBe(true);
    expect(() => HotMemDevice.open({ root: dir })).toThrow(
      expect.objectContaining({
        code: 'ENOTTY',
        syscall: 'ioctl',
        request: 'HOTMEM_IOC_VERSION',
        path: join(dir, 'dev/hotmem'),
      }),
    );
  });

  it('rejects bind and reclaim ioctls on a non-device with the request named', async () => {
    writeFileSync(join(dir, 'dev/hotmem'), '');
    const device = new (binding().HotMemDevice)(join(dir, 'dev/hotmem'));
    try {
      await expect(device.bind(0, 1, -1)).rejects.toMatchObject({
        code: 'ENOTTY',
        request: 'HOTMEM_IOC_BIND',
      });
      await expect(device.reclaim(1)).rejects.toMatchObject({
        code: 'ENOTTY',
        request: 'HOTMEM_IOC_RECLAIM',
      });
      expect(() => device.setFlags(1, 0)).toThrow(
        expect.objectContaining({ code: 'ENOTTY', request: 'HOTMEM_IOC_SET_FLAGS' }),
      );
    } finally {
      device.close();
    }
    expect(() => device.partitionInfo(0)).toThrow(/partitionInfo: .* is closed/);
  });

  it('checks native arguments with TypeErrors naming the argument', () => {
    writeFileSync(join(dir, 'dev/hotmem'), '');
    const device = new (binding().HotMemDevice)(join(dir, 'dev/hotmem'));
    try {
      expect(() => device.partitionInfo(-1)).toThrow(
        new TypeError("argument 'partition' must be an integer in [0, 2^32)"),
      );
      expect(() => device.bind('3' as never, 0, -1)).toThrow(/argument 'pidfd' must be/);
      expect(() => (device.bind as (...args: unknown[]) => unknown)(3, 0)).toThrow(
        /missing argument 'waitMs'/,
      );
      expect(() => device.watchEvents(42 as never)).toThrow(/'callback' must be a function/);
    } finally {
      device.close();
    }
  });
});

describe('HotMemSysfs against a temp-dir /sys/kernel/mm/hotmem', () => {
  let tree: SysfsTree | undefined;
  afterEach(() => tree?.remove());

  it('reads the ABI version, partition count and every partition', async () => {
    tree = makeSysfsTree({
      blocks: [
        { id: 12, state: 'online', validZones: ['HotMem1'], node: 2 },
        { id: 13, state: 'online', validZones: ['HotMem1'], node: 1 },
      ],
      hotmem: {
        maxPartitions: 3,
        partitions: {
          1: {
            state: 'bound',
            blocks: [12, 13],
            presentBytes: 256 << 20,
            freeBytes: 100 << 20,
            boundMms: 2,
            spilledPages: 5,
            oomKills: 1,
            spill: true,
          },
        },
      },
    });
    const sysfs = new HotMemSysfs({ root: tree.root });
    expect(await sysfs.info()).toEqual({ abiVersion: 2, maxPartitions: 3 });
    const partitions = await sysfs.partitions();
    expect(partitions.map((p) => p.state)).toEqual(['empty', 'bound', 'empty']);
    expect(partitions[1]).toEqual({
      id: 1,
      state: 'bound',
      flags: { spill: true, autoReclaim: false },
      presentBytes: 256 << 20,
      freeBytes: 100 << 20,
      boundMms: 2,
      spilledPages: 5,
      oomKills: 1,
      // The ioctl's fields: the node, which sysfs has no file for, is its blocks' lowest.
      nrBlocks: 2,
      node: 1,
      blocks: [12, 13],
    });
    expect(partitions[0]).toMatchObject({ blocks: [], nrBlocks: 0, node: 0 });
  });

  it('writes flags as 0/1 and names files holding garbage', async () => {
    tree = makeSysfsTree({ hotmem: { maxPartitions: 1 } });
    const sysfs = new HotMemSysfs({ root: tree.root });
    await sysfs.setFlag(0, 'autoReclaim', true);
    expect(tree.read('sys/kernel/mm/hotmem/partition0/auto_reclaim')).toBe('1');
    tree.write('sys/kernel/mm/hotmem/partition0/oom_kills', 'many\n');
    await expect(sysfs.partition(0)).rejects.toThrow(
      /expected a decimal number in .*partition0\/oom_kills, read 'many'/,
    );
    await expect(sysfs.partition(1)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

function eventRecord(event: { type: number; partition: number; seq: bigint; data: bigint }) {
  const layout = binding().abi.structs.hotmem_event;
  if (!layout) throw new Error('the addon exports no hotmem_event layout');
  const field = (name: string) => {
    const offset = layout.fields[name];
    if (offset === undefined) throw new Error(`hotmem_event has no ${name}`);
    return offset;
  };
  const record = Buffer.alloc(layout.sizeof);
  record.writeUInt32LE(layout.sizeof, field('size'));
  record.writeUInt32LE(event.type, field('type'));
  record.writeUInt32LE(event.partition, field('partition'));
  record.writeBigUInt64LE(event.seq, field('seq'));
  record.writeBigUInt64LE(123_456_789n, field('timestamp_ns'));
  record.writeBigUInt64LE(event.data, field('data'));
  return record;
}

describe('event delivery, with a FIFO standing in for /dev/hotmem', () => {
  function fifo(): string {
    const path = join(dir, 'dev/hotmem');
    execFileSync('mkfifo', [path]);
    return path;
  }

  it('delivers records written to the file as decoded events, in order', async () => {
    const path = fifo();
    const device = new (binding().HotMemDevice)(path);
    const received: RawEvent[] = [];
    const done = new Promise<void>((resolve, reject) => {
      device.watchEvents((error, events) => {
        if (error) reject(error);
        received.push(...events);
        if (received.length === 3) resolve();
      });
    });
    const writer = openSync(path, 'w');
    const { constants } = binding().abi;
    writeSync(
      writer,
      Buffer.concat([
        eventRecord({
          type: constants.HOTMEM_EVENT_RELEASED ?? -1,
          partition: 4,
          seq: 1n,
          data: 0n,
        }),
        eventRecord({
          type: constants.HOTMEM_EVENT_RECLAIMED ?? -1,
          partition: 4,
          seq: 2n,
          data: 1n << 28n,
        }),
      ]),
    );
    writeSync(
      writer,
      eventRecord({ type: constants.HOTMEM_EVENT_OOM ?? -1, partition: 5, seq: 3n, data: 4242n }),
    );
    await done;
    device.close();
    closeSync(writer);
    expect(received.map(toHotMemEvent)).toEqual([
      { type: 'released', partition: 4, seq: 1, timestampNs: 123_456_789n, data: 0 },
      { type: 'reclaimed', partition: 4, seq: 2, timestampNs: 123_456_789n, data: 1 << 28 },
      { type: 'oom', partition: 5, seq: 3, timestampNs: 123_456_789n, data: 4242 },
    ]);
  });

  it('reports a truncated record as EPROTO and stops watching', async () => {
    const path = fifo();
    const device = new (binding().HotMemDevice)(path);
    const failure = new Promise<Error | null>((resolve) => {
      device.watchEvents((error) => resolve(error));
    });
    const writer = openSync(path, 'w');
    writeSync(writer, Buffer.from([8, 0, 0, 0, 1, 0, 0, 0]));
    expect(await failure).toMatchObject({ code: 'EPROTO', syscall: 'read', path });
    // The watch is gone, so a new one can start.
    device.watchEvents(() => {});
    device.close();
    closeSync(writer);
  });

  it('ignores event types a newer kernel may add', () => {
    const raw = { type: 99, partition: 0, seq: 1n, timestampNs: 0n, data: 0n };
    expect(toHotMemEvent(raw)).toBeUndefined();
  });

  const script = (mode: 'unref' | 'ref' | 'close') => `
    const { createRequire } = require('node:module');
    const native = require(${JSON.stringify(join(process.cwd(), 'build/Release/hotmem.node'))});
    const device = new native.HotMemDevice(process.argv[1]);
    device.watchEvents(() => {});
    if ('${mode}' === 'unref') device.unref();
    if ('${mode}' === 'close') setTimeout(() => device.close(), 50);
  `;

  it.each([
    ['exits once the watch is unref()d', 'unref' as const],
    ['exits after close()', 'close' as const],
  ])('a process watching events %s', (_name, mode) => {
    const run = spawnSync(process.execPath, ['-e', script(mode), fifo()], { timeout: 5_000 });
    expect(run.signal).toBeNull();
    expect(run.status).toBe(0);
  });

  it('a process watching events stays alive while referenced', () => {
    const run = spawnSync(process.execPath, ['-e', script('ref'), fifo()], { timeout: 1_500 });
    expect(run.signal).toBe('SIGTERM');
  });
});
