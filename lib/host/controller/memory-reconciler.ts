/**
 * Drives the VM's virtio-mem device towards the plugged size the controller wants, one resize at
 * a time. The controller sets a target whenever its instances change; this module turns targets
 * into resize requests the VMM and the guest can take:
 *
 * - one resize waited for at a time: concurrent scale-ups and scale-downs merge into the next
 *   request;
 * - growth in steps of at most `stepBytes`: the guest driver stops adding memory while more than
 *   1 GiB of it sits offline, and HotMem keeps plugged memory offline until a partition takes it;
 * - a failed resize is retried after `retryDelayMs` (a new target retries at once), so the device
 *   ends at the target once the VMM works again;
 * - a request the VMM took stands: when the guest is slow to get there (a timed-out resize) it is
 *   not sent again but the plugged size is read every `retryDelayMs` until the guest is there.
 *   Sending it again would wake QEMU's guest driver before its retry timer (and Cloud Hypervisor
 *   refuses it), so a stock unplug stalled on unmovable pages takes as long as it does on its own;
 * - a new target does not wait for an unplug under way: the wait ends, the request stands, and
 *   the new one goes to the VMM at once (a scale-up must not queue behind a guest that may need
 *   minutes to unplug).
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
  /** Counts reports of the plugged size: a read that a newer report overtook is dropped. */
  #pluggedReports = 0;
  #generation = 0;
  /** The latest generation the device settled at. */
  #settled = 0;
  #waiters: Waiter[] = [];
  #running = false;
  /** The resize being waited for: its size, and how to stop waiting. */
  #inFlight: { bytes: number; down: boolean; abort: AbortController } | undefined;
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
  /**
   * The most the device may hold now: the plugged size last reported, or the size requested of
   * it (the request in flight once there is one) if more. Above the target it is memory an
   * unplug has not taken out yet.
   */
  get ceilingBytes(): number {
    return Math.max(this.#plugged, this.#inFlight?.bytes ?? this.#requested);
  }
  /** Resizes that failed or timed out so far (each was retried, or waited for). */
  get failures(): number {
    return this.#failures;
  }

  /** Sets the size the device should reach; returns the generation of that target. */
  setTarget(bytes: number): number {
    this.#target = this.#options.keepPlugged ? Math.max(bytes, this.#target) : bytes;
    this.#generation += 1;
    const inFlight = this.#inFlight;
    if (inFlight?.down && inFlight.bytes !== this.#target) {
      inFlight.abort.abort(new Error('the target moved'));
    }
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
    if (this.#surelyPlugged() >= level) return Promise.resolve();
    return this.#wait(generation, level);
  }

  /**
   * Reads the plugged size from the VMM now: a wait in flight reports it only when it ends.
   * A failed read leaves the last report.
   */
  async refresh(): Promise<void> {
    await this.#readPlugged().catch(() => undefined);
  }

  /** Stops retrying and waiting; a request the VMM took stands. */
  close(): void {
    this.#closed = true;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    this.#inFlight?.abort.abort(new Error('closed'));
  }

  #wait(generation: number, level: number | undefined): Promise<void> {
    return new Promise((resolve) => this.#waiters.push({ generation, level, resolve }));
  }

  #release(settledGeneration: number | undefined): void {
    if (settledGeneration !== undefined) this.#settled = Math.max(this.#settled, settledGeneration);
    this.#waiters = this.#waiters.filter((waiter) => {
      const settled = settledGeneration !== undefined && waiter.generation <= settledGeneration;
      const reached = waiter.level !== undefined && this.#surelyPlugged() >= waiter.level;
      if (settled || reached) waiter.resolve();
      return !(settled || reached);
    });
  }

  async #run(): Promise<void> {
    if (this.#running || this.#closed) return;
    this.#running = true;
    try {
      while (!this.#closed) {
        const generation = this.#generation;
        const goal = this.#target;
        if (this.#requested === goal) {
          // The request stands: read how far the guest got, never send it again.
          if (this.#plugged !== goal) {
            try {
              await this.#readPlugged();
            } catch (error) {
              this.#failed(goal, error);
              return;
            }
            // A new target came while the size was read: it goes now.
            if (this.#generation !== generation) continue;
            if (this.#plugged !== goal) {
              this.#later();
              return;
            }
          }
          this.#release(generation);
          return;
        }
        const next =
          goal > this.#requested ? Math.min(goal, this.#requested + this.#options.stepBytes) : goal;
        const inFlight = {
          bytes: next,
          down: next < Math.max(this.#requested, this.#plugged),
          abort: new AbortController(),
        };
        this.#inFlight = inFlight;
        try {
          await this.#hotplug.resize(next, {
            timeoutMs: this.#options.resizeTimeoutMs,
            signal: inFlight.abort.signal,
          });
        } catch (error) {
          if (error !== inFlight.abort.signal.reason) {
            this.#failed(next, error);
            return;
          }
          // The VMM took the request and it stands; the guest goes on towards it.
          this.#requested = next;
          this.#options.onChange();
          await this.refresh();
          continue;
        } finally {
          this.#inFlight = undefined;
        }
        this.#requested = next;
        this.#reported(next);
        this.#options.onChange();
        this.#release(next === goal ? generation : undefined);
      }
    } finally {
      this.#running = false;
    }
  }

  /** Reads the plugged size and takes it, unless a newer report came while it was read. */
  async #readPlugged(): Promise<void> {
    const reports = this.#pluggedReports;
    const size = await this.#hotplug.size();
    if (reports !== this.#pluggedReports || size === this.#plugged) return;
    this.#reported(size);
    this.#options.onChange();
  }

  /**
   * The least the device holds: the plugged size last reported, unless an unplug is in flight
   * (the guest may be taking memory out below the last report).
   */
  #surelyPlugged(): number {
    const inFlight = this.#inFlight;
    return inFlight?.down ? Math.min(this.#plugged, inFlight.bytes) : this.#plugged;
  }

  #reported(pluggedBytes: number): void {
    this.#plugged = pluggedBytes;
    this.#pluggedReports += 1;
  }

  #failed(bytes: number, error: unknown): void {
    this.#failures += 1;
    // A timed-out request stands in the VMM; so does one refused for being the same size.
    const stands =
      error instanceof HotplugMemoryError &&
      (error.code === 'ERR_RESIZE_TIMEOUT' || error.code === 'ERR_SAME_SIZE');
    if (error instanceof HotplugMemoryError) {
      if (stands) this.#requested = bytes;
      if (error.lastSize !== undefined) this.#reported(error.lastSize);
      this.#options.onChange();
      this.#release(undefined);
    }
    this.#options.logger.warn(
      { err: error, requestedBytes: bytes, retryInMs: this.#options.retryDelayMs },
      stands
        ? 'resize not done in time; the request stands, reading the size until it is'
        : 'resize failed; retrying',
    );
    this.#later();
  }

  /** Runs again after retryDelayMs, unless a new target runs it sooner. */
  #later(): void {
    if (this.#closed) return;
    this.#cancelRetry = this.#options.clock.setTimeout(() => {
      this.#cancelRetry = undefined;
      void this.#run();
    }, this.#options.retryDelayMs);
  }
}
