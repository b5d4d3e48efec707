/**
 * Firecracker (≥ 1.14) over its API unix socket (`--api-sock`): the /hotplug/memory calls that
 * drive its virtio-mem device, and that device as a HotplugMemory.
 *
 * API as read in src/firecracker/swagger/firecracker.yaml (v1.14.0 and v1.16.1; sizes in MiB) and
 * the code behind it (src/vmm/src/rpc_interface.rs, src/vmm/src/devices/virtio/mem/device.rs):
 * PUT configures the device, before boot only; PATCH sets the requested size once the VM runs,
 * asynchronously; GET reports what the guest has plugged. Every failure is a 400 whose JSON body
 * is {"fault_message": "..."}.
 */
import { z } from 'zod';
import {
  type HotplugMemory,
  HotplugMemoryError,
  type ResizeOptions,
  waitForPluggedSize,
} from './hotplug-memory.js';
import {
  type UnixSocketClientOptions,
  unixHttpRequest,
  unixSocketClientOptions,
} from './unix-http.js';

const HOTPLUG_MEMORY_PATH = '/hotplug/memory';
const MiB = 1024 * 1024;
/** The MiB fields are u32 (memory_hotplug.rs at v1.16.1; the swagger's maximum 4294967295). */
const MAX_MIB = 2 ** 32 - 1;

const mibCount = z.number().int().nonnegative().max(MAX_MIB);

const memoryHotplugStatusSchema = z.object({
  total_size_mib: mibCount,
  slot_size_mib: mibCount,
  block_size_mib: mibCount.positive(),
  plugged_size_mib: mibCount,
  requested_size_mib: mibCount,
});

const faultSchema = z.object({ fault_message: z.string() });

/** PUT /hotplug/memory: the device's geometry, fixed at boot. */
export interface MemoryHotplugConfig {
  totalSizeMib: number;
  /** Firecracker's default 128, minimum 128: the granularity the host maps memory in. */
  slotSizeMib?: number;
  /** Firecracker's default 2, minimum 2, a power of two: the guest's plug granularity. */
  blockSizeMib?: number;
}

/** GET /hotplug/memory. */
export interface MemoryHotplugStatus {
  totalSizeMib: number;
  slotSizeMib: number;
  blockSizeMib: number;
  pluggedSizeMib: number;
  requestedSizeMib: number;
}

export type FirecrackerClientOptions = UnixSocketClientOptions;

/** Firecracker answered with a status outside 2xx, or with a body that does not match its API. */
export class FirecrackerApiError extends Error {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly body: string;
  /** The fault_message of an error answer, when the body is one. */
  readonly faultMessage: string | undefined;

  constructor(method: string, path: string, status: number, body: string, detail?: string) {
    const fault = faultSchema.safeParse(safeJsonParse(body));
    const faultMessage = fault.success ? fault.data.fault_message : undefined;
    const shown = faultMessage ?? body.slice(0, 4_096);
    super(
      `${method} ${path} -> ${status}${detail ? ` (${detail})` : ''}${shown ? `: ${shown}` : ''}`,
    );
    this.name = 'FirecrackerApiError';
    this.method = method;
    this.path = path;
    this.status = status;
    this.body = body;
    this.faultMessage = faultMessage;
  }
}

/** No complete answer within the timeout; the request was aborted. */
export class FirecrackerTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(method: string, path: string, timeoutMs: number) {
    super(`${method} ${path}: no response from the Firecracker API within ${timeoutMs} ms`);
    this.name = 'FirecrackerTimeoutError';
  }
}

export class FirecrackerClient {
  readonly socketPath: string;
  readonly timeoutMs: number;

  constructor(options: FirecrackerClientOptions) {
    ({ socketPath: this.socketPath, timeoutMs: this.timeoutMs } = unixSocketClientOptions(options));
  }

  /** PUT /hotplug/memory; before InstanceStart only. Unset fields take Firecracker's defaults. */
  async configureHotplugMemory(config: MemoryHotplugConfig): Promise<void> {
    mibOrThrow('totalSizeMib', config.totalSizeMib);
    if (config.slotSizeMib !== undefined) mibOrThrow('slotSizeMib', config.slotSizeMib);
    if (config.blockSizeMib !== undefined) mibOrThrow('blockSizeMib', config.blockSizeMib);
    await this.request('PUT', {
      total_size_mib: config.totalSizeMib,
      ...(config.slotSizeMib !== undefined && { slot_size_mib: config.slotSizeMib }),
      ...(config.blockSizeMib !== undefined && { block_size_mib: config.blockSizeMib }),
    });
  }

  /** PATCH /hotplug/memory; resolves once accepted, before the guest plugged anything. */
  async requestHotplugMemory(requestedSizeMib: number): Promise<void> {
    mibOrThrow('requestedSizeMib', requestedSizeMib);
    await this.request('PATCH', { requested_size_mib: requestedSizeMib });
  }

  async hotplugMemoryStatus(): Promise<MemoryHotplugStatus> {
    const { status, body } = await this.request('GET');
    const parsed = memoryHotplugStatusSchema.safeParse(safeJsonParse(body));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const detail = issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'bad shape';
      throw new FirecrackerApiError('GET', HOTPLUG_MEMORY_PATH, status, body, detail);
    }
    const s = parsed.data;
    return {
      totalSizeMib: s.total_size_mib,
      slotSizeMib: s.slot_size_mib,
      blockSizeMib: s.block_size_mib,
      pluggedSizeMib: s.plugged_size_mib,
      requestedSizeMib: s.requested_size_mib,
    };
  }

  private async request(
    method: 'GET' | 'PUT' | 'PATCH',
    payload?: unknown,
  ): Promise<{ status: number; body: string }> {
    const path = HOTPLUG_MEMORY_PATH;
    const response = await unixHttpRequest({
      socketPath: this.socketPath,
      method,
      path,
      payload,
      timeoutMs: this.timeoutMs,
      timeoutError: () => new FirecrackerTimeoutError(method, path, this.timeoutMs),
    });
    if (response.status < 200 || response.status > 299) {
      throw new FirecrackerApiError(method, path, response.status, response.body);
    }
    return response;
  }
}

/**
 * The fault messages PATCH /hotplug/memory fails with (v1.16.1): VirtioMemError's DeviceNotActive
 * and InvalidSize (devices/virtio/mem/device.rs), and the pre-boot refusal (rpc_interface.rs).
 */
const DEVICE_NOT_ACTIVE = /Device is not active/;
const NOT_STARTED = /not supported before starting the microVM/;
const INVALID_SIZE = /Size \d+ is invalid/;

/** Firecracker's virtio-mem device, configured with PUT /hotplug/memory before boot. */
export class FirecrackerHotplugMemory implements HotplugMemory {
  /** Firecracker fixes block and region size at boot: read them once. */
  private geometryRead: Promise<{ blockSize: number; regionSize: number }> | undefined;

  constructor(private readonly client: FirecrackerClient) {}

  private geometry(): Promise<{ blockSize: number; regionSize: number }> {
    this.geometryRead ??= this.client.hotplugMemoryStatus().then(
      (s) => ({ blockSize: s.blockSizeMib * MiB, regionSize: s.totalSizeMib * MiB }),
      (err: unknown) => {
        this.geometryRead = undefined;
        throw err;
      },
    );
    return this.geometryRead;
  }

  async blockSize(): Promise<number> {
    return (await this.geometry()).blockSize;
  }

  async regionSize(): Promise<number> {
    return (await this.geometry()).regionSize;
  }

  async requestedSize(): Promise<number> {
    return (await this.client.hotplugMemoryStatus()).requestedSizeMib * MiB;
  }

  async size(): Promise<number> {
    return (await this.client.hotplugMemoryStatus()).pluggedSizeMib * MiB;
  }

  /**
   * PATCHes the requested size and polls GET until the plugged size equals it. Firecracker accepts
   * the size it already requests, so ERR_SAME_SIZE never comes from here.
   */
  async resize(bytes: number, opts: ResizeOptions & { pollMs?: number }): Promise<number> {
    // The API counts MiB and blocks are at least 2 MiB: a size off the MiB grid cannot be sent,
    // and is off the block grid anyway.
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % MiB !== 0) {
      throw new HotplugMemoryError(
        'ERR_NOT_BLOCK_MULTIPLE',
        `requested size ${bytes} must be a non-negative multiple of the block size (whole MiB)`,
        { requestedBytes: bytes },
      );
    }
    if (bytes / MiB > MAX_MIB) {
      throw new HotplugMemoryError(
        'ERR_ABOVE_REGION',
        `requested size ${bytes} is above any Firecracker region (${MAX_MIB} MiB)`,
        { requestedBytes: bytes },
      );
    }
    const start = performance.now();
    try {
      await this.client.requestHotplugMemory(bytes / MiB);
    } catch (err) {
      throw await this.refusal(bytes, err);
    }
    const done = await waitForPluggedSize(() => this.size(), bytes, {
      ...opts,
      device: 'Firecracker virtio-mem',
    });
    return done - start;
  }

  /** Maps a refused PATCH to the HotplugMemoryError naming why; other failures pass through. */
  private async refusal(bytes: number, err: unknown): Promise<unknown> {
    const fault = err instanceof FirecrackerApiError ? err.faultMessage : undefined;
    if (fault === undefined) return err;
    if (DEVICE_NOT_ACTIVE.test(fault) || NOT_STARTED.test(fault)) {
      return new HotplugMemoryError(
        'ERR_DEVICE_NOT_ACTIVE',
        `Firecracker virtio-mem: cannot request ${bytes} bytes yet: ${fault}`,
        { requestedBytes: bytes, cause: err },
      );
    }
    if (INVALID_SIZE.test(fault)) {
      // One InvalidSize covers both rules; the geometry says which one was broken.
      const { blockSize, regionSize } = await this.geometry();
      const [code, rule] =
        bytes % blockSize !== 0
          ? (['ERR_NOT_BLOCK_MULTIPLE', `a multiple of the block size ${blockSize}`] as const)
          : (['ERR_ABOVE_REGION', `at most the region size ${regionSize}`] as const);
      return new HotplugMemoryError(
        code,
        `Firecracker virtio-mem: requested size ${bytes} must be ${rule}: ${fault}`,
        { requestedBytes: bytes, cause: err },
      );
    }
    return err;
  }
}

function mibOrThrow(name: string, value: number): void {
  if (!mibCount.safeParse(value).success) {
    throw new RangeError(
      `${name}: expected an integer number of MiB in [0, ${MAX_MIB}], got ${String(value)}`,
    );
  }
}

function safeJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
