/**
 * /dev/hotmem: partition queries, binding a process (by pidfd) to a partition, partition flags,
 * reclaim, and the kernel's event stream; plus the read-only view in /sys/kernel/mm/hotmem.
 */

import { EventEmitter } from 'node:events';
import { accessSync, constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import {
  binding,
  type NativeHotMemDevice,
  type RawEvent,
  type RawPartitionInfo,
  type RawReclaimReport,
} from './binding.js';
import { checkInteger, HotMemError, invalidArgument, withCallerStack } from './errors.js';
import { MemoryBlocks } from './memory-blocks.js';

export type PartitionState = 'empty' | 'free' | 'bound' | 'reclaiming';

export interface PartitionInfo {
  id: number;
  state: PartitionState;
  flags: { spill: boolean; autoReclaim: boolean };
  nrBlocks: number;
  node: number;
  presentBytes: number;
  freeBytes: number;
  boundMms: number;
  spilledPages: number;
  oomKills: number;
}

export interface ReclaimReport {
  partition: number;
  blocks: number;
  bytes: number;
  durationNs: bigint | number;
  pagesMigrated: number;
}

export type HotMemEventType = 'released' | 'reclaimed' | 'oom' | 'overflow';

export type HotMemEvent = {
  type: HotMemEventType;
  partition: number;
  seq: number;
  timestampNs: bigint;
  /** reclaimed: bytes; oom: pid killed; overflow: events dropped. */
  data: number;
};

export interface HotMemDeviceEvents {
  event: [HotMemEvent];
  /** The event stream failed; no more events arrive. */
  error: [Error];
}

export interface DeviceOptions {
  /** Prefix of /dev/hotmem (default '/'), for tests. */
  root?: string;
}

const MAX_U32 = 0xffff_ffff;
/** File descriptors and HOTMEM_BIND_WAIT's millisecond timeout reach the addon as int32. */
const MAX_INT32 = 0x7fff_ffff;

function abiConstant(name: string): number {
  const value = binding().abi.constants[name];
  if (value === undefined) throw new Error(`the native addon does not export ${name}`);
  return value;
}

function stateName(state: number): PartitionState {
  const names: Record<number, PartitionState> = {
    [abiConstant('HOTMEM_PARTITION_EMPTY')]: 'empty',
    [abiConstant('HOTMEM_PARTITION_FREE')]: 'free',
    [abiConstant('HOTMEM_PARTITION_BOUND')]: 'bound',
    [abiConstant('HOTMEM_PARTITION_RECLAIMING')]: 'reclaiming',
  };
  const name = names[state];
  if (name === undefined) throw new Error(`unknown partition state ${state} from the kernel`);
  return name;
}

function eventTypeName(type: number): HotMemEventType | undefined {
  const names: Record<number, HotMemEventType> = {
    [abiConstant('HOTMEM_EVENT_RELEASED')]: 'released',
    [abiConstant('HOTMEM_EVENT_RECLAIMED')]: 'reclaimed',
    [abiConstant('HOTMEM_EVENT_OOM')]: 'oom',
    [abiConstant('HOTMEM_EVENT_OVERFLOW')]: 'overflow',
  };
  return names[type];
}

/** Flags as the kernel's HOTMEM_PARTITION_* bits. */
export function flagBits(flags: { spill: boolean; autoReclaim: boolean }): number {
  return (
    (flags.spill ? abiConstant('HOTMEM_PARTITION_SPILL') : 0) |
    (flags.autoReclaim ? abiConstant('HOTMEM_PARTITION_AUTO_RECLAIM') : 0)
  );
}

function decodeFlags(bits: number): { spill: boolean; autoReclaim: boolean } {
  return {
    spill: (bits & abiConstant('HOTMEM_PARTITION_SPILL')) !== 0,
    autoReclaim: (bits & abiConstant('HOTMEM_PARTITION_AUTO_RECLAIM')) !== 0,
  };
}

function toPartitionInfo(raw: RawPartitionInfo): PartitionInfo {
  return {
    id: raw.id,
    state: stateName(raw.state),
    flags: decodeFlags(raw.flags),
    nrBlocks: raw.nrBlocks,
    node: raw.node,
    presentBytes: Number(raw.presentBytes),
    freeBytes: Number(raw.freeBytes),
    boundMms: Number(raw.boundMms),
    spilledPages: Number(raw.spilledPages),
    oomKills: Number(raw.oomKills),
  };
}

function toReclaimReport(raw: RawReclaimReport): ReclaimReport {
  return {
    partition: raw.partition,
    blocks: raw.blocks,
    bytes: Number(raw.bytes),
    durationNs: raw.durationNs,
    pagesMigrated: Number(raw.pagesMigrated),
  };
}

export function devicePath(opts: DeviceOptions = {}): string {
  return join(opts.root ?? '/', 'dev/hotmem');
}

/**
 * An open /dev/hotmem. Listening to 'event' opens a second file for the event stream (the kernel
 * queues events per open file from its open on); it keeps the process alive unless unref()'d.
 * 'error' is emitted if the stream fails, after which no more events arrive.
 */
export class HotMemDevice extends EventEmitter<HotMemDeviceEvents> {
  readonly #native: NativeHotMemDevice;
  #closed = false;

  private constructor(native: NativeHotMemDevice) {
    super();
    this.#native = native;
    // Listener bookkeeping events are not part of the typed map.
    const emitter = this as EventEmitter;
    emitter.on('newListener', (event) => {
      if (event === 'event' && this.listenerCount('event') === 0 && !this.#closed) {
        this.#native.watchEvents((error, events) => this.#deliver(error, events));
      }
    });
    emitter.on('removeListener', (event) => {
      if (event === 'event' && this.listenerCount('event') === 0) this.#native.unwatchEvents();
    });
  }

  /**
   * Opens <root>/dev/hotmem; throws the open error (ENOENT: no HotMem kernel, EACCES: no
   * CAP_SYS_ADMIN) or ERR_ABI_MISMATCH.
   */
  static open(opts: DeviceOptions = {}): HotMemDevice {
    const native = new (binding().HotMemDevice)(devicePath(opts));
    const device = new HotMemDevice(native);
    try {
      const { abiVersion } = device.version();
      const expected = binding().abi.HOTMEM_ABI_VERSION;
      if (abiVersion !== expected) {
        throw new HotMemError(
          'ERR_ABI_MISMATCH',
          `${native.path} speaks HotMem ABI ${abiVersion}, this addon was built for ${expected}`,
        );
      }
    } catch (error) {
      device.close();
      throw error;
    }
    return device;
  }

  /** Whether <root>/dev/hotmem exists and is readable and writable by this process. */
  static available(opts: DeviceOptions = {}): boolean {
    try {
      accessSync(devicePath(opts), fsConstants.R_OK | fsConstants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  get path(): string {
    return this.#native.path;
  }

  version(): { abiVersion: number; maxPartitions: number; nrPartitions: number } {
    return this.#native.version();
  }

  partition(id: number): PartitionInfo {
    checkInteger('id', id, 0, MAX_U32);
    return toPartitionInfo(this.#native.partitionInfo(id));
  }

  /** Every partition id the kernel supports, EMPTY ones included. */
  partitions(): PartitionInfo[] {
    const { maxPartitions } = this.version();
    return Array.from({ length: maxPartitions }, (_, id) => this.partition(id));
  }

  /**
   * Binds the process behind pidfd (and every process sharing or later forking its mm) to a
   * partition. Without waitMs an unpopulated partition fails at once (ENXIO); with waitMs the
   * kernel sleeps until it is populated or waitMs elapse (ETIMEDOUT). An mm bound to another
   * partition gives EBUSY; so does a partition being reclaimed, unplugged or offlined, for which
   * waitMs waits instead.
   */
  async bind(pidfd: number, partition: number, opts: { waitMs?: number } = {}): Promise<void> {
    checkInteger('pidfd', pidfd, 0, MAX_INT32);
    checkInteger('partition', partition, 0, MAX_U32);
    if (opts.waitMs !== undefined) checkInteger('opts.waitMs', opts.waitMs, 1, MAX_INT32);
    await withCallerStack(this.#native.bind(pidfd, partition, opts.waitMs ?? -1));
  }

  /** Changes the given flags; the others keep their current value. */
  setFlags(partition: number, flags: { spill?: boolean; autoReclaim?: boolean }): void {
    checkInteger('partition', partition, 0, MAX_U32);
    for (const [name, value] of Object.entries(flags)) {
      if (!['spill', 'autoReclaim'].includes(name) || typeof value !== 'boolean') {
        throw invalidArgument(`flags.${name}`, 'one of spill/autoReclaim set to a boolean', value);
      }
    }
    const current = this.partition(partition).flags;
    this.#native.setFlags(partition, flagBits({ ...current, ...flags }));
  }

  /** Offlines every block of a FREE partition; EBUSY errors carry busyPfn. */
  async reclaim(partition: number): Promise<ReclaimReport> {
    checkInteger('partition', partition, 0, MAX_U32);
    return toReclaimReport(await withCallerStack(this.#native.reclaim(partition)));
  }

  /** Lets the process exit while the event stream is open. */
  unref(): this {
    this.#native.unref();
    return this;
  }

  ref(): this {
    this.#native.ref();
    return this;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
  }

  #deliver(error: Error | null, events: RawEvent[]): void {
    for (const raw of events) {
      const event = toHotMemEvent(raw);
      if (event) this.emit('event', event);
    }
    if (error) this.emit('error', error);
  }
}

/** Decodes a raw event record; undefined for a type this ABI does not know (a newer kernel's). */
export function toHotMemEvent(raw: RawEvent): HotMemEvent | undefined {
  const type = eventTypeName(raw.type);
  if (type === undefined) return undefined;
  return {
    type,
    partition: raw.partition,
    seq: Number(raw.seq),
    timestampNs: raw.timestampNs,
    data: Number(raw.data),
  };
}

export interface HotMemSysfsInfo {
  abiVersion: number;
  maxPartitions: number;
}

/** A partition as the ioctl reports it, plus its block ids, which sysfs also lists. */
export interface PartitionSysfs extends PartitionInfo {
  /** Memory block ids onlined into the partition. */
  blocks: number[];
}

/**
 * <root>/sys/kernel/mm/hotmem: the same partition state as the ioctls, readable without
 * CAP_SYS_ADMIN, plus the partition's block ids. The one field it has no file for, the node, is
 * found from the blocks in <root>/sys/devices/system/memory.
 */
export class HotMemSysfs {
  readonly dir: string;
  readonly #blocks: MemoryBlocks;

  constructor(opts: DeviceOptions = {}) {
    this.dir = join(opts.root ?? '/', 'sys/kernel/mm/hotmem');
    this.#blocks = new MemoryBlocks({ root: opts.root ?? '/' });
  }

  async info(): Promise<HotMemSysfsInfo> {
    return {
      abiVersion: await this.#readNumber('abi_version'),
      maxPartitions: await this.#readNumber('max_partitions'),
    };
  }

  async partition(id: number): Promise<PartitionSysfs> {
    checkInteger('id', id, 0, MAX_U32);
    const dir = `partition${id}`;
    const state = (await this.#read(`${dir}/state`)) as PartitionState;
    if (!['empty', 'free', 'bound', 'reclaiming'].includes(state)) {
      throw new Error(`unexpected partition state '${state}' in ${join(this.dir, dir, 'state')}`);
    }
    const blocksText = await this.#read(`${dir}/blocks`);
    const blocks = blocksText === '' ? [] : blocksText.split(/\s+/).map(Number);
    return {
      id,
      state,
      flags: {
        spill: (await this.#readNumber(`${dir}/spill`)) !== 0,
        autoReclaim: (await this.#readNumber(`${dir}/auto_reclaim`)) !== 0,
      },
      presentBytes: await this.#readNumber(`${dir}/present_bytes`),
      freeBytes: await this.#readNumber(`${dir}/free_bytes`),
      boundMms: await this.#readNumber(`${dir}/bound_mms`),
      spilledPages: await this.#readNumber(`${dir}/spilled_pages`),
      oomKills: await this.#readNumber(`${dir}/oom_kills`),
      nrBlocks: blocks.length,
      node: await this.#node(blocks),
      blocks,
    };
  }

  async partitions(): Promise<PartitionSysfs[]> {
    const { maxPartitions } = await this.info();
    return Promise.all(Array.from({ length: maxPartitions }, (_, id) => this.partition(id)));
  }

  async setFlag(id: number, flag: 'spill' | 'autoReclaim', value: boolean): Promise<void> {
    checkInteger('id', id, 0, MAX_U32);
    const file = flag === 'spill' ? 'spill' : 'auto_reclaim';
    await withCallerStack(
      binding().writeAttribute(join(this.dir, `partition${id}`, file), value ? '1' : '0'),
    );
  }

  /**
   * What HOTMEM_IOC_PARTITION_INFO reports: the first node (in id order) on which the partition
   * has memory, the lowest node of its blocks; 0 when it has none, as the kernel says then.
   */
  async #node(blocks: number[]): Promise<number> {
    const nodes = await Promise.all(blocks.map(async (id) => (await this.#blocks.get(id)).node));
    const known = nodes.filter((node) => node >= 0);
    return known.length === 0 ? 0 : Math.min(...known);
  }

  async #read(file: string): Promise<string> {
    return (await withCallerStack(binding().readAttribute(join(this.dir, file)))).trim();
  }

  async #readNumber(file: string): Promise<number> {
    const text = await this.#read(file);
    if (!/^\d+$/.test(text)) {
      throw new Error(`expected a decimal number in ${join(this.dir, file)}, read '${text}'`);
    }
    return Number(text);
  }
}
