/**
 * The host side of an N:1 FaaS runtime: one VM, many function instances packed into it.
 *
 * The controller owns the warm pool (instances per function, each kept alive `keepAliveMs` after
 * its last invocation, or evicted sooner when a queued invocation needs its memory) and the memory
 * budget (hot-plugged bytes it may ask the VMM for). It talks to the VMM through a HotplugMemory
 * driver (via MemoryReconciler), to the in-guest agent through AgentApi and to instances through
 * Invoker. docs/controller.md states the policy.
 *
 * Modes, facing identical traffic:
 * - hotmem: each instance is bound to a partition; on scale-down the controller stops the
 *   instance, waits for the agent's partition-reclaimed event, then lowers the plugged size;
 * - stock: instances are unbound; on scale-down it stops the instance and lowers the plugged size
 *   at once, leaving the guest to migrate pages out of the blocks it unplugs.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import type { AgentEvent, SerializedReclaimReport } from '../../agent/agent.js';
import type { CreateInstanceRequest } from '../../agent/schemas.js';
import type { SubscriberDropped } from '../../agent/server.js';
import { silentLogger } from '../../log.js';
import type { HotplugMemory } from '../vmm/hotplug-memory.js';
import { MemoryReconciler } from './memory-reconciler.js';
import { type AgentApi, type Clock, type Invoker, systemClock } from './ports.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

export const controllerConfigSchema = z
  .object({
    mode: z.enum(['hotmem', 'stock']),
    /** The most hot-plugged memory the controller may request of the VMM, boot plug included. */
    budgetBytes: z.number().int().positive(),
    /** Instances are sized in whole memory blocks: HotMem partitions are made of them. */
    memoryBlockBytes: z
      .number()
      .int()
      .positive()
      .default(128 * MiB),
    /** Largest growth per resize: the guest holds at most 1 GiB of added memory offline. */
    plugStepBytes: z.number().int().positive().default(GiB),
    keepAliveMs: z.number().nonnegative(),
    /** A scale-up that has not got its memory plugged by then fails its invocation. */
    plugTimeoutMs: z.number().positive().default(30_000),
    /** Passed to each HotplugMemory.resize; a timed-out resize is retried. */
    resizeTimeoutMs: z.number().positive().default(30_000),
    /** How long a scale-down waits for the partition-reclaimed event before reporting it. */
    reclaimTimeoutMs: z.number().positive().default(10_000),
    /**
     * How long an unplug may take before its scale-down is reported stranded (late): its memory
     * stays held while the device holds it, no longer counts as on its way back, and close()
     * waits no longer for it. virtio-mem retries an unplug that met unmovable pages after 50 s,
     * then 100, 200 and 300 s; the scale-down completes, late, if the memory comes out then.
     */
    unplugTimeoutMs: z.number().positive().default(30_000),
    stopGraceMs: z.number().int().nonnegative().max(600_000).default(5_000),
    stopAttempts: z.number().int().positive().default(3),
    retryDelayMs: z.number().positive().default(1_000),
    /**
     * false: the baseline with reclamation disabled. Scale-downs stop instances (and, in
     * hotmem mode, wait for their partitions to be reclaimed) but the device never shrinks, so
     * later scale-ups reuse the memory without a plug; the budget still caps the plugged size.
     */
    giveBackMemory: z.boolean().default(true),
    /**
     * true: when the queue's oldest invocation waits for memory, idle instances are scaled down
     * before their keep-alive expires, least recently used first, as far as that makes room.
     * false: only keep-alive expiry frees memory.
     */
    evictIdle: z.boolean().default(true),
  })
  .strict()
  .superRefine((config, context) => {
    for (const field of ['budgetBytes', 'plugStepBytes'] as const) {
      if (config[field] % config.memoryBlockBytes !== 0) {
        context.addIssue({
          code: 'custom',
          path: [field],
          message: `must be a multiple of memoryBlockBytes (${config.memoryBlockBytes})`,
        });
      }
    }
  });

export type ControllerConfigInput = z.input<typeof controllerConfigSchema>;
export type ControllerConfig = z.output<typeof controllerConfigSchema>;

export const invocationSchema = z
  .object({
    functionName: z.string().min(1),
    durationMs: z.number().nonnegative(),
    memoryBytes: z.number().int().positive(),
  })
  .strict();

export type Invocation = z.infer<typeof invocationSchema>;

export interface InvocationRecord {
  id: number;
  functionName: string;
  memoryBytes: number;
  arrivalMs: number;
  /** From arrival until a warm instance took it or its scale-up began. */
  queueWaitMs: number;
  start: 'warm' | 'cold';
  /** Cold start only: plugging the memory and starting the instance. */
  coldStartMs: number;
  /**
   * Cold start only: the part of coldStartMs spent waiting for the memory to be plugged; the
   * rest is the agent's start (HotMem: populating the partition, onlining its blocks; spawning).
   */
  plugWaitMs: number;
  /** null when the invocation failed before it reached an instance. */
  serviceMs: number | null;
  completionMs: number;
  error: string | null;
}

export interface ScaleDownRecord {
  instanceId: string;
  functionName: string;
  bytes: number;
  /**
   * keep-alive: idle for keepAliveMs. evicted: idle, its memory needed by the queue. exited: the
   * instance exited on its own. closing: close() scales every instance down.
   */
  reason: 'keep-alive' | 'evicted' | 'exited' | 'closing';
  startedMs: number;
  /** Stop request until the agent answered that the instance exited. */
  stopMs: number | null;
  /**
   * Instance exited until the partition-reclaimed event (hotmem mode only; 0 when the event came
   * before the agent answered the stop).
   */
  reclaimMs: number | null;
  /**
   * The guest kernel's time in that reclaim (the reclaim report's durationNs, which the
   * partition-reclaimed event carries); null in stock mode or while no event came. Absent from
   * records saved before it existed.
   */
  reclaimKernelMs: number | null;
  /** Lowering the requested size until the VMM reported it reached. */
  unplugMs: number | null;
  /**
   * The unplug was not done within unplugTimeoutMs: the scale-down was stranded then, and is
   * unplugged if the device got there later (virtio-mem's retry, or a scale-up taking the memory).
   * Absent from records saved before it existed.
   */
  unplugLate: boolean;
  completedMs: number | null;
  /**
   * unplugged: done. stranded: a step failed or the unplug is late; the memory the device still
   * holds stays counted against the budget (a late reclaimed event or unplug resumes it);
   * `errors` says why.
   */
  outcome: 'in-progress' | 'unplugged' | 'stranded';
  errors: string[];
}

export interface MemorySample {
  timeMs: number;
  requestedBytes: number;
  pluggedBytes: number;
  /** Memory of instances that exist in the guest (starting, running, idle or stopping). */
  usedBytes: number;
}

export interface ControllerMetrics {
  invocations: InvocationRecord[];
  scaleDowns: ScaleDownRecord[];
  memory: MemorySample[];
}

export interface ControllerDeps {
  hotplug: HotplugMemory;
  agent: AgentApi;
  invoker: Invoker;
  /** What to run for an instance of a function (memoryBytes is the controller's). */
  instanceCommand: (functionName: string) => Omit<CreateInstanceRequest, 'memoryBytes'>;
  clock?: Clock;
  logger?: Logger;
}

type InstanceState = 'starting' | 'busy' | 'idle' | 'stopping';

interface Instance {
  /** The agent's id once started. */
  id: string;
  functionName: string;
  bytes: number;
  partition: number | null;
  state: InstanceState;
  /** When it last became idle: eviction takes the least recently used first. */
  idleSinceMs: number;
  cancelKeepAlive: (() => void) | undefined;
  /** Once its scale-down began. */
  scaleDown: ScaleDownRecord | undefined;
  /** The agent reported it exited without being asked: it leaves the pool. */
  exitedOnItsOwn: boolean;
}

interface Pending {
  id: number;
  invocation: Invocation;
  bytes: number;
  arrivalMs: number;
  resolve: (record: InvocationRecord) => void;
}

interface ReclaimWaiter {
  resolve: (report: SerializedReclaimReport) => void;
  reject: (error: Error) => void;
}

/** Bytes that left the instances and the target: held until the device no longer holds them. */
interface Unplug {
  bytes: number;
  /** Not done within unplugTimeoutMs: no longer counted as on its way back. */
  late: boolean;
  /** Resolves once the VMM reported the device at the lowered target or a later one. */
  done: Promise<void>;
}

export class Controller {
  readonly metrics: ControllerMetrics = { invocations: [], scaleDowns: [], memory: [] };
  readonly #config: ControllerConfig;
  readonly #deps: ControllerDeps;
  readonly #clock: Clock;
  readonly #log: Logger;
  #memory: MemoryReconciler | undefined;
  /** Plugged before the controller started; never unplugged by it. */
  #baselineBytes = 0;
  readonly #instances = new Set<Instance>();
  /** Unplugs the VMM has not reported done. */
  readonly #unplugs = new Set<Unplug>();
  readonly #queue: Pending[] = [];
  readonly #reclaimWaiters = new Map<number, ReclaimWaiter>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #nextInvocationId = 1;
  #nextStartingId = 1;
  #events: AsyncIterator<AgentEvent | SubscriberDropped> | undefined;
  #closing = false;

  constructor(deps: ControllerDeps, config: ControllerConfigInput) {
    const parsed = controllerConfigSchema.safeParse(config);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new TypeError(`controller config: ${issue?.path.join('.')}: ${issue?.message}`);
    }
    this.#config = parsed.data;
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    this.#log = (deps.logger ?? silentLogger()).child({ component: 'controller' });
  }

  /**
   * Reads the device, checks the budget against it and the agent's binding against the mode, and
   * subscribes to the agent's events.
   */
  async start(): Promise<void> {
    const { hotplug } = this.#deps;
    const [blockSize, regionSize, requestedBytes, pluggedBytes] = await Promise.all([
      hotplug.blockSize(),
      hotplug.regionSize(),
      hotplug.requestedSize(),
      hotplug.size(),
    ]);
    const { budgetBytes, memoryBlockBytes } = this.#config;
    if (memoryBlockBytes % blockSize !== 0) {
      throw new RangeError(
        `memoryBlockBytes ${memoryBlockBytes} is not a multiple of the device block ${blockSize}`,
      );
    }
    if (budgetBytes > regionSize) {
      throw new RangeError(`budgetBytes ${budgetBytes} exceeds the device region ${regionSize}`);
    }
    if (requestedBytes > budgetBytes) {
      throw new RangeError(`the device already requests ${requestedBytes} bytes, over budget`);
    }
    // Each mode needs its kind of agent, or a comparison run would quietly compare stock with stock.
    const { binding } = await this.#deps.agent.health();
    const wanted = this.#config.mode === 'hotmem' ? 'bound' : 'unbound';
    if (binding !== wanted) {
      throw new Error(`${this.#config.mode} mode needs an agent in ${wanted} mode, not ${binding}`);
    }
    this.#baselineBytes = requestedBytes;
    this.#memory = new MemoryReconciler(
      hotplug,
      { requestedBytes, pluggedBytes },
      {
        stepBytes: this.#config.plugStepBytes,
        resizeTimeoutMs: this.#config.resizeTimeoutMs,
        retryDelayMs: this.#config.retryDelayMs,
        clock: this.#clock,
        logger: this.#log,
        onChange: () => {
          this.#sample();
          // The device may hold less than was counted: an unplug went further than last seen.
          this.#drainQueue();
        },
        keepPlugged: !this.#config.giveBackMemory,
      },
    );
    await this.#subscribe();
    this.#sample();
  }

  /** Runs one invocation; resolves with its record once it completed or failed. */
  submit(invocation: Invocation): Promise<InvocationRecord> {
    this.#requireMemory();
    const result = invocationSchema.safeParse(invocation);
    if (!result.success) {
      const issue = result.error.issues[0];
      throw new TypeError(`invocation: ${issue?.path.join('.')}: ${issue?.message}`);
    }
    const parsed = result.data;
    const bytes = this.#instanceBytes(parsed.memoryBytes);
    const arrivalMs = this.#clock.now();
    const done = new Promise<InvocationRecord>((resolve) => {
      const pending = {
        id: this.#nextInvocationId++,
        invocation: parsed,
        bytes,
        arrivalMs,
        resolve,
      };
      if (this.#closing) {
        this.#fail(pending, 0, 'the controller is closing');
      } else if (bytes + this.#baselineBytes > this.#config.budgetBytes) {
        this.#fail(pending, 0, `needs ${bytes} bytes, more than the budget holds`);
      } else if (this.#config.mode === 'hotmem' && bytes > this.#config.plugStepBytes) {
        // Its memory would sit offline beyond the guest's limit before the instance takes it.
        this.#fail(pending, 0, `needs ${bytes} bytes, more than one plug step`);
      } else if (
        !this.#dispatchWarm(pending) &&
        !(this.#queue.length === 0 && this.#scaleUp(pending))
      ) {
        this.#queue.push(pending);
        this.#evictForQueueHead();
      }
    });
    return this.#track(done);
  }

  /**
   * Waits for every invocation, then scales every instance down and stops listening; what could
   * not be unplugged stays in metrics.scaleDowns as stranded.
   */
  async close(): Promise<void> {
    this.#closing = true;
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    for (const instance of this.#instances) {
      if (instance.state === 'idle') this.#track(this.#scaleDown(instance, 'closing'));
    }
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    // Not awaited: a generator waiting for its next event would hold close() until one comes.
    void this.#events?.return?.();
    this.#memory?.close();
  }

  /**
   * Memory held against the budget: baseline, every instance, and what unplugs under way have
   * not taken out of the device yet.
   */
  get heldBytes(): number {
    return this.#baselineBytes + this.#instanceBytesTotal() + this.#unplugHeldBytes(true);
  }

  /**
   * What unplugs under way still hold: their bytes, but no more than the device may hold above
   * the target (an unplug stalled on a few MiB of unmovable pages holds those; one whose memory
   * a scale-up took back holds nothing). Without `includeLate`, late unplugs' bytes are left out.
   */
  #unplugHeldBytes(includeLate: boolean): number {
    let pending = 0;
    for (const unplug of this.#unplugs) if (includeLate || !unplug.late) pending += unplug.bytes;
    const memory = this.#memory;
    if (!memory) return pending;
    return Math.min(pending, Math.max(0, memory.ceilingBytes - memory.targetBytes));
  }

  #instanceBytes(memoryBytes: number): number {
    const block = this.#config.memoryBlockBytes;
    return Math.ceil(memoryBytes / block) * block;
  }

  #instanceBytesTotal(): number {
    let total = 0;
    for (const instance of this.#instances) total += instance.bytes;
    return total;
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inFlight.add(promise);
    void promise.finally(() => this.#inFlight.delete(promise)).catch(() => {});
    return promise;
  }

  #dispatchWarm(pending: Pending): boolean {
    for (const instance of this.#instances) {
      if (
        instance.state === 'idle' &&
        instance.functionName === pending.invocation.functionName &&
        instance.bytes >= pending.bytes
      ) {
        instance.cancelKeepAlive?.();
        instance.cancelKeepAlive = undefined;
        instance.state = 'busy';
        void this.#serve(instance, pending, 'warm', this.#clock.now() - pending.arrivalMs, 0, 0);
        return true;
      }
    }
    return false;
  }

  /** Starts a scale-up for `pending` if the budget has room; false otherwise. */
  #scaleUp(pending: Pending): boolean {
    if (this.heldBytes + pending.bytes > this.#config.budgetBytes) return false;
    const instance: Instance = {
      id: `starting-${this.#nextStartingId++}`,
      functionName: pending.invocation.functionName,
      bytes: pending.bytes,
      partition: null,
      state: 'starting',
      idleSinceMs: this.#clock.now(),
      cancelKeepAlive: undefined,
      scaleDown: undefined,
      exitedOnItsOwn: false,
    };
    this.#instances.add(instance);
    void this.#startInstance(instance, pending);
    return true;
  }

  async #startInstance(instance: Instance, pending: Pending): Promise<void> {
    const memory = this.#requireMemory();
    const queueWaitMs = this.#clock.now() - pending.arrivalMs;
    const began = this.#clock.now();
    const level = this.#baselineBytes + this.#instanceBytesTotal();
    const generation = memory.setTarget(level);
    this.#sample();
    let plugWaitMs = 0;
    try {
      await this.#bounded(
        memory.whenPlugged(level, generation),
        this.#config.plugTimeoutMs,
        `memory for a ${instance.bytes}-byte instance was not plugged in ${this.#config.plugTimeoutMs} ms`,
      );
      plugWaitMs = this.#clock.now() - began;
      const created = await this.#deps.agent.createInstance({
        ...this.#deps.instanceCommand(instance.functionName),
        memoryBytes: instance.bytes,
      });
      instance.id = created.id;
      instance.partition = created.partition;
    } catch (error) {
      // Nothing runs: the agent leaves nothing behind a refused start. Give the memory back.
      this.#instances.delete(instance);
      this.#log.error({ err: error, function: instance.functionName }, 'scale-up failed');
      this.#fail(pending, queueWaitMs, `scale-up failed: ${messageOf(error)}`);
      this.#track(this.#awaitUnplug(this.#unplug(instance.bytes)));
      return;
    }
    instance.state = 'busy';
    this.#sample();
    const coldStartMs = this.#clock.now() - began;
    await this.#serve(instance, pending, 'cold', queueWaitMs, coldStartMs, plugWaitMs);
  }

  async #serve(
    instance: Instance,
    pending: Pending,
    start: 'warm' | 'cold',
    queueWaitMs: number,
    coldStartMs: number,
    plugWaitMs: number,
  ): Promise<void> {
    const began = this.#clock.now();
    let error: string | null = null;
    try {
      await this.#deps.invoker.invoke(
        { instanceId: instance.id, functionName: instance.functionName },
        { durationMs: pending.invocation.durationMs, memoryBytes: pending.invocation.memoryBytes },
      );
    } catch (failure) {
      error = messageOf(failure);
      this.#log.warn({ err: failure, instance: instance.id }, 'invocation failed');
    }
    const now = this.#clock.now();
    this.#complete(pending, {
      queueWaitMs,
      start,
      coldStartMs,
      plugWaitMs,
      serviceMs: now - began,
      error,
    });
    this.#becameIdle(instance);
  }

  /** An invocation that never reached an instance. */
  #fail(pending: Pending, queueWaitMs: number, error: string): void {
    this.#complete(pending, {
      queueWaitMs,
      start: 'cold',
      coldStartMs: 0,
      plugWaitMs: 0,
      serviceMs: null,
      error,
    });
  }

  #complete(
    pending: Pending,
    outcome: Pick<
      InvocationRecord,
      'queueWaitMs' | 'start' | 'coldStartMs' | 'plugWaitMs' | 'serviceMs' | 'error'
    >,
  ): void {
    const record: InvocationRecord = {
      id: pending.id,
      functionName: pending.invocation.functionName,
      memoryBytes: pending.invocation.memoryBytes,
      arrivalMs: pending.arrivalMs,
      completionMs: this.#clock.now(),
      ...outcome,
    };
    this.metrics.invocations.push(record);
    pending.resolve(record);
  }

  /**
   * The oldest queued invocation of this function takes the instance; else keep-alive runs, and
   * the instance may be evicted for the queue's head.
   */
  #becameIdle(instance: Instance): void {
    if (instance.exitedOnItsOwn) {
      this.#track(this.#scaleDown(instance, 'exited'));
      return;
    }
    instance.state = 'idle';
    instance.idleSinceMs = this.#clock.now();
    const index = this.#queue.findIndex(
      (pending) =>
        pending.invocation.functionName === instance.functionName &&
        pending.bytes <= instance.bytes,
    );
    const [next] = index === -1 ? [] : this.#queue.splice(index, 1);
    if (next) {
      this.#dispatchWarm(next);
      return;
    }
    if (this.#closing) {
      this.#track(this.#scaleDown(instance, 'closing'));
      return;
    }
    instance.cancelKeepAlive = this.#clock.setTimeout(() => {
      instance.cancelKeepAlive = undefined;
      if (instance.state === 'idle') this.#track(this.#scaleDown(instance, 'keep-alive'));
    }, this.#config.keepAliveMs);
    this.#evictForQueueHead();
  }

  /**
   * Memory came free: start queued invocations in arrival order while the oldest fits; the one
   * that does not fit may have idle instances evicted for it.
   */
  #drainQueue(): void {
    for (;;) {
      const head = this.#queue[0];
      if (!head) return;
      if (!this.#scaleUp(head)) {
        this.#evictForQueueHead();
        return;
      }
      this.#queue.shift();
    }
  }

  /**
   * The oldest queued invocation waits for memory: scale idle instances down, least recently used
   * first, until it fits once they and the scale-downs already under way are done. Nothing is
   * evicted when all idle memory together would not make room (the head waits for busy instances
   * to become idle), nor when memory being freed already covers the need (a second trigger for
   * the same head evicts nothing more).
   */
  #evictForQueueHead(): void {
    const head = this.#queue[0];
    if (!head || !this.#config.evictIdle) return;
    let missingBytes =
      this.heldBytes - this.#bytesBeingFreed() + head.bytes - this.#config.budgetBytes;
    if (missingBytes <= 0) return;
    const idle = [...this.#instances]
      .filter((instance) => instance.state === 'idle')
      .sort((a, b) => a.idleSinceMs - b.idleSinceMs);
    const idleBytes = idle.reduce((total, instance) => total + instance.bytes, 0);
    if (idleBytes < missingBytes) return;
    for (const instance of idle) {
      if (missingBytes <= 0) break;
      missingBytes -= instance.bytes;
      this.#log.info(
        {
          instance: instance.id,
          function: instance.functionName,
          idleMs: this.#clock.now() - instance.idleSinceMs,
          forFunction: head.invocation.functionName,
        },
        'evicting idle instance',
      );
      this.#track(this.#scaleDown(instance, 'evicted'));
    }
  }

  /**
   * Held memory on its way back: instances whose scale-down is under way and has not stranded,
   * and what unplugs not yet done, and not late, still hold.
   */
  #bytesBeingFreed(): number {
    let total = this.#unplugHeldBytes(false);
    for (const instance of this.#instances) {
      if (instance.scaleDown?.outcome === 'in-progress') total += instance.bytes;
    }
    return total;
  }

  /**
   * Stop, then (hotmem) wait for the partition's reclaimed event, then unplug. A step that fails
   * leaves the instance's bytes plugged and held against the budget, and the record stranded.
   */
  async #scaleDown(instance: Instance, reason: ScaleDownRecord['reason']): Promise<void> {
    instance.cancelKeepAlive?.();
    instance.cancelKeepAlive = undefined;
    instance.state = 'stopping';
    const record: ScaleDownRecord = {
      instanceId: instance.id,
      functionName: instance.functionName,
      bytes: instance.bytes,
      reason,
      startedMs: this.#clock.now(),
      stopMs: null,
      reclaimMs: null,
      reclaimKernelMs: null,
      unplugMs: null,
      unplugLate: false,
      completedMs: null,
      outcome: 'in-progress',
      errors: [],
    };
    this.metrics.scaleDowns.push(record);
    instance.scaleDown = record;
    const strand = (error: unknown) => {
      record.outcome = 'stranded';
      record.errors.push(messageOf(error));
      this.#log.error({ err: error, instance: instance.id }, 'scale-down stranded');
      // Its memory is no longer on its way back: the queue may need other idle memory instead.
      this.#evictForQueueHead();
    };
    // Registered before the stop: the agent may reclaim before it answers the stop.
    const reclaimed =
      this.#config.mode === 'hotmem' && instance.partition !== null
        ? this.#waitForReclaim(instance.partition)
        : undefined;
    reclaimed?.catch(() => {});
    try {
      await this.#stop(instance, record);
    } catch (error) {
      strand(error);
      // The instance may still exit and be reclaimed; with no event to wait for it stays.
      if (!reclaimed) return;
    }
    if (reclaimed) {
      const began = this.#clock.now();
      const reclaimedAfter = (report: SerializedReclaimReport) => {
        record.reclaimMs = this.#clock.now() - began;
        record.reclaimKernelMs = report.durationNs / 1e6;
      };
      let report: SerializedReclaimReport;
      try {
        report = await this.#bounded(
          reclaimed,
          this.#config.reclaimTimeoutMs,
          `no partition-reclaimed event for partition ${instance.partition} of ${instance.id} in ${this.#config.reclaimTimeoutMs} ms`,
        );
      } catch (error) {
        strand(error);
        if (error instanceof WaitTimeoutError) {
          // A late event resumes it. Not tracked: close() must not wait for an event that may
          // never come.
          void reclaimed.then((late) => {
            reclaimedAfter(late);
            return this.#release(instance, record, strand);
          }, strand);
        }
        return;
      }
      reclaimedAfter(report);
    }
    await this.#release(instance, record, strand);
  }

  /**
   * The instance is gone from the guest: unplug its memory. An unplug not done in
   * unplugTimeoutMs strands the scale-down; it completes later if the device gets there.
   */
  async #release(
    instance: Instance,
    record: ScaleDownRecord,
    strand: (error: unknown) => void,
  ): Promise<void> {
    this.#instances.delete(instance);
    const began = this.#clock.now();
    const unplug = this.#unplug(instance.bytes);
    const unplugged = () => {
      record.unplugMs = this.#clock.now() - began;
      record.completedMs = this.#clock.now();
      record.outcome = 'unplugged';
    };
    const late = await this.#awaitUnplug(unplug);
    if (!late) {
      unplugged();
      return;
    }
    record.unplugLate = true;
    strand(late);
    // Not tracked: close() must not wait for the guest's retry timer, which may never free it.
    void unplug.done.then(unplugged);
  }

  /** Stops the instance, retrying agent failures; an instance the agent no longer knows is gone. */
  async #stop(instance: Instance, record: ScaleDownRecord): Promise<void> {
    const began = this.#clock.now();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#deps.agent.stopInstance(instance.id, { graceMs: this.#config.stopGraceMs });
        break;
      } catch (error) {
        if ((error as { code?: unknown }).code === 'HOTMEM_INSTANCE_NOT_FOUND') break;
        if (attempt >= this.#config.stopAttempts) {
          throw new Error(`stopping ${instance.id} failed ${attempt} times: ${messageOf(error)}`, {
            cause: error,
          });
        }
        record.errors.push(`stop attempt ${attempt}: ${messageOf(error)}`);
        await new Promise<void>((resolve) =>
          this.#clock.setTimeout(resolve, this.#config.retryDelayMs),
        );
      }
    }
    record.stopMs = this.#clock.now() - began;
    this.#sample();
  }

  /**
   * Lowers the device target to what the instances hold, `bytes` having left them; those bytes
   * count against the budget while the device still holds them, until the VMM reports the
   * target reached, and then the queue drains.
   */
  #unplug(bytes: number): Unplug {
    const memory = this.#requireMemory();
    const generation = memory.setTarget(this.#baselineBytes + this.#instanceBytesTotal());
    const unplug: Unplug = {
      bytes,
      late: false,
      done: memory.whenSettled(generation).then(() => {
        this.#unplugs.delete(unplug);
        this.#sample();
        this.#drainQueue();
      }),
    };
    this.#unplugs.add(unplug);
    this.#sample();
    return unplug;
  }

  /**
   * Waits for an unplug up to unplugTimeoutMs. Resolves with undefined once done, or with the
   * error saying how late it is: then its bytes stop counting as on its way back (the queue may
   * have other idle memory evicted) and the device's size is read again, so that only what it
   * still holds stays counted.
   */
  async #awaitUnplug(unplug: Unplug): Promise<Error | undefined> {
    const ms = this.#config.unplugTimeoutMs;
    try {
      await this.#bounded(unplug.done, ms, 'unplug');
      return undefined;
    } catch (error) {
      if (!(error instanceof WaitTimeoutError)) throw error;
    }
    unplug.late = true;
    const memory = this.#requireMemory();
    await memory.refresh();
    this.#evictForQueueHead();
    return new Error(
      `unplug not done in ${ms} ms: the device holds ${memory.pluggedBytes} bytes, the target is ${memory.targetBytes}`,
    );
  }

  #waitForReclaim(partition: number): Promise<SerializedReclaimReport> {
    return new Promise((resolve, reject) => {
      this.#reclaimWaiters.set(partition, { resolve, reject });
    });
  }

  async #subscribe(): Promise<void> {
    const iterator = (await this.#deps.agent.events())[Symbol.asyncIterator]();
    this.#events = iterator;
    void this.#consume(iterator);
  }

  async #consume(iterator: AsyncIterator<AgentEvent | SubscriberDropped>): Promise<void> {
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        this.#onEvent(next.value);
      }
    } catch (error) {
      this.#log.warn({ err: error }, 'agent event stream failed');
    }
    // Events in between are lost: a scale-down waiting then reports its reclaim as late.
    if (!this.#closing) this.#resubscribeLater();
  }

  #resubscribeLater(): void {
    this.#log.warn({ retryInMs: this.#config.retryDelayMs }, 'no agent event stream');
    this.#clock.setTimeout(() => {
      if (this.#closing) return;
      this.#subscribe().catch((error) => {
        this.#log.error({ err: error }, 'cannot subscribe to agent events');
        this.#resubscribeLater();
      });
    }, this.#config.retryDelayMs);
  }

  #onEvent(event: AgentEvent | SubscriberDropped): void {
    if (event.type === 'instance-exited') this.#onInstanceExited(event.instance.id);
    if (event.type !== 'partition-reclaimed' && event.type !== 'partition-reclaim-failed') return;
    const waiter = this.#reclaimWaiters.get(event.partition);
    if (!waiter) return;
    this.#reclaimWaiters.delete(event.partition);
    if (event.type === 'partition-reclaimed') waiter.resolve(event.report);
    else waiter.reject(new Error(`partition ${event.partition} reclaim failed: ${event.error}`));
  }

  /**
   * An instance that ended without being asked (crashed, killed by the OOM killer) leaves the
   * pool: an idle one is scaled down now, a busy one once its invocation has returned.
   */
  #onInstanceExited(id: string): void {
    for (const instance of this.#instances) {
      if (instance.id !== id || instance.state === 'stopping') continue;
      this.#log.warn({ instance: id }, 'instance exited on its own');
      instance.exitedOnItsOwn = true;
      if (instance.state === 'idle') this.#track(this.#scaleDown(instance, 'exited'));
    }
  }

  /** Rejects with WaitTimeoutError after `ms`; the wrapped promise goes on. */
  #bounded<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const cancel = this.#clock.setTimeout(() => reject(new WaitTimeoutError(message)), ms);
      promise.then(
        (value) => {
          cancel();
          resolve(value);
        },
        (error) => {
          cancel();
          reject(error);
        },
      );
    });
  }

  #sample(): void {
    if (!this.#memory) return;
    this.metrics.memory.push({
      timeMs: this.#clock.now(),
      requestedBytes: this.#memory.requestedBytes,
      pluggedBytes: this.#memory.pluggedBytes,
      usedBytes: this.#instanceBytesTotal(),
    });
  }

  #requireMemory(): MemoryReconciler {
    if (!this.#memory) throw new Error('Controller.start() has not been called');
    return this.#memory;
  }
}

export class WaitTimeoutError extends Error {
  override readonly name = 'WaitTimeoutError';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
