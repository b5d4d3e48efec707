import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBlocks, onlineCommand, partitionOfZone } from '../../../lib/memory-blocks.js';
import { MIB, makeSysfsTree, type SysfsTree } from '../fixtures/sysfs-tree.js';

const OFFLINE_ZONES = ['Movable', 'Normal', 'HotMem0', 'HotMem1', 'HotMem2'];

describe('MemoryBlocks against a sysfs tree in a temp dir', () => {
  let tree: SysfsTree | undefined;
  afterEach(() => tree?.remove());

  function blocksWith(opts: Parameters<typeof makeSysfsTree>[0]): MemoryBlocks {
    tree = makeSysfsTree(opts);
    return new MemoryBlocks({ root: tree.root });
  }

  it('parses block_size_bytes as hex', () => {
    expect(blocksWith({ blockSize: 128 * MIB }).blockSize()).toBe(128 * MIB);
    expect(blocksWith({ blockSize: 2 * 1024 * MIB }).blockSize()).toBe(2 * 1024 * MIB);
  });

  it('rejects an unparsable block size, naming the file', () => {
    const blocks = blocksWith({});
    tree?.write('sys/devices/system/memory/block_size_bytes', 'lots\n');
    expect(() => blocks.blockSize()).toThrow(/unparsable block size 'lots' in .*block_size_bytes/);
  });

  it('lists blocks in numeric id order with state, zones, node and physical range', async () => {
    const blocks = blocksWith({
      blockSize: 128 * MIB,
      blocks: [
        { id: 10, state: 'online', validZones: ['HotMem2'], node: 1 },
        { id: 9, state: 'offline', validZones: OFFLINE_ZONES },
        { id: 2, state: 'online', validZones: ['Normal'] },
        { id: 11, state: 'going-offline', validZones: ['Movable'], node: null },
      ],
    });
    const list = await blocks.list();
    expect(list.map((b) => b.id)).toEqual([2, 9, 10, 11]);
    expect(list[0]).toEqual({
      id: 2,
      state: 'online',
      zone: 'Normal',
      validZones: ['Normal'],
      node: 0,
      start: 2n * 128n * BigInt(MIB),
      size: 128 * MIB,
      partition: null,
    });
    expect(list[1]).toMatchObject({ state: 'offline', zone: null, validZones: OFFLINE_ZONES });
    expect(list[2]).toMatchObject({ zone: 'HotMem2', partition: 2, node: 1 });
    expect(list[2]?.start).toBe(10n * 128n * BigInt(MIB));
    expect(list[3]).toMatchObject({ state: 'going-offline', node: -1 });
  });

  it('reports no zones when valid_zones is absent', async () => {
    const blocks = blocksWith({ blocks: [{ id: 0, state: 'online' }] });
    expect(await blocks.get(0)).toMatchObject({ validZones: [], zone: null, partition: null });
  });

  it('gets one block, and fails for a missing one like Node fails for a missing file', async () => {
    const blocks = blocksWith({ blocks: [{ id: 4, validZones: OFFLINE_ZONES }] });
    expect((await blocks.get(4)).id).toBe(4);
    const path = join(tree?.memoryDir ?? '', 'memory5', 'state');
    await expect(blocks.get(5)).rejects.toMatchObject({
      errno: -2,
      code: 'ENOENT',
      syscall: 'open',
      path,
      message: `ENOENT: no such file or directory, open '${path}'`,
    });
  });

  it('rejects a block whose state the kernel would never report', async () => {
    const blocks = blocksWith({ blocks: [{ id: 1 }] });
    tree?.write('sys/devices/system/memory/memory1/state', 'sideways\n');
    await expect(blocks.get(1)).rejects.toThrow(/unexpected state 'sideways' in .*memory1\/state/);
  });

  it('onlines into a partition and into stock zones by writing memoryN/state', async () => {
    const blocks = blocksWith({ blocks: [{ id: 3 }, { id: 4 }] });
    await blocks.online(3, { partition: 2 });
    expect(tree?.read('sys/devices/system/memory/memory3/state')).toBe('online_hotmem2');
    await blocks.online(4, 'online_movable');
    expect(tree?.read('sys/devices/system/memory/memory4/state')).toBe('online_movable');
    await blocks.offline(4);
    expect(tree?.read('sys/devices/system/memory/memory4/state')).toBe('offline');
  });

  it('rejects a failed state write with errno, code, syscall and path', async () => {
    const blocks = blocksWith({ blocks: [{ id: 6 }] });
    const state = join(tree?.memoryDir ?? '', 'memory6', 'state');
    rmSync(state);
    mkdirSync(state);
    await expect(blocks.offline(6)).rejects.toMatchObject({
      code: 'EISDIR',
      errno: -21,
      syscall: 'open',
      path: state,
    });
  });

  it('validates ids and targets before touching sysfs', async () => {
    const blocks = blocksWith({ blocks: [{ id: 1 }] });
    await expect(blocks.online(-1, 'online')).rejects.toThrow(TypeError);
    await expect(blocks.online(1.5, 'online')).rejects.toThrow(/'id' must be an integer/);
    await expect(blocks.online(1, 'online_sideways' as never)).rejects.toThrow(
      /'target' must be one of 'online', 'online_kernel', 'online_movable' or \{ partition: N \}/,
    );
    await expect(blocks.online(1, { partition: -3 })).rejects.toThrow(/target.partition/);
    expect(tree?.read('sys/devices/system/memory/memory1/state')).toBe('offline\n');
  });

  it('reads and sets auto_online_blocks, refusing unknown policies', async () => {
    const blocks = blocksWith({ autoOnline: 'online_movable' });
    expect(await blocks.autoOnline()).toBe('online_movable');
    await blocks.setAutoOnline('offline');
    expect(await blocks.autoOnline()).toBe('offline');
    await expect(blocks.setAutoOnline('always')).rejects.toThrow(/'policy' must be one of/);
  });
});

describe('zone and target names', () => {
  it('maps HotMem<N> zones to partitions and nothing else', () => {
    expect(partitionOfZone('HotMem0')).toBe(0);
    expect(partitionOfZone('HotMem31')).toBe(31);
    expect(partitionOfZone('Movable')).toBeNull();
    expect(partitionOfZone('HotMemX')).toBeNull();
    expect(partitionOfZone(null)).toBeNull();
  });

  it('writes online_hotmem<N> for a partition target', () => {
    expect(onlineCommand({ partition: 7 })).toBe('online_hotmem7');
    expect(onlineCommand('online_kernel')).toBe('online_kernel');
  });
});
