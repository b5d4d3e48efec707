// A fake partition manager for agent unit tests: no kernel behind it. It keeps the rules of the
// real one (test/unit/partition-manager.test.ts): acquire() draws whole blocks from the spare
// ones and fails as the real one does, reclaim() refuses a partition that is not FREE and gives
// its blocks back to the spare ones. The test plays the kernel and the host: bind(), release(),
// unplug().
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProcessBinder } from '../../../lib/agent/bindings.js';
import { HotMemError } from '../../../lib/errors.js';
import type { PartitionInfo, ReclaimReport } from '../../../lib/hotmem-device.js';
import type {
  Acquired,
  AcquireOptions,
  ManagerStatus,
  PartitionManagerApi,
  PartitionManagerEvents,
} from '../../../lib/partition-manager.js';

export const FAKE_BLOCK_BYTES = 128 * 2 ** 20;

export class FakePartitionManager
  extends EventEmitter<PartitionManagerEvents>
  implements PartitionManagerApi
{
  readonly calls: string[] = [];
  /** Offline blocks the host plugged that no partition holds: what acquire() draws on. */
  spareBlocks: number;
  /** While set, acquire() waits for it: a host still plugging memory. */
  plugging: Promise<void> | undefined;
  private readonly table: PartitionInfo[];

  constructor(count = 4, spareBlocks = 16) {
    super();
    this.table = Array.from({ length: count }, (_, id) => emptyPartition(id));
    this.spareBlocks = spareBlocks;
  }

  async init(): Promise<void> {
    this.calls.push('init');
  }

  async acquire(bytes: number, options: AcquireOptions = {}): Promise<Acquired> {
    this.calls.push(`acquire ${bytes}`);
    await this.plugging;
    const partition = this.table.find((candidate) => candidate.state === 'empty');
    if (!partition) {
      throw new HotMemError(
        'ERR_NO_PARTITION',
        `no empty partition left: all ${this.table.length} are populated or being populated`,
      );
    }
    const needed = Math.ceil(bytes / FAKE_BLOCK_BYTES);
    if (needed > this.spareBlocks) {
      // The real manager waits for the host to plug more; this fake's host never does.
      const timeoutMs = options.timeoutMs ?? 10_000;
      await sleep(timeoutMs);
      const detail = `partition ${partition.id} needs ${needed} block(s) for ${bytes} bytes but only 0 could be onlined`;
      throw timeoutMs > 0
        ? new HotMemError('ERR_PARTITION_TIMEOUT', `${detail} within ${timeoutMs} ms`)
        : new HotMemError('ERR_NO_MEMORY', `${detail}; no more offline blocks`);
    }
    this.spareBlocks -= needed;
    Object.assign(partition, {
      state: 'free',
      flags: { spill: options.spill ?? false, autoReclaim: false },
      nrBlocks: needed,
      presentBytes: needed * FAKE_BLOCK_BYTES,
      freeBytes: needed * FAKE_BLOCK_BYTES,
    });
    const blocks = Array.from({ length: needed }, (_, index) => partition.id * 1000 + index);
    return { partition: partition.id, bytes: partition.presentBytes, blocks };
  }

  /** What the launcher's bind does to the partition in the kernel (ENXIO unless populated). */
  bind(partition: number): void {
    const info = this.partition(partition);
    if (info.state !== 'free' && info.state !== 'bound') {
      throw Object.assign(new Error(`partition ${partition} is ${info.state}`), { code: 'ENXIO' });
    }
    Object.assign(info, { state: 'bound', boundMms: info.boundMms + 1 });
  }

  /** What the kernel reports when the partition's last mm is gone. */
  release(partition: number): void {
    const info = this.partition(partition);
    if (info.state !== 'bound') throw new Error(`fake: partition ${partition} is not bound`);
    Object.assign(info, { state: 'free', boundMms: 0 });
    this.emit('released', { partition });
  }

  /** The host unplugs spare blocks. */
  unplug(blocks: number): void {
    if (blocks > this.spareBlocks) throw new Error(`fake: only ${this.spareBlocks} spare blocks`);
    this.spareBlocks -= blocks;
  }

  async reclaim(partition: number): Promise<ReclaimReport> {
    this.calls.push(`reclaim ${partition}`);
    const info = this.partition(partition);
    if (info.state !== 'free') {
      const error = Object.assign(new Error(`partition ${partition} is ${info.state}`), {
        code: 'EBUSY',
      });
      this.emit('reclaimFailed', { partition, error });
      throw error;
    }
    const report = {
      partition,
      blocks: info.nrBlocks,
      bytes: info.presentBytes,
      durationNs: 1_000_000n,
      pagesMigrated: 0,
    };
    this.spareBlocks += info.nrBlocks;
    Object.assign(info, emptyPartition(partition));
    this.emit('reclaimed', report);
    return report;
  }

  async status(): Promise<ManagerStatus> {
    const partitionBytes = this.table.reduce((sum, info) => sum + info.presentBytes, 0);
    const offlineBytes = this.spareBlocks * FAKE_BLOCK_BYTES;
    return {
      blockSize: FAKE_BLOCK_BYTES,
      totalBytes: partitionBytes + offlineBytes,
      onlineBytes: partitionBytes,
      offlineBytes,
      partitionBytes,
      partitions: this.table.map((info) => ({ ...info, flags: { ...info.flags } })),
    };
  }

  private partition(partition: number): PartitionInfo {
    const info = this.table[partition];
    if (!info) throw new Error(`fake: no partition ${partition}`);
    return info;
  }
}

function emptyPartition(id: number): PartitionInfo {
  return {
    id,
    state: 'empty',
    flags: { spill: false, autoReclaim: false },
    nrBlocks: 0,
    node: 0,
    presentBytes: 0,
    freeBytes: 0,
    boundMms: 0,
    spilledPages: 0,
    oomKills: 0,
  };
}

/**
 * A binder for agent tests that binds by telling `fake`, the kernel here: pidfd_open fails with
 * ESRCH for a pid with no process, and `open` holds the pidfds not closed yet.
 */
export function liveProcessBinder(
  fake: FakePartitionManager,
): ProcessBinder & { open: Set<number> } {
  const open = new Set<number>();
  return {
    open,
    pidfdOpen(pid) {
      try {
        process.kill(pid, 0);
      } catch {
        throw Object.assign(new Error(`pidfd_open ${pid}: ESRCH`), { code: 'ESRCH' });
      }
      open.add(pid);
      return pid;
    },
    async bind(_pidfd, partition, waitMs) {
      // The device's own check: a wait is whole milliseconds, at least 1 (0 would wait forever).
      if (!Number.isInteger(waitMs) || waitMs < 1) throw new RangeError(`waitMs ${waitMs}`);
      fake.bind(partition);
    },
    closeFd(fd) {
      open.delete(fd);
    },
  };
}
