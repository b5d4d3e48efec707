// A VM for controller tests: one virtio-mem device, the agent inside the guest and the
// instances' HTTP endpoints, sharing one memory model and one hand-driven clock. Each part
// refuses what the real one refuses (or what the real guest could not do):
// - device: sizes off the 2 MiB grid or above the region (as every driver reports them);
//   completion is asynchronous, one 128 MiB memory block per guest step; the guest adds no
//   memory while 1 GiB of it is offline (virtio-mem's offline threshold; HotMem keeps plugged
//   memory offline until a partition takes it), and it cannot unplug memory in use: partitions
//   in HotMem mode, running instances' pages in stock mode (they must live somewhere), and in
//   stock mode with blocks onlined to ZONE_NORMAL the sub-blocks holding unmovable kernel pages
//   (pinUnmovable). An unplug it cannot finish it takes as far as it can, then waits for
//   virtio-mem's retry timer (50 s, doubled each time it fires, up to 300 s) or for the host to
//   send a request again (QEMU notifies the guest even of an unchanged size);
// - agent: refuses to start a bound instance without enough spare memory (the real agent waits,
//   then answers HOTMEM_NO_PARTITION), reports an instance exited only after its exit delay, and
//   reclaims its partition only after that; each step can be told to fail;
// - invoker: refuses an instance that is not running or already serving an invocation.
import type { AgentEvent } from '../../../lib/agent/agent.js';
import { AgentRequestError } from '../../../lib/agent/client.js';
import type { CreateInstanceRequest } from '../../../lib/agent/schemas.js';
import type { SubscriberDropped } from '../../../lib/agent/server.js';
import type { AgentApi, Clock, Invoker } from '../../../lib/host/controller/ports.js';
import { type HotplugMemory, HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import type { InstanceSummary } from '../../../lib/instance/instance.js';

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
const DEVICE_BLOCK = 2 * MiB;
const MEMORY_BLOCK = 128 * MiB;
const OFFLINE_THRESHOLD = GiB;
/** virtio-mem's retry timer (drivers/virtio/virtio_mem.c VIRTIO_MEM_RETRY_TIMER_{MIN,MAX}_MS). */
export const RETRY_TIMER_MIN_MS = 50_000;
export const RETRY_TIMER_MAX_MS = 300_000;

/** Time that moves only when a test says so; due timers run in order, promises settle between. */
export class ManualClock implements Clock {
  #time = 0;
  #sequence = 0;
  #timers: Array<{ at: number; sequence: number; callback: () => void }> = [];

  now(): number {
    return this.#time;
  }

  /** Timers set and neither run nor cancelled. */
  get pendingTimers(): number {
    return this.#timers.length;
  }

  setTimeout(callback: () => void, ms: number): () => void {
    const timer = { at: this.#time + Math.max(0, ms), sequence: this.#sequence++, callback };
    this.#timers.push(timer);
    return () => {
      this.#timers = this.#timers.filter((t) => t !== timer);
    };
  }

  async advance(ms: number): Promise<void> {
    const end = this.#time + ms;
    for (;;) {
      await settle();
      const due = this.#timers
        .filter((t) => t.at <= end)
        .sort((a, b) => a.at - b.at || a.sequence - b.sequence)[0];
      if (!due) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#time = due.at;
      due.callback();
    }
    this.#time = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

interface FakeInstance {
  id: string;
  bytes: number;
  partition: number | null;
  state: 'running' | 'exited';
  serving: boolean;
}

export interface FakeVmOptions {
  mode: 'bound' | 'unbound';
  /**
   * Unbound mode: the zone the guest onlines plugged blocks into. movable (ZONE_MOVABLE, the
   * default) takes no unmovable kernel allocation; kernel (ZONE_NORMAL) does (pinUnmovable).
   */
  onlining?: 'movable' | 'kernel';
  /**
   * ZONE_NORMAL only: every exiting instance leaves this much of its memory unmovable for a
   * while (pinOnExit for each), as socket buffers in TIME_WAIT do for 60 s.
   */
  leftOnExit?: { bytes: number; forMs: number };
  regionBytes?: number;
  /** Guest time per 128 MiB memory block plugged or unplugged. */
  blockStepMs?: number;
  exitDelayMs?: number;
  /** From exit to the partition-reclaimed event. */
  reclaimDelayMs?: number;
  /**
   * A real driver to use instead of the fake device (its VMM's fake applies that VMM's rules);
   * the agent then reads the plugged size from it.
   */
  hotplug?: HotplugMemory;
}

export class FakeVm {
  readonly clock = new ManualClock();
  /** What happened, in order: `resize N`, `start i-N`, `exited i-N`, `reclaimed pN`, `invoke i-N`. */
  readonly log: string[] = [];
  /** Every size requested of the device, in order. */
  readonly resizes: number[] = [];
  readonly hotplug: HotplugMemory;
  readonly agent: AgentApi;
  readonly invoker: Invoker;
  requested = 0;
  plugged = 0;
  readonly instances = new Map<string, FakeInstance>();
  /** Partition id -> bytes populated, while populated (bound or waiting for reclaim). */
  readonly partitions = new Map<number, number>();
  /** Set by a test: the next resizes throw this. */
  failResizes: { count: number; error: Error } = { count: 0, error: new Error() };
  /** Set by a test: the next stop requests fail with HOTMEM_INTERNAL. */
  failStops = 0;
  failCreates = 0;
  /** Set by a test: the next invocations fail after running half their duration. */
  failInvokes = 0;
  /** normal: reclaim after the delay; silent: never report; fail: report partition-reclaim-failed. */
  reclaim: 'normal' | 'silent' | 'fail' = 'normal';
  readonly #options: Required<Omit<FakeVmOptions, 'hotplug' | 'leftOnExit'>> &
    Pick<FakeVmOptions, 'leftOnExit'>;
  /** Unmovable kernel pages in plugged ZONE_NORMAL memory, by pin. */
  readonly #pins = new Set<{ bytes: number }>();
  /** Pins placed when an instance exits, by instance id. */
  readonly #pinsOnExit = new Map<string, { bytes: number }>();
  /** leftOnExit: starts the timer that frees an instance's pin once it has exited. */
  readonly #freeAfterExit = new Map<string, () => void>();
  /** The guest driver's next retry interval, and the timer while it waits for it. */
  #retryMs = RETRY_TIMER_MIN_MS;
  #cancelRetryTimer: (() => void) | undefined;
  /** How many times the retry timer fired. */
  retryTimerFired = 0;
  #nextInstance = 1;
  #subscribers: Array<(event: AgentEvent) => void> = [];
  /** Ends every open event stream (as an agent restart does); subscribers are woken. */
  #endStreams: Array<() => void> = [];
  /** Subscriptions made so far. */
  subscriptions = 0;
  #stepping = false;

  constructor(options: FakeVmOptions) {
    this.#options = {
      regionBytes: 8 * GiB,
      blockStepMs: 10,
      exitDelayMs: 20,
      reclaimDelayMs: 30,
      onlining: 'movable',
      ...options,
    };
    if (this.#options.mode === 'bound' && this.#options.onlining !== 'movable') {
      throw new Error('fake: HotMem onlines plugged blocks into partitions, not ZONE_NORMAL');
    }
    if (options.leftOnExit && this.#options.onlining !== 'kernel') {
      throw new Error('fake: unmovable pages go to ZONE_NORMAL; this guest onlines movable');
    }
    this.hotplug = options.hotplug ?? this.#makeHotplug();
    this.agent = this.#makeAgent();
    this.invoker = this.#makeInvoker();
  }

  /** Plugged memory in no partition: offline in bound mode. */
  get spareBytes(): number {
    return this.plugged - this.#partitionBytes();
  }

  #partitionBytes(): number {
    let total = 0;
    for (const bytes of this.partitions.values()) total += bytes;
    return total;
  }

  get runningBytes(): number {
    let total = 0;
    for (const instance of this.instances.values()) {
      if (instance.state === 'running') total += instance.bytes;
    }
    return total;
  }

  /** Bytes of plugged memory the guest kernel holds unmovable (pinUnmovable). */
  get pinnedBytes(): number {
    let total = 0;
    for (const pin of this.#pins) total += pin.bytes;
    return total;
  }

  /** Whether the guest waits for its retry timer before it tries the unplug again. */
  get waitingForRetryTimer(): boolean {
    return this.#cancelRetryTimer !== undefined;
  }

  /**
   * The guest kernel allocates `bytes` it cannot migrate (page tables, slab, socket buffers) in
   * free plugged memory: only ZONE_NORMAL takes them. virtio-mem cannot unplug the sub-blocks
   * they occupy until they are freed; freeing them does not wake it (its retry timer does).
   * Returns the free.
   */
  pinUnmovable(bytes: number): () => void {
    if (this.#options.onlining !== 'kernel') {
      throw new Error('fake: unmovable pages go to ZONE_NORMAL; this guest onlines movable');
    }
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % DEVICE_BLOCK !== 0) {
      throw new Error(`fake: pin whole ${DEVICE_BLOCK}-byte sub-blocks, not ${bytes} bytes`);
    }
    const free = this.plugged - this.runningBytes - this.pinnedBytes;
    if (bytes > free)
      throw new Error(`fake: ${bytes} bytes to pin, ${free} free in plugged memory`);
    const pin = { bytes };
    this.#pins.add(pin);
    return () => {
      this.#pins.delete(pin);
    };
  }

  /**
   * When instance `id` exits, `bytes` of the memory it used stay allocated and unmovable: what
   * the kernel keeps after a process (dentries and inodes of its files, socket buffers in
   * TIME_WAIT), in the ZONE_NORMAL blocks virtio-mem is about to unplug. Returns the free, which
   * also cancels a pin not placed yet.
   */
  pinOnExit(id: string, bytes: number): () => void {
    const instance = this.instances.get(id);
    if (this.#options.onlining !== 'kernel') {
      throw new Error('fake: unmovable pages go to ZONE_NORMAL; this guest onlines movable');
    }
    if (instance?.state !== 'running') throw new Error(`fake: ${id} is not running`);
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % DEVICE_BLOCK !== 0) {
      throw new Error(`fake: pin whole ${DEVICE_BLOCK}-byte sub-blocks, not ${bytes} bytes`);
    }
    if (bytes > instance.bytes) throw new Error(`fake: ${id} holds only ${instance.bytes} bytes`);
    const pin = { bytes };
    this.#pinsOnExit.set(id, pin);
    return () => {
      this.#pinsOnExit.delete(id);
      this.#pins.delete(pin);
    };
  }

  endEventStreams(): void {
    for (const end of this.#endStreams.splice(0)) end();
  }

  /** Delivers a partition-reclaimed event the fake held back (reclaim = 'silent'). */
  reclaimNow(partition: number): void {
    this.partitions.delete(partition);
    this.log.push(`reclaimed p${partition}`);
    this.#emit({ type: 'partition-reclaimed', partition, report: reportOf(partition) });
    // Blocks going offline wake virtio-mem (its memory notifier retries at once).
    this.#wake();
  }

  #emit(body: DistributiveOmit<AgentEvent, 'time'>): void {
    const event = { ...body, time: new Date(this.clock.now()).toISOString() } as AgentEvent;
    for (const subscriber of this.#subscribers) subscriber(event);
  }

  /**
   * The guest moves one memory block towards the request, if it can, every blockStepMs. An unplug
   * goes as far as the memory in use allows (movable pages migrate, unmovable ones pin their
   * sub-blocks); one it cannot finish arms the retry timer, and nothing moves until it fires or
   * the guest is woken.
   */
  #step(): void {
    if (this.#stepping || this.#cancelRetryTimer || this.plugged === this.requested) return;
    this.#stepping = true;
    this.clock.setTimeout(() => {
      this.#stepping = false;
      const diff = this.requested - this.plugged;
      if (diff > 0) {
        const amount = Math.min(MEMORY_BLOCK, diff);
        const offline = this.#options.mode === 'bound' ? this.spareBytes : 0;
        if (offline + amount <= OFFLINE_THRESHOLD) this.plugged += amount;
      } else {
        const inUse =
          this.#options.mode === 'bound'
            ? this.plugged - this.spareBytes
            : this.runningBytes + this.pinnedBytes;
        const amount = Math.min(MEMORY_BLOCK, this.plugged - Math.max(this.requested, inUse));
        if (amount > 0) this.plugged -= amount;
        if (this.plugged > this.requested && this.plugged <= inUse) {
          this.#armRetryTimer();
          return;
        }
      }
      if (this.plugged === this.requested) this.#retryMs = RETRY_TIMER_MIN_MS;
      this.#step();
    }, this.#options.blockStepMs);
  }

  /** -EBUSY: virtio_mem_run_wq() starts the retry timer; when it fires it doubles, up to 300 s. */
  #armRetryTimer(): void {
    this.#cancelRetryTimer = this.clock.setTimeout(() => {
      this.#cancelRetryTimer = undefined;
      this.retryTimerFired += 1;
      this.#retryMs = Math.min(this.#retryMs * 2, RETRY_TIMER_MAX_MS);
      this.#step();
    }, this.#retryMs);
  }

  /** A config change or a memory notifier: the driver cancels its retry timer and runs now. */
  #wake(): void {
    this.#cancelRetryTimer?.();
    this.#cancelRetryTimer = undefined;
    this.#step();
  }

  #makeHotplug(): HotplugMemory {
    return {
      blockSize: async () => DEVICE_BLOCK,
      regionSize: async () => this.#options.regionBytes,
      requestedSize: async () => this.requested,
      size: async () => this.plugged,
      resize: async (bytes, { timeoutMs, signal }) => {
        if (this.failResizes.count > 0) {
          this.failResizes.count -= 1;
          throw this.failResizes.error;
        }
        if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % DEVICE_BLOCK !== 0) {
          throw new HotplugMemoryError('ERR_NOT_BLOCK_MULTIPLE', `${bytes}`, {
            requestedBytes: bytes,
          });
        }
        if (bytes > this.#options.regionBytes) {
          throw new HotplugMemoryError('ERR_ABOVE_REGION', `${bytes}`, { requestedBytes: bytes });
        }
        const began = this.clock.now();
        this.requested = bytes;
        this.resizes.push(bytes);
        this.log.push(`resize ${bytes / MiB}M`);
        // QEMU notifies the guest of every request, the same size again included.
        this.#wake();
        const deadline = began + timeoutMs;
        while (this.plugged !== bytes) {
          signal?.throwIfAborted();
          if (this.clock.now() >= deadline) {
            throw new HotplugMemoryError('ERR_RESIZE_TIMEOUT', 'timed out', {
              requestedBytes: bytes,
              lastSize: this.plugged,
            });
          }
          await new Promise<void>((resolve) => {
            const cancel = this.clock.setTimeout(done, this.#options.blockStepMs);
            function done() {
              cancel();
              signal?.removeEventListener('abort', done);
              resolve();
            }
            signal?.addEventListener('abort', done, { once: true });
          });
        }
        return this.clock.now() - began;
      },
    };
  }

  #makeAgent(): AgentApi {
    return {
      createInstance: async (request: CreateInstanceRequest) => {
        if (this.failCreates > 0) {
          this.failCreates -= 1;
          throw new AgentRequestError(422, 'HOTMEM_SPAWN_FAILED', 'command.0: spawn ENOENT');
        }
        const bytes = Math.ceil(request.memoryBytes / MEMORY_BLOCK) * MEMORY_BLOCK;
        const plugged = await this.hotplug.size();
        const available =
          plugged - (this.#options.mode === 'bound' ? this.#partitionBytes() : this.runningBytes);
        if (available < bytes) {
          throw new AgentRequestError(
            503,
            'HOTMEM_NO_PARTITION',
            `needs ${bytes} bytes, ${available} available`,
          );
        }
        let partition: number | null = null;
        if (this.#options.mode === 'bound') {
          partition = 0;
          while (this.partitions.has(partition)) partition += 1;
          this.partitions.set(partition, bytes);
        }
        const id = `i-${this.#nextInstance++}`;
        this.instances.set(id, { id, bytes, partition, state: 'running', serving: false });
        this.log.push(`start ${id}`);
        const left = this.#options.leftOnExit;
        if (left) {
          const free = this.pinOnExit(id, Math.min(left.bytes, bytes));
          this.#freeAfterExit.set(id, () => this.clock.setTimeout(free, left.forMs));
        }
        return { id, pid: 1000 + this.#nextInstance, partition };
      },
      stopInstance: async (id) => {
        const instance = this.instances.get(id);
        if (!instance) {
          throw new AgentRequestError(404, 'HOTMEM_INSTANCE_NOT_FOUND', `no instance ${id}`);
        }
        if (this.failStops > 0) {
          this.failStops -= 1;
          throw new AgentRequestError(500, 'HOTMEM_INTERNAL', 'stop failed');
        }
        if (instance.state === 'running') {
          await new Promise<void>((resolve) =>
            this.clock.setTimeout(resolve, this.#options.exitDelayMs),
          );
          this.#exit(instance, 'exited');
        }
        return { id, state: 'exited' };
      },
      health: async () => ({
        status: 'ok' as const,
        hotmem: this.#options.mode === 'bound',
        binding: this.#options.mode,
        instancesRunning: [...this.instances.values()].filter((i) => i.state === 'running').length,
        uptimeSeconds: this.clock.now() / 1000,
      }),
      events: async () => this.#subscribe(),
    };
  }

  /** The instance's process dies on its own, as after a crash or an OOM kill. */
  crash(id: string): void {
    const instance = this.instances.get(id);
    if (instance?.state !== 'running') throw new Error(`fake: ${id} is not running`);
    this.#exit(instance, 'crashed');
  }

  #exit(instance: FakeInstance, how: 'exited' | 'crashed'): void {
    instance.state = 'exited';
    const left = this.#pinsOnExit.get(instance.id);
    this.#pinsOnExit.delete(instance.id);
    if (left) this.#pins.add(left);
    this.#freeAfterExit.get(instance.id)?.();
    this.#freeAfterExit.delete(instance.id);
    this.log.push(`${how} ${instance.id}`);
    this.#emit({ type: 'instance-exited', instance: summaryOf(instance) });
    this.#step();
    if (instance.partition !== null) this.#afterExit(instance.partition);
  }

  #afterExit(partition: number): void {
    this.clock.setTimeout(() => {
      this.#emit({ type: 'partition-released', partition });
      if (this.reclaim === 'normal') this.reclaimNow(partition);
      if (this.reclaim === 'fail') {
        this.#emit({ type: 'partition-reclaim-failed', partition, error: 'EBUSY' });
      }
    }, this.#options.reclaimDelayMs);
  }

  #subscribe(): AsyncIterable<AgentEvent | SubscriberDropped> {
    const queued: AgentEvent[] = [];
    let wake: (() => void) | undefined;
    const subscriber = (event: AgentEvent) => {
      queued.push(event);
      wake?.();
    };
    this.#subscribers.push(subscriber);
    this.subscriptions += 1;
    const unsubscribe = () => {
      this.#subscribers = this.#subscribers.filter((s) => s !== subscriber);
      wake?.();
    };
    this.#endStreams.push(unsubscribe);
    const subscribed = () => this.#subscribers.includes(subscriber);
    return {
      [Symbol.asyncIterator]: () => ({
        async next() {
          while (queued.length === 0 && subscribed()) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
          }
          const value = queued.shift();
          return value ? { done: false, value } : { done: true, value: undefined };
        },
        async return() {
          unsubscribe();
          return { done: true, value: undefined };
        },
      }),
    };
  }

  #makeInvoker(): Invoker {
    return {
      invoke: async ({ instanceId }, { durationMs }) => {
        const instance = this.instances.get(instanceId);
        if (instance?.state !== 'running') {
          throw new Error(`invoke: ${instanceId} is not running`);
        }
        if (instance.serving) throw new Error(`invoke: ${instanceId} is already serving`);
        instance.serving = true;
        this.log.push(`invoke ${instanceId}`);
        const failing = this.failInvokes > 0;
        if (failing) this.failInvokes -= 1;
        await new Promise<void>((resolve) =>
          this.clock.setTimeout(resolve, failing ? durationMs / 2 : durationMs),
        );
        instance.serving = false;
        if (instance.state !== 'running') throw new Error(`invoke: ${instanceId} exited`);
        if (failing) throw new Error(`invoke: ${instanceId} answered 502`);
      },
    };
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function summaryOf(instance: FakeInstance): InstanceSummary {
  return {
    id: instance.id,
    pid: null,
    partition: instance.partition,
    command: ['/usr/bin/node'],
    memoryBytes: instance.bytes,
    cpuWeight: null,
    state: 'exited',
    port: null,
    readyAt: null,
    startedAt: new Date(0).toISOString(),
    adopted: false,
    exit: { code: null, signal: 'SIGKILL', exitedAt: new Date(0).toISOString(), reason: 'exited' },
  };
}

function reportOf(partition: number) {
  return { partition, blocks: 1, bytes: MEMORY_BLOCK, durationNs: 1_000_000, pagesMigrated: 0 };
}
