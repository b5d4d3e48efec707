/**
 * The mechanism of the partition lifecycle: populates HotMem partitions from hot-plugged offline
 * memory blocks, reclaims a partition when asked, reports one snapshot of partitions and blocks,
 * and passes the kernel's events on. It decides nothing: when to reclaim, and whether a reclaim
 * is already under way, is its caller's policy (the agent's, or `hotmem run`'s).
 *
 * Memory the host plugs shows up as offline blocks (no auto-onlining); acquire() picks an EMPTY
 * partition and onlines whole blocks into it, waiting (bounded retries, growing delays) while
 * the host is still plugging. On any failure it offlines what it onlined. The kernel queues a
 * 'released' event once the last process bound to a partition is gone; the manager emits it.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import pino, { type Logger } from 'pino';
import { HotMemError } from './errors.js';
import type { HotMemEvent, PartitionInfo, ReclaimReport } from './hotmem-device.js';
import { type MemoryBlock, type MemoryBlocks, partitionZone } from './memory-blocks.js';

/** What the manager needs of MemoryBlocks (tests pass a fake kernel). */
export type BlockSource = Pick<MemoryBlocks, 'blockSize' | 'list' | 'online' | 'offline'>;

/** What the manager needs of HotMemDevice (tests pass a fake kernel). */
export interface PartitionDevice {
  partitions(): PartitionInfo[];
  setFlags(partition: number, flags: { spill?: boolean; autoReclaim?: boolean }): void;
  reclaim(partition: number): Promise<ReclaimReport>;
  on(event: 'event', listener: (event: HotMemEvent) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  off(event: 'event', listener: (event: HotMemEvent) => void): unknown;
  off(event: 'error', listener: (error: Error) => void): unknown;
}

export interface PartitionManagerOptions {
  blocks: BlockSource;
  device: PartitionDevice;
  logger?: Logger;
  /** Clock for deadlines, in ms. */
  now?: () => number;
  /** Waits between retries; tests inject one that advances their clock. */
  delay?: (ms: number) => Promise<void>;
  /** Retry delays while waiting for plugged blocks: doubling from initialMs up to maxMs. */
  backoff?: { initialMs: number; maxMs: number };
}

export interface AcquireOptions {
  /** How long to wait for the host to plug enough memory (default 10 s; 0: do not wait). */
  timeoutMs?: number;
  /** Let the partition fall back to ordinary zones when it runs out (default false). */
  spill?: boolean;
}

export interface Acquired {
  partition: number;
  /** Bytes onlined into the partition: whole blocks, at least the bytes asked for. */
  bytes: number;
  blocks: number[];
}

/** One look at the blocks and the partitions (one listing of the blocks). */
export interface ManagerStatus {
  blockSize: number;
  /** Every memory block Linux has, boot memory included, online or not. */
  totalBytes: number;
  onlineBytes: number;
  /** Offline blocks: hot-plugged memory in no partition yet, what acquire() draws on. */
  offlineBytes: number;
  /** Online bytes that belong to HotMem partitions. */
  partitionBytes: number;
  partitions: PartitionInfo[];
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_BACKOFF = { initialMs: 10, maxMs: 1_000 };

export interface PartitionManagerEvents {
  /** The last process bound to the partition is gone. */
  released: [{ partition: number }];
  /** A reclaim() finished: the partition's blocks are offline. */
  reclaimed: [ReclaimReport];
  /** A reclaim() failed; the partition stays populated. */
  reclaimFailed: [{ partition: number; error: unknown }];
  /** The partition ran out of memory and the kernel killed pid. */
  oom: [{ partition: number; pid: number }];
  /** The kernel dropped events: releases may have gone unseen. */
  overflow: [{ dropped: number }];
  /** The device's event stream failed: no more releases will be seen. */
  streamError: [{ error: Error }];
}

type PartitionManagerListener<E extends keyof PartitionManagerEvents> = (
  ...args: PartitionManagerEvents[E]
) => void;

/** What the agent drives of the manager; its unit tests drive a fake that keeps the same rules. */
export interface PartitionManagerApi {
  init(): Promise<void>;
  acquire(bytes: number, opts?: AcquireOptions): Promise<Acquired>;
  reclaim(partition: number): Promise<ReclaimReport>;
  status(): Promise<ManagerStatus>;
  on<E extends keyof PartitionManagerEvents>(
    event: E,
    listener: PartitionManagerListener<E>,
  ): unknown;
  off<E extends keyof PartitionManagerEvents>(
    event: E,
    listener: PartitionManagerListener<E>,
  ): unknown;
}

export class PartitionManager
  extends EventEmitter<PartitionManagerEvents>
  implements PartitionManagerApi
{
  readonly #blocks: BlockSource;
  readonly #device: PartitionDevice;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #delay: (ms: number) => Promise<void>;
  readonly #backoff: { initialMs: number; maxMs: number };
  /** Partitions populated (or being populated) and their blocks; never picked by acquire(). */
  readonly #populated = new Map<number, number[]>();
  /** Partitions an in-flight acquire() is populating. */
  readonly #acquiring = new Set<number>();
  /** Offline blocks an in-flight acquire() is onlining. */
  readonly #claimedBlocks = new Set<number>();
  readonly #onEvent = (event: HotMemEvent) => this.#handleEvent(event);
  // Reported by whoever listens (the agent logs it): the manager only passes it on.
  readonly #onStreamError = (error: Error) => this.emit('streamError', { error });
  #listening = false;

  constructor(opts: PartitionManagerOptions) {
    super();
    this.#blocks = opts.blocks;
    this.#device = opts.device;
    this.#log = (opts.logger ?? pino({ enabled: false })).child({ component: 'partition-manager' });
    this.#now = opts.now ?? Date.now;
    this.#delay = opts.delay ?? ((ms) => sleep(ms));
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
  }

  /**
   * Rebuilds the manager's view from the kernel (after an agent restart): populated partitions
   * and their blocks, none of which acquire() will pick. It reclaims nothing: FREE leftovers are
   * for the caller to reclaim.
   */
  async init(): Promise<void> {
    if (!this.#listening) {
      this.#device.on('event', this.#onEvent);
      this.#device.on('error', this.#onStreamError);
      this.#listening = true;
    }
    const blocks = await this.#blocks.list();
    const partitions = this.#device.partitions();
    this.#populated.clear();
    for (const partition of partitions) {
      if (partition.state === 'empty') continue;
      const ids = blocks.filter((b) => b.partition === partition.id).map((b) => b.id);
      this.#populated.set(partition.id, ids);
      this.#log.info(
        { partition: partition.id, state: partition.state, blocks: ids },
        'found populated partition',
      );
    }
    const spare = blocks.filter((b) => b.state === 'offline').length;
    this.#log.info({ spareBlocks: spare, populated: this.#populated.size }, 'initialised');
  }

  /** Stops following the device's events. */
  close(): void {
    if (this.#listening) {
      this.#device.off('event', this.#onEvent);
      this.#device.off('error', this.#onStreamError);
    }
    this.#listening = false;
  }

  /**
   * Populates an EMPTY partition with at least `bytes` (rounded up to whole blocks) from offline
   * plugged blocks, waiting up to timeoutMs for the host to plug more.
   */
  async acquire(bytes: number, opts: AcquireOptions = {}): Promise<Acquired> {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new TypeError(`acquire: bytes must be a positive integer, got ${bytes}`);
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new TypeError(`acquire: timeoutMs must be a non-negative number, got ${timeoutMs}`);
    }
    const blockSize = this.#blocks.blockSize();
    const needed = Math.ceil(bytes / blockSize);
    const partition = this.#pickEmptyPartition();
    const zone = partitionZone(partition);
    const onlined: number[] = [];
    const claimed = new Set<number>();
    const failedBlocks = new Map<number, unknown>();
    const deadline = this.#now() + timeoutMs;
    this.#populated.set(partition, onlined);
    this.#acquiring.add(partition);
    try {
      for (let attempt = 0; ; attempt++) {
        const candidates = (await this.#blocks.list()).filter(
          (b) =>
            b.state === 'offline' &&
            b.validZones.includes(zone) &&
            !this.#claimedBlocks.has(b.id) &&
            !failedBlocks.has(b.id),
        );
        for (const block of candidates) {
          if (onlined.length === needed) break;
          claimed.add(block.id);
          await this.#onlineInto(block, partition, onlined, failedBlocks);
        }
        if (onlined.length === needed) break;
        const remaining = deadline - this.#now();
        if (remaining <= 0) {
          throw this.#shortfall(partition, bytes, needed, onlined.length, timeoutMs, failedBlocks);
        }
        await this.#delay(
          Math.min(this.#backoff.initialMs * 2 ** attempt, this.#backoff.maxMs, remaining),
        );
      }
      // The kernel's own reclaim-on-release stays off: the caller decides when to reclaim.
      this.#device.setFlags(partition, { spill: opts.spill ?? false, autoReclaim: false });
    } catch (error) {
      await this.#rollback(partition, onlined);
      throw error;
    } finally {
      this.#acquiring.delete(partition);
      for (const id of claimed) this.#claimedBlocks.delete(id);
    }
    const acquired = { partition, bytes: needed * blockSize, blocks: [...onlined] };
    this.#log.info(acquired, 'partition populated');
    return acquired;
  }

  /**
   * Offlines every block of a FREE partition (the kernel refuses a bound one, EBUSY). Each call
   * asks the kernel: callers that may ask twice for one partition share the promise themselves.
   */
  async reclaim(partition: number): Promise<ReclaimReport> {
    let report: ReclaimReport;
    try {
      report = await this.#device.reclaim(partition);
    } catch (error) {
      this.emit('reclaimFailed', { partition, error });
      throw error;
    }
    this.#populated.delete(partition);
    this.emit('reclaimed', report);
    return report;
  }

  /** The partitions as the kernel reports them and the blocks, from one listing of the blocks. */
  async status(): Promise<ManagerStatus> {
    const blocks = await this.#blocks.list();
    const bytesOf = (filter: (b: MemoryBlock) => boolean) =>
      blocks.filter(filter).reduce((sum, b) => sum + b.size, 0);
    return {
      blockSize: this.#blocks.blockSize(),
      totalBytes: bytesOf(() => true),
      onlineBytes: bytesOf((b) => b.state === 'online'),
      offlineBytes: bytesOf((b) => b.state === 'offline'),
      partitionBytes: bytesOf((b) => b.partition !== null),
      partitions: this.#device.partitions(),
    };
  }

  #pickEmptyPartition(): number {
    const partitions = this.#device.partitions();
    const empty = partitions.find((p) => p.state === 'empty' && !this.#populated.has(p.id));
    if (!empty) {
      throw new HotMemError(
        'ERR_NO_PARTITION',
        `no empty partition left: all ${partitions.length} are populated or being populated`,
      );
    }
    return empty.id;
  }

  async #onlineInto(
    block: MemoryBlock,
    partition: number,
    onlined: number[],
    failedBlocks: Map<number, unknown>,
  ): Promise<void> {
    this.#claimedBlocks.add(block.id);
    try {
      await this.#blocks.online(block.id, { partition });
      onlined.push(block.id);
    } catch (error) {
      failedBlocks.set(block.id, error);
      this.#log.warn({ block: block.id, partition, err: error }, 'onlining a block failed');
    }
  }

  #shortfall(
    partition: number,
    bytes: number,
    needed: number,
    have: number,
    timeoutMs: number,
    failedBlocks: Map<number, unknown>,
  ): HotMemError {
    const failures = [...failedBlocks].map(
      ([id, error]) => `memory${id}: ${error instanceof Error ? error.message : String(error)}`,
    );
    const detail =
      `partition ${partition} needs ${needed} block(s) for ${bytes} bytes but only ${have} ` +
      `could be onlined${timeoutMs > 0 ? ` within ${timeoutMs} ms` : ''}` +
      (failures.length > 0 ? `; failed: ${failures.join('; ')}` : '; no more offline blocks');
    return timeoutMs > 0
      ? new HotMemError('ERR_PARTITION_TIMEOUT', `${detail} (is the host still plugging?)`)
      : new HotMemError('ERR_NO_MEMORY', detail);
  }

  async #rollback(partition: number, onlined: number[]): Promise<void> {
    for (const id of [...onlined].reverse()) {
      try {
        await this.#blocks.offline(id);
      } catch (error) {
        // The block stays in the partition; the kernel still reports it, so init() finds it.
        this.#log.error({ block: id, partition, err: error }, 'rollback: offlining failed');
        continue;
      }
      onlined.splice(onlined.indexOf(id), 1);
    }
    if (onlined.length === 0) this.#populated.delete(partition);
  }

  #handleEvent(event: HotMemEvent): void {
    switch (event.type) {
      case 'released':
        this.#log.info({ partition: event.partition }, 'partition released');
        this.emit('released', { partition: event.partition });
        break;
      case 'reclaimed':
        // After reclaim(), or a virtio-mem unplug that emptied a free partition: it is EMPTY and
        // may be populated again. The event of an earlier reclaim can arrive after a new
        // acquire() picked the partition; that one keeps it.
        if (!this.#acquiring.has(event.partition)) this.#populated.delete(event.partition);
        this.#log.debug({ partition: event.partition, bytes: event.data }, 'partition emptied');
        break;
      case 'oom':
        this.#log.warn({ partition: event.partition, pid: event.data }, 'partition exhausted');
        this.emit('oom', { partition: event.partition, pid: event.data });
        break;
      case 'overflow':
        this.emit('overflow', { dropped: event.data });
        break;
    }
  }
}
