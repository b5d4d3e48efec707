/**
 * Drives the VM's virtio-mem device towards the plugged size the controller wants, one resize at
 * a time. The controller sets a target whenever its instances change; this module turns targets
 * into resize requests the VMM and the guest can take:
 *
 * - one request in flight: concurrent scale-ups and scale-downs merge into the next request;
 * - growth in steps of at most `stepBytes`: the guest driver stops adding memory while more than
 *   1 GiB of it sits offline, and HotMem keeps plugged memory offline until a partition takes it;
 * - a failed or timed-out resize is retried after `retryDelayMs` (a new target retries at once),
 *   so the device ends at the target once the VMM works again.
 *
 * Waiters are released by generation: setTarget() returns the generation of the new target, and
 * a target "settles" when the VMM reports the device at a target of that generation or a later one.
 */
import type { Logger } from 'pino';
import { type HotplugMemory, HotplugMemoryError } from '../vmm/hotplug-memory.js';
import type { Clock } from './ports.js';

export interface MemoryReconcilerOptions {
  stepBytes: number;
  resizeTimeoutMs: number;
  retryDelayMs: number;
  clock: Clock;
  logger: Logger;
  /** Called whenever the requested or plugged size changes. */
  onChange: () => void;
  /** Never lower the target: memory once plugged stays (the no-give-back baseline). */
  keepPlugged?: boolean;
}

interface Waiter {
  generation: number;
  /** Also released once at least this much is plugged (a scale-up needs no more). */
  level: number | undefined;
  resolve: () => void;
}

export class MemoryReconciler {
  readonly #hotplug: HotplugMemory;
  readonly #options: MemoryReconcilerOptions;
  #target: number;
  #requested: number;
  #plugged: number;
  #generation = 0;
  /** The latest generation the device settled at. */
  #settled = 0;
  #waiters: Waiter[] = [];
  #running = false;
  #cancelRetry: (() => void) | undefined;
  #closed = false;
  #failures = 0;

  constructor(
    hotplug: HotplugMemory,
    initial: { requestedBytes: number; pluggedBytes: number },
    options: MemoryReconcilerOptions,
  ) {
    this.#hotplug = hotplug;
    this.#options = options;
    this.#target = initial.requestedBytes;
    this.#requested = initial.requestedBytes;
    this.#plugged = initial.pluggedBytes;
  }

  get targetBytes(): number {
    return this.#target;
  }
  get requestedBytes(): number {
    return this.#requested;
  }
  /** The plugged size last reported by the VMM. */
  get pluggedBytes(): number {
    return this.#plugged;
  }
  /** Resizes that failed or timed out so far (each was retried). */
  get failures(): number {
    return this.#failures;
  }

  /** Sets the size the device should reach; returns the generation of that target. */
  setTarget(bytes: number): number {
    this.#target = this.#options.keepPlugged ? Math.max(bytes, this.#target) : bytes;
    this.#generation += 1;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    void this.#run();
    return this.#generation;
  }

  /** Resolves once the device has settled at a target of `generation` or later. */
  whenSettled(generation: number): Promise<void> {
    // A target the device already had settles inside setTarget(), before anyone waits.
    if (generation <= this.#settled) return Promise.resolve();
    return this.#wait(generation, undefined);
  }

  /**
   * Resolves once at least `level` bytes are plugged, or the device has settled at a target of
   * `generation` or later (a scale-down after a scale-up can leave the level out of reach while
   * the target still holds the scale-up's bytes).
   */
  whenPlugged(level: number, generation: number): Promise<void> {
    if (this.#plugged >= level) return Promise.resolve();
    return this.#wait(generation, level);
  }

  /** Stops retrying; a resize in flight finishes on its own. */
  close(): void {
    this.#closed = true;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
  }

  #wait(generation: number, level: number | undefined): Promise<void> {
    return new Promise((resolve) => this.#waiters.push({ generation, level, resolve }));
  }

  #release(settledGeneration: number | undefined): void {
    if (settledGeneration !== undefined) this.#settled = Math.max(this.#settled, settledGeneration);
    this.#waiters = this.#waiters.filter((waiter) => {
      const settled = settledGeneration !== undefined && waiter.generation <= settledGeneration;
      const reached = waiter.level !== undefined && this.#plugged >= waiter.level;
      if (settled || reached) waiter.resolve();
      return !(settled || reached);
    });
  }

  async #run(): Promise<void> {
    if (this.#running || this.#closed) return;
    this.#running = true;
    try {
      for (;;) {
        const generation = this.#generation;
        const goal = this.#target;
        if (this.#requested === goal && this.#plugged === goal) {
          this.#release(generation);
          return;
        }
        const next =
          goal > this.#requested ? Math.min(goal, this.#requested + this.#options.stepBytes) : goal;
        try {
          await this.#resize(next);
        } catch (error) {
          this.#failed(next, error);
          return;
        }
        this.#requested = next;
        this.#plugged = next;
        this.#options.onChange();
        this.#release(next === goal ? generation : undefined);
      }
    } finally {
      this.#running = false;
    }
  }

  async #resize(bytes: number): Promise<void> {
    // Already requested (a retry after a timeout): some VMMs refuse the same size again.
    if (this.#requested === bytes && (await this.#hotplug.size()) === bytes) return;
    await this.#hotplug.resize(bytes, { timeoutMs: this.#options.resizeTimeoutMs });
  }

  #failed(bytes: number, error: unknown): void {
    this.#failures += 1;
    if (error instanceof HotplugMemoryError) {
      // A timed-out request stands in the VMM; so does one refused for being the same size.
      if (error.code === 'ERR_RESIZE_TIMEOUT' || error.code === 'ERR_SAME_SIZE') {
        this.#requested = bytes;
      }
      if (error.lastSize !== undefined) this.#plugged = error.lastSize;
      this.#options.onChange();
      this.#release(undefined);
    }
    this.#options.logger.warn(
      { err: error, requestedBytes: bytes, retryInMs: this.#options.retryDelayMs },
      'resize failed; retrying',
    );
    if (this.#closed) return;
    this.#cancelRetry = this.#options.clock.setTimeout(() => {
      this.#cancelRetry = undefined;
      void this.#run();
    }, this.#options.retryDelayMs);
  }
}
