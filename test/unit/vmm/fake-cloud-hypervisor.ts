// A fake Cloud Hypervisor API: a real HTTP server on a unix socket serving vmm.ping, vm.create,
// vm.boot, vm.info, vm.resize and vm.resize-zone with the rules real Cloud Hypervisor applies to
// virtio-mem memory, and a guest that plugs toward the requested size a few blocks at a time.
// Read at v53.0 (vmm/src/lib.rs, vm.rs, memory_manager.rs, api/http/mod.rs,
// virtio-devices/src/mem.rs); each rule cites where it comes from.
import {
  type FakeApiServer,
  type RecordedRequest,
  type Reply,
  startFakeApiServer,
} from './fake-api-server.js';

export type { RecordedRequest } from './fake-api-server.js';

const MiB = 1024 * 1024;
/** virtio-devices/src/mem.rs VIRTIO_MEM_DEFAULT_BLOCK_SIZE: every virtio-mem block is 2 MiB. */
const BLOCK = 2 * MiB;

interface Zone {
  id: string;
  size: number;
  hotplug_size?: number;
  hotplugged_size?: number;
}

interface MemoryConfig {
  size: number;
  hotplug_method: 'Acpi' | 'VirtioMem';
  hotplug_size?: number;
  hotplugged_size?: number;
  zones?: Zone[];
}

/** One virtio-mem device: the default zone's, or one per --memory-zone with hotplug_size. */
interface VirtioMem {
  region: number;
  requested: number;
  plugged: number;
}

export interface FakeCloudHypervisorOptions {
  /**
   * The version vmm.ping reports. Below v52, vm.info's memory_actual_size is boot RAM plus the
   * requested size (lib.rs vm_info at v51.2); from v52 boot RAM plus what the guest plugged.
   */
  version?: string;
  /** How often the guest driver plugs or unplugs once active; 0: only stepGuest(). */
  guestStepMs?: number;
  guestStepBlocks?: number;
}

const NO_CONTENT: Reply = { status: 204 };

/**
 * v53 answers an error with the JSON array of its error chain (api/http/mod.rs error_response);
 * the status is 404 for VmNotCreated, 400 for a body serde refused, 500 for the rest.
 */
const chain = (status: number, ...messages: string[]): Reply => ({
  status,
  json: ['Error from API', ...messages],
});

const hex = (n: number) => `0x${n.toString(16)}`;

export class FakeCloudHypervisor {
  private config: MemoryConfig | undefined;
  /** vm.create's balloon: the fake's balloon is always inflated to its configured size. */
  private balloon: { size: number } | undefined;
  private booted = false;
  private driverActive = false;
  /** Keyed by zone id; the default zone is "mem0" (memory_manager.rs DEFAULT_MEMORY_ZONE). */
  private readonly devices = new Map<string, VirtioMem>();
  private readonly guestTimer: NodeJS.Timeout | undefined;
  private readonly guestStepBlocks: number;
  private readonly version: string;

  private constructor(
    private readonly api: FakeApiServer,
    options: FakeCloudHypervisorOptions,
  ) {
    this.version = options.version ?? 'v53.0';
    this.guestStepBlocks = options.guestStepBlocks ?? 8;
    const stepMs = options.guestStepMs ?? 2;
    if (stepMs > 0) {
      this.guestTimer = setInterval(() => this.stepGuest(), stepMs);
      this.guestTimer.unref();
    }
  }

  static async start(options: FakeCloudHypervisorOptions = {}): Promise<FakeCloudHypervisor> {
    let fake: FakeCloudHypervisor | undefined;
    const api = await startFakeApiServer('hotmem-chfake-', 'api.sock', (request) =>
      fake ? fake.route(request) : { status: 503 },
    );
    fake = new FakeCloudHypervisor(api, options);
    return fake;
  }

  get socketPath(): string {
    return this.api.socketPath;
  }

  get requests(): RecordedRequest[] {
    return this.api.requests;
  }

  /** The guest's virtio-mem driver is up: from now on it acts on the requested size. */
  activateGuestDriver(): void {
    if (!this.booted) throw new Error('fake: boot the VM first');
    this.driverActive = true;
  }

  /** One round of the guest driver on every device. */
  stepGuest(): void {
    if (!this.driverActive) return;
    const step = this.guestStepBlocks * BLOCK;
    for (const dev of this.devices.values()) {
      if (dev.plugged < dev.requested) dev.plugged = Math.min(dev.requested, dev.plugged + step);
      else if (dev.plugged > dev.requested) {
        dev.plugged = Math.max(dev.requested, dev.plugged - step);
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.guestTimer);
    await this.api.close();
  }

  private route(request: RecordedRequest): Reply {
    const key = `${request.method} ${request.url}`;
    switch (key) {
      case 'GET /api/v1/vmm.ping':
        return { status: 200, json: { version: this.version, pid: process.pid, features: [] } };
      case 'PUT /api/v1/vm.create':
        return this.create(request.body);
      case 'PUT /api/v1/vm.boot':
        return this.boot();
      case 'GET /api/v1/vm.info':
        return this.info();
      case 'PUT /api/v1/vm.resize':
        return this.resize(request.body);
      case 'PUT /api/v1/vm.resize-zone':
        return this.resizeZone(request.body);
      default:
        // api/http/mod.rs HttpError::NotFound for undefined endpoints.
        return { status: 404 };
    }
  }

  // vm_config.rs MemoryConfig: hotplug_method is a plain serde enum, so JSON takes "Acpi" or
  // "VirtioMem" and refuses the CLI's "virtio-mem". lib.rs vm_create: one config only.
  private create(body: string): Reply {
    const parsed = parseJson(body) as
      | { memory?: Partial<MemoryConfig>; balloon?: { size: number } }
      | undefined;
    const memory = parsed?.memory;
    if (!memory || typeof memory.size !== 'number') {
      return chain(400, 'Error deserializing JSON: missing field `memory.size`');
    }
    const method = memory.hotplug_method ?? 'Acpi';
    if (method !== 'Acpi' && method !== 'VirtioMem') {
      return chain(
        400,
        `Error deserializing JSON: unknown variant \`${String(method)}\`, expected \`Acpi\` or \`VirtioMem\``,
      );
    }
    if (this.config) return chain(500, 'The VM could not be created', 'VM is already created');
    this.config = { ...memory, size: memory.size, hotplug_method: method };
    this.balloon = parsed.balloon;
    return NO_CONTENT;
  }

  private boot(): Reply {
    const config = this.config;
    if (!config) return chain(404, 'The VM could not be booted', 'VM is not created');
    if (this.booted) return chain(500, 'The VM could not be booted', 'VM is already booted');
    if (config.hotplug_method === 'VirtioMem') {
      const zones = config.zones ?? [{ id: 'mem0', ...config }];
      for (const zone of zones) {
        if (!zone.hotplug_size) continue;
        const requested = zone.hotplugged_size ?? 0;
        this.devices.set(zone.id, { region: zone.hotplug_size, requested, plugged: 0 });
      }
    }
    this.booted = true;
    return NO_CONTENT;
  }

  /** Boot RAM: total_size() − hotplugged_size() (lib.rs vm_info), the zones' sizes with zones. */
  private bootRam(config: MemoryConfig): number {
    return config.size + (config.zones ?? []).reduce((sum, zone) => sum + zone.size, 0);
  }

  private info(): Reply {
    const config = this.config;
    if (!config) return chain(404, 'The VM info is not available', 'VM is not created');
    const devices = [...this.devices.values()];
    const grown = this.reportsPluggedSize()
      ? devices.reduce((sum, dev) => sum + dev.plugged, 0)
      : devices.reduce((sum, dev) => sum + dev.requested, 0);
    return {
      status: 200,
      json: {
        state: this.booted ? 'Running' : 'Created',
        config: {
          memory: config,
          payload: { kernel: '/boot/vmlinux' },
          ...(this.balloon && { balloon: this.balloon }),
        },
        // lib.rs vm_info: boot RAM less the balloon, plus virtio-mem.
        memory_actual_size: this.bootRam(config) - (this.balloon?.size ?? 0) + grown,
      },
    };
  }

  /** v52 made memory_actual_size count plugged memory (lib.rs vm_info, v51.2 against v52.0). */
  private reportsPluggedSize(): boolean {
    const major = Number(/^v(\d+)/.exec(this.version)?.[1] ?? 0);
    return major >= 52;
  }

  // api/mod.rs VmResizeData has no deny_unknown_fields: a misspelt field is ignored and the
  // resize does nothing. lib.rs vm_resize: 404 without a VM; before boot it rewrites boot RAM.
  private resize(body: string): Reply {
    const data = parseJson(body) as { desired_ram?: unknown } | undefined;
    if (data === undefined) return chain(400, 'Error deserializing JSON');
    const config = this.config;
    if (!config) return chain(404, 'The VM could not be resized', 'VM is not created');
    const desired = data.desired_ram;
    if (desired === undefined) return NO_CONTENT;
    if (typeof desired !== 'number') return chain(400, 'Error deserializing JSON');
    if (!this.booted) {
      config.size = desired;
      return NO_CONTENT;
    }
    const failed = (...why: string[]) =>
      chain(500, 'The VM could not be resized', 'Memory manager error', ...why);
    // memory_manager.rs resize
    if (config.zones) {
      return failed(
        'Impossible to resize guest memory if it is backed by user defined memory regions',
      );
    }
    if (config.hotplug_method !== 'VirtioMem') {
      return failed('fake: ACPI hotplug is not modelled');
    }
    if (desired < config.size) {
      return failed(
        `Invalid resize request: desired_size = ${desired} below boot size = ${config.size}`,
      );
    }
    const refusal = this.resizeDevice('mem0', desired - config.size);
    if (refusal) return failed(...refusal);
    // vm.rs resize keeps hotplugged_size in the config for a reboot.
    if (desired > config.size) config.hotplugged_size = desired - config.size;
    else delete config.hotplugged_size;
    return NO_CONTENT;
  }

  // lib.rs vm_resize_zone and memory_manager.rs resize_zone: only with zones; before boot it
  // rewrites the zone's boot size.
  private resizeZone(body: string): Reply {
    const data = parseJson(body) as { id?: unknown; desired_ram?: unknown } | undefined;
    if (typeof data?.id !== 'string' || typeof data.desired_ram !== 'number') {
      return chain(400, 'Error deserializing JSON');
    }
    const { id, desired_ram: desired } = data;
    const config = this.config;
    if (!config) return chain(404, 'The memory zone could not be resized', 'VM is not created');
    const failed = (...why: string[]) => chain(500, 'The memory zone could not be resized', ...why);
    const zone = config.zones?.find((z) => z.id === id);
    if (!this.booted) {
      if (!zone) return failed('Failed resizing a memory zone');
      zone.size = desired;
      return NO_CONTENT;
    }
    if (!config.zones) return failed('Memory manager error', 'Resizing the memory zone failed');
    if (!zone) return failed('Failed resizing a memory zone');
    if (desired < zone.size) {
      return failed(
        'Memory manager error',
        `Invalid resize request: desired_size = ${desired} below boot size = ${zone.size}`,
      );
    }
    const refusal = this.resizeDevice(id, desired - zone.size);
    if (refusal) return failed('Memory manager error', ...refusal);
    zone.hotplugged_size = desired - zone.size;
    return NO_CONTENT;
  }

  /**
   * virtio-devices/src/mem.rs VirtioMemConfig::resize, in its order: the size already requested,
   * then above the region, then off the 2 MiB grid. The guest driver need not be up: the request
   * waits in the device's config space (Mem::resize signals only an active device).
   */
  private resizeDevice(zoneId: string, size: number): string[] | undefined {
    const dev = this.devices.get(zoneId);
    if (!dev) return ['No virtio-mem resizing handler found'];
    const why =
      size === dev.requested
        ? `new size ${hex(size)} and requested_size are identical`
        : size > dev.region
          ? `new size ${hex(size)} is bigger than region_size ${hex(dev.region)}`
          : size % BLOCK !== 0
            ? `new size ${hex(size)} is not aligned on block_size ${hex(BLOCK)}`
            : undefined;
    if (why) {
      return [
        'Failed to virtio-mem resize',
        'Resize invalid argument',
        `Failed to update virtio configuration: ResizeError(${why})`,
      ];
    }
    dev.requested = size;
    return undefined;
  }
}

function parseJson(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}
