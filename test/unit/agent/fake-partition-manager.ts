// A fake partition manager for agent unit tests: no kernel behind it. It hands out partitions
// from a fixed table, and the test plays the kernel by calling release().
import type { PartitionLease, PartitionSource, PartitionView } from '../../../lib/agent/agent.js';
import type { ReclaimReport } from '../../../lib/hotmem-device.js';

export const FAKE_BLOCK_BYTES = 128 * 2 ** 20;

export class FakePartitionManager implements PartitionSource {
  readonly calls: string[] = [];
  private readonly views: PartitionView[];
  private readonly releasedListeners = new Set<(partition: number) => void>();

  constructor(count = 4) {
    this.views = Array.from({ length: count }, (_, id) => emptyView(id));
  }

  async init(): Promise<void> {
    this.calls.push('init');
  }

  /** Blocks the host plugged that no partition holds; acquire() does not draw on them. */
  spareBlocks = 0;

  async spare(): Promise<{ blocks: number; bytes: number }> {
    return { blocks: this.spareBlocks, bytes: this.spareBlocks * FAKE_BLOCK_BYTES };
  }

  /** While set, acquire() waits for it: a host still plugging memory. */
  plugging: Promise<void> | undefined;

  async acquire(bytes: number, options: { timeoutMs: number }): Promise<PartitionLease> {
    this.calls.push(`acquire ${bytes}`);
    await this.plugging;
    const view = this.views.find((candidate) => candidate.state === 'empty');
    if (!view) {
      await new Promise((resolve) => setTimeout(resolve, options.timeoutMs));
      throw Object.assign(new Error(`no partition populated within ${options.timeoutMs} ms`), {
        code: 'ERR_PARTITION_TIMEOUT',
      });
    }
    const blocks = Math.ceil(bytes / FAKE_BLOCK_BYTES);
    Object.assign(view, {
      state: 'free',
      nrBlocks: blocks,
      presentBytes: blocks * FAKE_BLOCK_BYTES,
      freeBytes: blocks * FAKE_BLOCK_BYTES,
    });
    return { partition: view.id, bytes: view.presentBytes, blocks };
  }

  /** What the launcher's bind does to the partition in the kernel. */
  bind(partition: number): void {
    Object.assign(this.view(partition), { state: 'bound', boundMms: 1 });
  }

  /** What the kernel reports when the partition's last mm is gone. */
  release(partition: number): void {
    Object.assign(this.view(partition), { state: 'free', boundMms: 0 });
    for (const listener of this.releasedListeners) listener(partition);
  }

  async reclaim(partition: number): Promise<ReclaimReport> {
    this.calls.push(`reclaim ${partition}`);
    const view = this.view(partition);
    if (view.state !== 'free') {
      throw Object.assign(new Error(`partition ${partition} is ${view.state}`), { code: 'EBUSY' });
    }
    const report = {
      partition,
      blocks: view.nrBlocks,
      bytes: view.presentBytes,
      durationNs: 1_000_000n,
      pagesMigrated: 0,
    };
    Object.assign(view, emptyView(partition));
    return report;
  }

  async partitions(): Promise<PartitionView[]> {
    return this.views.map((view) => ({ ...view }));
  }

  onReleased(listener: (partition: number) => void): () => void {
    this.releasedListeners.add(listener);
    return () => this.releasedListeners.delete(listener);
  }

  private view(partition: number): PartitionView {
    const view = this.views[partition];
    if (!view) throw new Error(`fake: no partition ${partition}`);
    return view;
  }
}

function emptyView(id: number): PartitionView {
  return {
    id,
    state: 'empty',
    nrBlocks: 0,
    presentBytes: 0,
    freeBytes: 0,
    boundMms: 0,
    spilledPages: 0,
    oomKills: 0,
  };
}
