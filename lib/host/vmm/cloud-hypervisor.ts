/**
 * Cloud Hypervisor REST client over its API unix socket (`--api-socket`).
 *
 * Only the calls HotMem needs: ping, VM info, counters, and the two resize calls that drive the
 * virtio-mem device. Resizes are asynchronous on the VMM side (204 once the request is queued),
 * so completion must be observed in the guest; see docs and vmm-and-virtio-mem.md.
 */
import { z } from 'zod';
import { unixHttpRequest } from './unix-http.js';

const API_PREFIX = '/api/v1/';
const DEFAULT_TIMEOUT_MS = 5_000;
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
}

/** Device id -> counter name -> value, as the VMM reports them. */
export type VmCounters = Record<string, Record<string, number>>;

export interface CloudHypervisorClientOptions {
  socketPath: string;
  /** Applies to every call: connect, request and the whole response body. */
  timeoutMs?: number;
}

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
    if (!options.socketPath) throw new TypeError('socketPath: the API socket path is required');
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`timeoutMs: expected a positive integer, got ${String(timeoutMs)}`);
    }
    this.socketPath = options.socketPath;
    this.timeoutMs = timeoutMs;
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
