/**
 * Memory blocks under <root>/sys/devices/system/memory: list them, online one into a stock zone or
 * a HotMem partition, offline one, and read/set auto_online_blocks.
 */
import { join } from 'node:path';
import { binding, type RawMemoryBlock } from './binding.js';
import { checkInteger, invalidArgument, withCallerStack } from './errors.js';

export type MemoryBlockState = 'online' | 'offline' | 'going-offline';

export interface MemoryBlock {
  id: number;
  state: MemoryBlockState;
  /** The zone an online block is in (e.g. 'Movable', 'HotMem3'); null while offline. */
  zone: string | null;
  /** Offline: the zones it may be onlined to, default first. Online: its zone. */
  validZones: string[];
  /** NUMA node, -1 when sysfs has no nodeN link for the block. */
  node: number;
  /** Physical start address. */
  start: bigint;
  size: number;
  /** The HotMem partition an online block belongs to, else null. */
  partition: number | null;
}

export type OnlineTarget = 'online' | 'online_kernel' | 'online_movable' | { partition: number };

const STATES: readonly string[] = ['online', 'offline', 'going-offline'];
const STOCK_TARGETS: readonly string[] = ['online', 'online_kernel', 'online_movable'];
const AUTO_ONLINE_POLICIES: readonly string[] = [
  'offline',
  'online',
  'online_kernel',
  'online_movable',
];
const PARTITION_ZONE = /^HotMem(\d+)$/;
/** Block and partition ids are u32 in the kernel. */
const MAX_U32 = 0xffff_ffff;

/** The partition of a zone named HotMem<N>, else null. */
export function partitionOfZone(zone: string | null): number | null {
  const match = zone === null ? null : PARTITION_ZONE.exec(zone);
  return match ? Number(match[1]) : null;
}

/** The zone name the kernel gives partition N. */
export function partitionZone(partition: number): string {
  return `HotMem${partition}`;
}

/** The string written to memoryN/state for a target. */
export function onlineCommand(target: OnlineTarget): string {
  if (typeof target === 'object' && target !== null) {
    checkInteger('target.partition', target.partition, 0, MAX_U32);
    return `online_hotmem${target.partition}`;
  }
  if (typeof target !== 'string' || !STOCK_TARGETS.includes(target)) {
    throw invalidArgument(
      'target',
      `one of ${STOCK_TARGETS.map((t) => `'${t}'`).join(', ')} or { partition: N }`,
      target,
    );
  }
  return target;
}

export class MemoryBlocks {
  readonly root: string;
  readonly dir: string;
  #blockSize: number | undefined;

  constructor(opts: { root?: string } = {}) {
    this.root = opts.root ?? '/';
    this.dir = join(this.root, 'sys/devices/system/memory');
  }

  /** Bytes per memory block (block_size_bytes), read once. */
  blockSize(): number {
    this.#blockSize ??= binding().memoryBlockSize(this.dir);
    return this.#blockSize;
  }

  async list(): Promise<MemoryBlock[]> {
    const raw = await withCallerStack(binding().listMemoryBlocks(this.dir));
    return raw.map((block) => this.#toBlock(block));
  }

  async get(id: number): Promise<MemoryBlock> {
    checkInteger('id', id, 0, MAX_U32);
    return this.#toBlock(await withCallerStack(binding().readMemoryBlock(this.dir, id)));
  }

  /** Onlines an offline block; rejects with the kernel's errno (EBUSY, EINVAL) and path. */
  async online(id: number, target: OnlineTarget): Promise<void> {
    checkInteger('id', id, 0, MAX_U32);
    await withCallerStack(binding().writeAttribute(this.#statePath(id), onlineCommand(target)));
  }

  /** Offlines an online block; may take long while the kernel migrates its pages. */
  async offline(id: number): Promise<void> {
    checkInteger('id', id, 0, MAX_U32);
    await withCallerStack(binding().writeAttribute(this.#statePath(id), 'offline'));
  }

  /** The policy for newly added blocks (auto_online_blocks). */
  async autoOnline(): Promise<string> {
    const text = await withCallerStack(binding().readAttribute(this.#autoOnlinePath()));
    return text.trim();
  }

  async setAutoOnline(policy: string): Promise<void> {
    if (!AUTO_ONLINE_POLICIES.includes(policy)) {
      throw invalidArgument(
        'policy',
        `one of ${AUTO_ONLINE_POLICIES.map((p) => `'${p}'`).join(', ')}`,
        policy,
      );
    }
    await withCallerStack(binding().writeAttribute(this.#autoOnlinePath(), policy));
  }

  #statePath(id: number): string {
    return join(this.dir, `memory${id}`, 'state');
  }

  #autoOnlinePath(): string {
    return join(this.dir, 'auto_online_blocks');
  }

  #toBlock(raw: RawMemoryBlock): MemoryBlock {
    if (!STATES.includes(raw.state)) {
      throw new Error(`unexpected state '${raw.state}' in ${this.#statePath(raw.id)}`);
    }
    const size = this.blockSize();
    // An online block spanning zones reads 'none'.
    const first = raw.state === 'online' ? raw.validZones[0] : undefined;
    const zone = first === undefined || first === 'none' ? null : first;
    return {
      id: raw.id,
      state: raw.state as MemoryBlockState,
      zone,
      validZones: raw.validZones,
      node: raw.node,
      start: raw.physIndex * BigInt(size),
      size,
      partition: partitionOfZone(zone),
    };
  }
}
