/**
 * Cloud Hypervisor REST client over its API unix socket (`--api-socket`), and its virtio-mem
 * device as a HotplugMemory.
 *
 * Only the calls HotMem needs: ping, VM info, counters, and the two resize calls that drive the
 * virtio-mem device. Resizes are asynchronous on the VMM side (204 once the request is queued);
 * from v52 vm.info shows what the guest plugged, before that completion must be observed in the
 * guest (docs/vmm.md).
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

const API_PREFIX = '/api/v1/';
/** Error bodies are text; keep enough to be useful in a message, not a whole page. */
const MAX_ERROR_BODY_CHARS = 4_096;

const vmmPingSchema = z.object({
  version: z.string(),
  build_version: z.string().optional(),
  pid: z.number().int().optional(),
  features: z.array(z.string()).optional(),
});

const memoryZoneSchema = z.object({
  id: z.string(),
  size: z.number().int(),
  hotplug_size: z.number().int().optional(),
  hotplugged_size: z.number().int().optional(),
});

const vmInfoSchema = z.object({
  state: z.enum(['Created', 'Running', 'Shutdown', 'Paused', 'BreakPoint']),
  memory_actual_size: z.number().int().optional(),
  config: z.object({
    memory: z
      .object({
        size: z.number().int(),
        hotplug_size: z.number().int().optional(),
        hotplugged_size: z.number().int().optional(),
        // A plain serde enum (vm_config.rs HotplugMethod, v53.0), not the CLI's "virtio-mem".
        hotplug_method: z.enum(['Acpi', 'VirtioMem']).optional(),
        zones: z.array(memoryZoneSchema).optional(),
      })
      .optional(),
    balloon: z.object({ size: z.number().int() }).optional(),
  }),
});

const vmCountersSchema = z.record(z.string(), z.record(z.string(), z.number()));

export type VmState = z.infer<typeof vmInfoSchema>['state'];

export interface VmmPing {
  version: string;
  buildVersion?: string;
  pid?: number;
  features: string[];
}

export interface MemoryZone {
  id: string;
  size: number;
  hotplugSize?: number;
  hotpluggedSize?: number;
}

export interface VmInfo {
  state: VmState;
  /** Until v52 this is the requested size, not what the guest actually released. */
  memoryActualSize?: number;
  memory?: {
    size: number;
    hotplugSize?: number;
    hotpluggedSize?: number;
    hotplugMethod?: 'Acpi' | 'VirtioMem';
    zones: MemoryZone[];
  };
  /** The balloon's configured size; memory_actual_size counts it out. */
  balloonSize?: number;
}

/** Device id -> counter name -> value, as the VMM reports them. */
export type VmCounters = Record<string, Record<string, number>>;

export type CloudHypervisorClientOptions = UnixSocketClientOptions;

/** The VMM answered with a status outside 2xx, or with a body that does not match its API. */
export class CloudHypervisorApiError extends Error {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly body: string;

  constructor(method: string, path: string, status: number, body: string, detail?: string) {
    const shownBody = body.length > 0 ? `: ${body.slice(0, MAX_ERROR_BODY_CHARS)}` : '';
    super(`${method} ${path} -> ${status}${detail ? ` (${detail})` : ''}${shownBody}`);
    this.name = 'CloudHypervisorApiError';
    this.method = method;
    this.path = path;
    this.status = status;
    this.body = body;
  }
}

/** No complete answer within the timeout; the request was aborted. */
export class CloudHypervisorTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(method: string, path: string, timeoutMs: number) {
    super(`${method} ${path}: no response from the Cloud Hypervisor API within ${timeoutMs} ms`);
    this.name = 'CloudHypervisorTimeoutError';
  }
}

const byteCount = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

export class CloudHypervisorClient {
  readonly socketPath: string;
  readonly timeoutMs: number;

  constructor(options: CloudHypervisorClientOptions) {
    ({ socketPath: this.socketPath, timeoutMs: this.timeoutMs } = unixSocketClientOptions(options));
  }

  async ping(): Promise<VmmPing> {
    const ping = await this.getJson('vmm.ping', vmmPingSchema);
    return {
      version: ping.version,
      ...(ping.build_version !== undefined && { buildVersion: ping.build_version }),
      ...(ping.pid !== undefined && { pid: ping.pid }),
      features: ping.features ?? [],
    };
  }

  async info(): Promise<VmInfo> {
    const info = await this.getJson('vm.info', vmInfoSchema);
    const memory = info.config.memory;
    return {
      state: info.state,
      ...(info.memory_actual_size !== undefined && { memoryActualSize: info.memory_actual_size }),
      ...(memory && {
        memory: {
          size: memory.size,
          ...(memory.hotplug_size !== undefined && { hotplugSize: memory.hotplug_size }),
          ...(memory.hotplugged_size !== undefined && { hotpluggedSize: memory.hotplugged_size }),
          ...(memory.hotplug_method !== undefined && { hotplugMethod: memory.hotplug_method }),
          zones: (memory.zones ?? []).map((zone) => ({
            id: zone.id,
            size: zone.size,
            ...(zone.hotplug_size !== undefined && { hotplugSize: zone.hotplug_size }),
            ...(zone.hotplugged_size !== undefined && { hotpluggedSize: zone.hotplugged_size }),
          })),
        },
      }),
      ...(info.config.balloon && { balloonSize: info.config.balloon.size }),
    };
  }

  counters(): Promise<VmCounters> {
    return this.getJson('vm.counters', vmCountersSchema);
  }

  /**
   * Sets the VM's total RAM; the virtio-mem request becomes desiredRam minus boot RAM. Resolves
   * once the VMM accepted the request, before the guest plugged or released anything.
   */
  async resize({ desiredRam }: { desiredRam: number }): Promise<void> {
    byteCountOrThrow('desiredRam', desiredRam);
    await this.request('PUT', 'vm.resize', { desired_ram: desiredRam });
  }

  /** Sets the size of one memory zone (`--memory-zone id=…`); asynchronous like resize(). */
  async resizeZone({ id, desiredRam }: { id: string; desiredRam: number }): Promise<void> {
    if (typeof id !== 'string' || id.length === 0) {
      throw new TypeError('id: the memory zone id must be a non-empty string');
    }
    byteCountOrThrow('desiredRam', desiredRam);
    await this.request('PUT', 'vm.resize-zone', { id, desired_ram: desiredRam });
  }

  private async getJson<T>(endpoint: string, schema: z.ZodType<T>): Promise<T> {
    const { status, body } = await this.request('GET', endpoint);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new CloudHypervisorApiError('GET', API_PREFIX + endpoint, status, body, 'not JSON');
    }
    const result = schema.safeParse(parsed);
    if (!result.success) {
      const issue = result.error.issues[0];
      const detail = issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'bad shape';
      throw new CloudHypervisorApiError('GET', API_PREFIX + endpoint, status, body, detail);
    }
    return result.data;
  }

  private async request(
    method: 'GET' | 'PUT',
    endpoint: string,
    payload?: unknown,
  ): Promise<{ status: number; body: string }> {
    const path = API_PREFIX + endpoint;
    const response = await unixHttpRequest({
      socketPath: this.socketPath,
      method,
      path,
      payload,
      timeoutMs: this.timeoutMs,
      timeoutError: () => new CloudHypervisorTimeoutError(method, path, this.timeoutMs),
    });
    if (response.status < 200 || response.status > 299) {
      throw new CloudHypervisorApiError(method, path, response.status, response.body);
    }
    return response;
  }
}

function byteCountOrThrow(name: string, value: number): void {
  if (!byteCount.safeParse(value).success) {
    throw new RangeError(
      `${name}: expected a positive integer number of bytes, got ${String(value)}`,
    );
  }
}

/** virtio-devices/src/mem.rs VIRTIO_MEM_DEFAULT_BLOCK_SIZE (v38.0 to v53.0): fixed, not configurable. */
const VIRTIO_MEM_BLOCK_SIZE = 2 * 1024 * 1024;
/** v52 made vm.info's memory_actual_size count what the guest plugged, not what was requested. */
const FIRST_VERSION_REPORTING_PLUGGED = 52;

/**
 * Cloud Hypervisor's refusals of a resize (virtio-devices/src/mem.rs VirtioMemConfig::resize, the
 * same words from v38.0 to v53.0), found in the 500 body: the JSON array of the whole error chain
 * since v51 (api/http/mod.rs error_response), so in every version this driver accepts.
 */
const SAME_SIZE = /and requested_size are identical/;
const ABOVE_REGION = /is bigger than region_size/;
const OFF_BLOCK_GRID = /is not aligned on block_size/;

interface HotplugState {
  state: VmState;
  /** The RAM that resize requests count from: the VM's boot RAM, or the zone's. */
  base: number;
  /** Boot RAM of the whole VM, which memory_actual_size counts on top of. */
  bootRam: number;
  region: number;
  requested: number;
  memoryActualSize: number | undefined;
  balloonSize: number;
  /** Another zone's device also plugs memory, so memory_actual_size cannot be split. */
  sharedActualSize: boolean;
}

/**
 * The virtio-mem device of a Cloud Hypervisor VM (`hotplug_method=virtio-mem`): the default
 * memory's, or that of the memory zone `zoneId` when the VM is built from zones. Resizes go through
 * vm.resize (desired_ram = boot RAM + request) or vm.resize-zone (zone size + request); the
 * plugged size is vm.info's memory_actual_size less boot RAM, which needs Cloud Hypervisor v52+.
 * Resizing to the size already requested is refused by Cloud Hypervisor: ERR_SAME_SIZE.
 */
export class CloudHypervisorHotplugMemory implements HotplugMemory {
  private versionChecked: Promise<void> | undefined;

  constructor(
    private readonly client: CloudHypervisorClient,
    private readonly zoneId?: string,
  ) {}

  async blockSize(): Promise<number> {
    return VIRTIO_MEM_BLOCK_SIZE;
  }

  async regionSize(): Promise<number> {
    return (await this.state()).region;
  }

  async requestedSize(): Promise<number> {
    return (await this.state()).requested;
  }

  async size(): Promise<number> {
    await this.checkVersion();
    const s = await this.state();
    if (s.memoryActualSize === undefined) {
      throw new Error('Cloud Hypervisor vm.info has no memory_actual_size');
    }
    if (s.balloonSize > 0 || s.sharedActualSize) {
      throw new Error(
        'Cloud Hypervisor memory_actual_size also counts ' +
          (s.balloonSize > 0 ? 'the balloon' : "other zones' virtio-mem devices") +
          ': the plugged size of one device cannot be read from it',
      );
    }
    return s.memoryActualSize - s.bootRam;
  }

  /** PUTs the new size, then polls vm.info until the plugged size reaches it. */
  async resize(bytes: number, opts: ResizeOptions & { pollMs?: number }): Promise<number> {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new HotplugMemoryError(
        'ERR_NOT_BLOCK_MULTIPLE',
        `requested size ${bytes} must be a non-negative multiple of the block size ${VIRTIO_MEM_BLOCK_SIZE}`,
        { requestedBytes: bytes },
      );
    }
    // Before anything changes: on an old version the wait below could never be trusted.
    await this.checkVersion();
    let start: number;
    try {
      const { state, base } = await this.state();
      if (state === 'Created') {
        // lib.rs vm_resize: before boot Cloud Hypervisor takes desired_ram as the new boot RAM.
        throw new HotplugMemoryError(
          'ERR_DEVICE_NOT_ACTIVE',
          'Cloud Hypervisor VM is not booted: a resize now would change its boot RAM instead',
          { requestedBytes: bytes },
        );
      }
      start = performance.now();
      if (this.zoneId === undefined) await this.client.resize({ desiredRam: base + bytes });
      else await this.client.resizeZone({ id: this.zoneId, desiredRam: base + bytes });
    } catch (err) {
      throw refusal(bytes, err);
    }
    const done = await waitForPluggedSize(() => this.size(), bytes, {
      ...opts,
      device: `Cloud Hypervisor virtio-mem${this.zoneId === undefined ? '' : ` '${this.zoneId}'`}`,
    });
    return done - start;
  }

  private checkVersion(): Promise<void> {
    this.versionChecked ??= this.client.ping().then(
      ({ version }) => {
        const major = Number(/^v?(\d+)\./.exec(version)?.[1]);
        if (!(major >= FIRST_VERSION_REPORTING_PLUGGED)) {
          throw new Error(
            `Cloud Hypervisor ${version}: before v${FIRST_VERSION_REPORTING_PLUGGED} vm.info reports ` +
              'the requested size as memory_actual_size, so the plugged size must be read in the guest',
          );
        }
      },
      (err: unknown) => {
        this.versionChecked = undefined;
        throw err;
      },
    );
    return this.versionChecked;
  }

  private async state(): Promise<HotplugState> {
    const info = await this.client.info();
    const memory = info.memory;
    if (memory?.hotplugMethod !== 'VirtioMem') {
      throw new Error(
        `Cloud Hypervisor VM hotplugs memory with ${memory?.hotplugMethod ?? 'Acpi'}, not VirtioMem`,
      );
    }
    const bootRam = memory.size + memory.zones.reduce((sum, zone) => sum + zone.size, 0);
    const common = {
      state: info.state,
      bootRam,
      memoryActualSize: info.memoryActualSize,
      balloonSize: info.balloonSize ?? 0,
    };
    if (this.zoneId === undefined) {
      if (memory.zones.length > 0) {
        throw new Error('Cloud Hypervisor VM is built from memory zones: name the zone to resize');
      }
      return {
        ...common,
        base: memory.size,
        region: memory.hotplugSize ?? 0,
        requested: memory.hotpluggedSize ?? 0,
        sharedActualSize: false,
      };
    }
    const zone = memory.zones.find((z) => z.id === this.zoneId);
    if (!zone) throw new Error(`Cloud Hypervisor VM has no memory zone '${this.zoneId}'`);
    return {
      ...common,
      base: zone.size,
      region: zone.hotplugSize ?? 0,
      requested: zone.hotpluggedSize ?? 0,
      sharedActualSize: memory.zones.some((z) => z !== zone && (z.hotplugSize ?? 0) > 0),
    };
  }
}

/** Maps a refused resize to the HotplugMemoryError naming why; other failures pass through. */
function refusal(bytes: number, err: unknown): unknown {
  if (!(err instanceof CloudHypervisorApiError)) return err;
  const [code, why] =
    err.status === 404
      ? (['ERR_DEVICE_NOT_ACTIVE', 'the VM is not created'] as const)
      : SAME_SIZE.test(err.body)
        ? (['ERR_SAME_SIZE', 'it is the size already requested'] as const)
        : ABOVE_REGION.test(err.body)
          ? (['ERR_ABOVE_REGION', 'it is larger than the region'] as const)
          : OFF_BLOCK_GRID.test(err.body)
            ? ([
                'ERR_NOT_BLOCK_MULTIPLE',
                `it is not a multiple of ${VIRTIO_MEM_BLOCK_SIZE}`,
              ] as const)
            : [undefined, undefined];
  if (code === undefined) return err;
  return new HotplugMemoryError(
    code,
    `Cloud Hypervisor refused ${bytes} bytes: ${why}: ${err.message}`,
    { requestedBytes: bytes, cause: err },
  );
}
