/**
 * The VM's hot-pluggable memory as the host sees it: one virtio-mem device, whatever the VMM.
 * A controller asks for a plugged size and learns when the guest got there; each VMM driver
 * (qemu.ts, cloud-hypervisor.ts, firecracker.ts) implements this over its own API. All sizes are
 * bytes. docs/vmm.md describes the drivers and documents every error code below.
 */

export interface HotplugMemory {
  /** The device's block size: every requested size is a multiple of it. */
  blockSize(): Promise<number>;
  /** The device's whole region: the most that can be plugged. */
  regionSize(): Promise<number>;
  /** The size last requested of the guest. */
  requestedSize(): Promise<number>;
  /** The size the guest has plugged, as the VMM reports it. */
  size(): Promise<number>;
  /**
   * Requests `bytes` plugged and resolves, with the milliseconds from the request until then,
   * once the VMM reports that size plugged; rejects with a HotplugMemoryError otherwise.
   * `signal` ends the wait, never the request: aborted once the VMM has taken the request, resize
   * rejects with the signal's reason and the request stands (the guest goes on towards it).
   */
  resize(bytes: number, opts: ResizeOptions): Promise<number>;
}

export interface ResizeOptions {
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Why a resize failed; the same code whichever VMM refused it. */
export const HOTPLUG_MEMORY_ERRORS = {
  ERR_NOT_BLOCK_MULTIPLE: 'the size is not a non-negative multiple of the block size',
  ERR_ABOVE_REGION: 'the size is larger than the hot-pluggable region',
  ERR_DEVICE_NOT_ACTIVE: 'the VM is not running, or its guest driver has not set the device up',
  ERR_SAME_SIZE: 'the VMM refuses to request the size it already requests (Cloud Hypervisor)',
  ERR_RESIZE_TIMEOUT: 'the plugged size did not reach the requested size in time',
} as const satisfies Record<string, string>;

export type HotplugMemoryErrorCode = keyof typeof HOTPLUG_MEMORY_ERRORS;

export class HotplugMemoryError extends Error {
  readonly code: HotplugMemoryErrorCode;
  /** The size resize() was asked for. */
  readonly requestedBytes: number;
  /** ERR_RESIZE_TIMEOUT: the plugged size last read from the VMM. */
  readonly lastSize: number | undefined;

  constructor(
    code: HotplugMemoryErrorCode,
    message: string,
    details: { requestedBytes: number; lastSize?: number; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'HotplugMemoryError';
    this.code = code;
    this.requestedBytes = details.requestedBytes;
    this.lastSize = details.lastSize;
  }
}

/**
 * Sleeps `ms`, or less when `signal` aborts (the caller then checks it); `wake`, if given, gets a
 * function that ends the sleep early.
 */
function pollDelay(
  ms: number,
  signal: AbortSignal | undefined,
  wake?: (end: () => void) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const end = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', end);
      resolve();
    };
    const timer = setTimeout(end, ms);
    signal?.addEventListener('abort', end, { once: true });
    wake?.(end);
  });
}

/**
 * Reads the plugged size until it equals `bytes`; resolves with the moment (performance.now())
 * it was first seen there. Reads come a tenth of the time waited so far apart (at least 1 ms, at
 * most pollMs), so a quick resize is timed closely and a slow one costs the VMM few requests.
 * A VMM that announces size changes passes `sizeEvents`: it subscribes a listener for the
 * sizes announced and returns the unsubscribe. Each announcement ends the current sleep early,
 * and one of `bytes` ends the wait, at the moment it came, even before a read shows that size.
 * An aborted `signal` ends the wait with its reason.
 */
export async function waitForPluggedSize(
  readSize: () => Promise<number>,
  bytes: number,
  opts: ResizeOptions & {
    pollMs?: number;
    device: string;
    sizeEvents?: (listener: (size: number) => void) => () => void;
  },
): Promise<number> {
  const start = performance.now();
  const deadline = start + opts.timeoutMs;
  const pollMs = opts.pollMs ?? 10;
  let wake: (() => void) | undefined;
  let announcedAt: number | undefined;
  const unsubscribe = opts.sizeEvents?.((size) => {
    if (size === bytes) announcedAt ??= performance.now();
    wake?.();
  });
  try {
    let last = await readSize();
    while (last !== bytes && announcedAt === undefined) {
      opts.signal?.throwIfAborted();
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new HotplugMemoryError(
          'ERR_RESIZE_TIMEOUT',
          `${opts.device}: plugged size is ${last} bytes, not ${bytes}, after ${opts.timeoutMs} ms`,
          { requestedBytes: bytes, lastSize: last },
        );
      }
      const waited = performance.now() - start;
      await pollDelay(Math.min(Math.max(1, waited / 10), pollMs, left), opts.signal, (end) => {
        wake = end;
      });
      wake = undefined;
      last = await readSize();
    }
    return announcedAt ?? performance.now();
  } finally {
    unsubscribe?.();
  }
}
