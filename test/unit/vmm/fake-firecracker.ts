// A fake Firecracker API: a real HTTP server on a unix socket that serves PUT /actions
// (InstanceStart) and PUT/PATCH/GET /hotplug/memory with the rules real Firecracker applies, and a
// "guest" that plugs and unplugs toward the requested size a few blocks at a time. Read at
// v1.16.1 (tag v1.14.0 agrees on every rule used here); each rule cites the file it comes from.
import {
  type FakeApiServer,
  type RecordedRequest,
  type Reply,
  startFakeApiServer,
} from './fake-api-server.js';

export type { RecordedRequest } from './fake-api-server.js';

const U32_MAX = 2 ** 32 - 1;

/** Firecracker's messages, as Display renders them (thiserror/displaydoc doc comments). */
const FAULT = {
  // rpc_interface.rs VmmActionError::OperationNotSupportedPreBoot / PostBoot
  preBoot: 'The requested operation is not supported before starting the microVM.',
  postBoot: 'The requested operation is not supported after starting the microVM.',
  // lib.rs VmmError::FindDeviceError + device_manager FindDeviceError::DeviceNotFound
  statusNoDevice: 'Internal VMM error: Failed perform action on device: Device not found',
  updateNoDevice: 'Memory hotplug update error: Failed perform action on device: Device not found',
  // rpc_interface.rs MemoryHotplugUpdate + lib.rs VmmError::VirtioMem + mem/device.rs
  notActive:
    'Memory hotplug update error: Failed to create memory hotplug device: Device is not active',
  invalidSize: (bytes: number) =>
    `Memory hotplug update error: Failed to create memory hotplug device: Size ${bytes} is invalid: it must be a multiple of block size and less than the total size`,
  // rpc_interface.rs MemoryHotplugConfig + vmm_config/memory_hotplug.rs MemoryHotplugConfigError
  config: (why: string) => `Memory hotplug config error: ${why}`,
  // api_server/parsed_request.rs RequestError::SerdeJson and InvalidPathMethod
  serde: (why: string) =>
    `An error occurred when deserializing the json body of a request: ${why}.`,
  path: (method: string, url: string) => `Invalid request method and/or path: ${method} ${url}.`,
};

interface HotplugDevice {
  totalMib: number;
  slotMib: number;
  blockMib: number;
  requestedMib: number;
  pluggedMib: number;
}

export interface FakeFirecrackerOptions {
  /** How often the guest driver sends plug/unplug requests once active; 0: only stepGuest(). */
  guestStepMs?: number;
  /** Blocks plugged or unplugged per step. */
  guestStepBlocks?: number;
}

export class FakeFirecracker {
  private booted = false;
  private driverActive = false;
  private device: HotplugDevice | undefined;
  /** MiB the guest cannot give back (in use, unmovable): unplug stops there. */
  private unpluggableMib = 0;
  private readonly guestTimer: NodeJS.Timeout | undefined;
  private readonly guestStepBlocks: number;

  private constructor(
    private readonly api: FakeApiServer,
    options: FakeFirecrackerOptions,
  ) {
    this.guestStepBlocks = options.guestStepBlocks ?? 8;
    const stepMs = options.guestStepMs ?? 2;
    if (stepMs > 0) {
      this.guestTimer = setInterval(() => this.stepGuest(), stepMs);
      this.guestTimer.unref();
    }
  }

  static async start(options: FakeFirecrackerOptions = {}): Promise<FakeFirecracker> {
    let fake: FakeFirecracker | undefined;
    const api = await startFakeApiServer('hotmem-fc-', 'firecracker.sock', (request) =>
      fake ? fake.route(request) : { status: 503 },
    );
    fake = new FakeFirecracker(api, options);
    return fake;
  }

  get socketPath(): string {
    return this.api.socketPath;
  }

  get requests(): RecordedRequest[] {
    return this.api.requests;
  }

  /**
   * The guest's virtio-mem driver probes the device and acknowledges
   * VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE (mem/device.rs activate): until then PATCH is refused.
   */
  activateGuestDriver(): void {
    if (!this.booted || !this.device) throw new Error('fake: boot with a hotplug device first');
    this.driverActive = true;
  }

  /** The guest holds this much plugged memory it cannot migrate away: unplug stalls there. */
  holdInGuest(mib: number): void {
    this.unpluggableMib = mib;
  }

  async close(): Promise<void> {
    clearInterval(this.guestTimer);
    await this.api.close();
  }

  /** One round of the guest driver: plug never beyond requested (PlugRequestIsTooBig). */
  stepGuest(): void {
    const dev = this.device;
    if (!dev || !this.driverActive || dev.pluggedMib === dev.requestedMib) return;
    const step = this.guestStepBlocks * dev.blockMib;
    if (dev.pluggedMib < dev.requestedMib) {
      dev.pluggedMib = Math.min(dev.requestedMib, dev.pluggedMib + step);
    } else {
      const floor = Math.max(dev.requestedMib, this.unpluggableMib);
      if (dev.pluggedMib > floor) dev.pluggedMib = Math.max(floor, dev.pluggedMib - step);
    }
  }

  private route(request: RecordedRequest): Reply {
    const key = `${request.method} ${request.url}`;
    if (key === 'PUT /actions') return this.putAction(request.body);
    if (key === 'PUT /hotplug/memory') return this.putHotplugMemory(request.body);
    if (key === 'PATCH /hotplug/memory') return this.patchHotplugMemory(request.body);
    if (key === 'GET /hotplug/memory') return this.getHotplugMemory();
    return fault(FAULT.path(request.method, request.url));
  }

  private putAction(body: string): Reply {
    const parsed = parseStruct(body, { action_type: { kind: 'string' } });
    if (typeof parsed === 'string') return fault(FAULT.serde(parsed));
    if (parsed.action_type !== 'InstanceStart') {
      return fault('fake: only InstanceStart is modelled');
    }
    if (this.booted) return fault(FAULT.postBoot);
    this.booted = true;
    return NO_CONTENT;
  }

  // vmm_config/memory_hotplug.rs MemoryHotplugConfig: deny_unknown_fields, u32 fields,
  // block_size_mib default 2, slot_size_mib default 128; validate() below.
  private putHotplugMemory(body: string): Reply {
    const parsed = parseStruct(body, {
      total_size_mib: { kind: 'u32' },
      block_size_mib: { kind: 'u32', default: 2 },
      slot_size_mib: { kind: 'u32', default: 128 },
    });
    if (typeof parsed === 'string') return fault(FAULT.serde(parsed));
    if (this.booted) return fault(FAULT.postBoot);
    const total = parsed.total_size_mib as number;
    const block = parsed.block_size_mib as number;
    const slot = parsed.slot_size_mib as number;
    const invalid =
      block < 2
        ? 'Block size must not be lower than 2 MiB'
        : (block & (block - 1)) !== 0
          ? 'Block size must be a power of 2'
          : slot < 128
            ? 'Slot size must not be lower than 128 MiB'
            : slot % block !== 0
              ? `Slot size must be a multiple of block size (${block} MiB)`
              : total < slot
                ? `Total size must not be lower than slot size (${slot} MiB)`
                : total % slot !== 0
                  ? `Total size must be a multiple of slot size (${slot} MiB)`
                  : undefined;
    if (invalid) return fault(FAULT.config(invalid));
    this.device = {
      totalMib: total,
      slotMib: slot,
      blockMib: block,
      requestedMib: 0,
      pluggedMib: 0,
    };
    return NO_CONTENT;
  }

  // vmm_config/memory_hotplug.rs MemoryHotplugSizeUpdate (deny_unknown_fields, u32) and
  // mem/device.rs update_requested_size: not active first, then InvalidSize for a size off the
  // block grid or above the region. The size already requested is accepted.
  private patchHotplugMemory(body: string): Reply {
    const parsed = parseStruct(body, { requested_size_mib: { kind: 'u32' } });
    if (typeof parsed === 'string') return fault(FAULT.serde(parsed));
    if (!this.booted) return fault(FAULT.preBoot);
    const dev = this.device;
    if (!dev) return fault(FAULT.updateNoDevice);
    if (!this.driverActive) return fault(FAULT.notActive);
    const requested = parsed.requested_size_mib as number;
    if (requested % dev.blockMib !== 0 || requested > dev.totalMib) {
      return fault(FAULT.invalidSize(requested * 1024 * 1024));
    }
    dev.requestedMib = requested;
    return NO_CONTENT;
  }

  // rpc_interface.rs: GetMemoryHotplugStatus is refused before boot; mem/device.rs status().
  private getHotplugMemory(): Reply {
    if (!this.booted) return fault(FAULT.preBoot);
    const dev = this.device;
    if (!dev) return fault(FAULT.statusNoDevice);
    return {
      status: 200,
      json: {
        block_size_mib: dev.blockMib,
        total_size_mib: dev.totalMib,
        slot_size_mib: dev.slotMib,
        plugged_size_mib: dev.pluggedMib,
        requested_size_mib: dev.requestedMib,
      },
    };
  }
}

const NO_CONTENT: Reply = { status: 204 };

/** Every Firecracker failure is a 400 with {"fault_message"} (api_server/parsed_request.rs). */
function fault(message: string): Reply {
  return { status: 400, json: { fault_message: message } };
}

type FieldSpec = { kind: 'u32'; default?: number } | { kind: 'string' };

/**
 * serde_json into a struct with #[serde(deny_unknown_fields)]: unknown and missing fields and
 * wrong types are refused with serde's wording (without its line/column suffix).
 */
function parseStruct(
  body: string,
  fields: Record<string, FieldSpec>,
): Record<string, number | string> | string {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return 'expected value';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return 'invalid type: expected a struct';
  }
  const names = Object.keys(fields);
  const result: Record<string, number | string> = {};
  for (const [name, field] of Object.entries(value)) {
    const spec = fields[name];
    if (!spec) {
      return `unknown field \`${name}\`, expected one of ${names.map((n) => `\`${n}\``).join(', ')}`;
    }
    if (spec.kind === 'string') {
      if (typeof field !== 'string')
        return `invalid type: ${JSON.stringify(field)}, expected a string`;
    } else if (typeof field !== 'number' || !Number.isInteger(field)) {
      return `invalid type: ${JSON.stringify(field)}, expected u32`;
    } else if (field < 0 || field > U32_MAX) {
      return `invalid value: integer \`${field}\`, expected u32`;
    }
    result[name] = field;
  }
  for (const [name, spec] of Object.entries(fields)) {
    if (result[name] !== undefined) continue;
    if (spec.kind === 'u32' && spec.default !== undefined) result[name] = spec.default;
    else return `missing field \`${name}\``;
  }
  return result;
}
