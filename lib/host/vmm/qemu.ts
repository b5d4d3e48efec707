// Host-side driver for QEMU over QMP (QEMU Machine Protocol, docs/interop/qmp-spec.rst):
// a typed client for the JSON stream on QEMU's -qmp socket, and helpers for the
// virtio-mem-pci device that plugs and unplugs guest memory.
import { EventEmitter, once } from 'node:events';
import { connect, type Socket } from 'node:net';
import {
  type HotplugMemory,
  HotplugMemoryError,
  type ResizeOptions,
  waitForPluggedSize,
} from './hotplug-memory.js';

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** An error reply from QEMU ({"error": {"class", "desc"}}) to a command. */
export class QmpCommandError extends Error {
  override readonly name = 'QmpCommandError';
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
  }
}

/** The socket closed, the greeting was wrong, or a reply did not come in time. */
export class QmpConnectionError extends Error {
  override readonly name = 'QmpConnectionError';
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  /** QEMU's version from the greeting. */
  version: { major: number; minor: number; micro: number } | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    super();
  }

  /**
   * Connects to a QMP unix socket, reads the greeting and negotiates capabilities.
   * Retries while the socket does not exist yet (QEMU still starting), up to timeoutMs.
   */
  static async connect(path: string, opts: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    let delay = 10;
    for (;;) {
      try {
        const socket = connect(path);
        await once(socket, 'connect');
        const client = new QmpClient(socket, timeoutMs);
        await client.handshake();
        return client;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED';
        if (!retryable || Date.now() + delay > deadline) {
          throw new QmpConnectionError(
            `cannot connect to QMP socket '${path}': ${(err as Error).message}`,
          );
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 200);
      }
    }
  }

  private async handshake(): Promise<void> {
    const greeting = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new QmpConnectionError(`no QMP greeting within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      this.onGreeting = (msg) => {
        clearTimeout(timer);
        resolve(msg);
      };
      this.socket.once('close', () => {
        clearTimeout(timer);
        reject(new QmpConnectionError('QMP socket closed before the greeting'));
      });
    });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('close', () => this.onClose());
    this.socket.on('error', () => {
      // 'close' follows and fails what is pending; nothing else to do here.
    });
    const msg = await greeting;
    const qmp = msg.QMP as { version?: { qemu?: QmpClient['version'] } } | undefined;
    if (!qmp) throw new QmpConnectionError(`not a QMP greeting: ${JSON.stringify(msg)}`);
    this.version = qmp.version?.qemu;
    await this.execute('qmp_capabilities');
  }

  private onGreeting: ((msg: Record<string, unknown>) => void) | undefined;

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl = this.buffer.indexOf('\n');
    while (nl >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
      nl = this.buffer.indexOf('\n');
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.onGreeting?.(msg);
      this.onGreeting = undefined;
      return;
    }
    if ('event' in msg) {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = String(msg.id);
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if ('error' in msg) {
      const e = msg.error as { class: string; desc: string };
      pending.reject(new QmpCommandError(pending.command, e.class, e.desc));
    } else {
      pending.resolve(msg.return);
    }
  }

  private onClose(): void {
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new QmpConnectionError(`QMP socket closed while '${p.command}' was pending`));
    }
    this.pending.clear();
    this.emit('close');
  }

  /** Runs one QMP command and resolves with its "return" value. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.closed)
      return Promise.reject(new QmpConnectionError(`QMP socket closed; cannot run '${command}'`));
    const id = String(this.nextId++);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpConnectionError(`no reply to QMP '${command}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(
        `${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`,
      );
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** virtio-mem's MEMORY_DEVICE_SIZE_CHANGE: the plugged size of a device changed. */
function sizeChangeOf(e: QmpEvent, deviceId: string): number | undefined {
  if (e.event !== 'MEMORY_DEVICE_SIZE_CHANGE') return undefined;
  const {
    id,
    size,
    'qom-path': qomPath,
  } = e.data as { id?: string; size?: number; 'qom-path'?: string };
  const matches = id === deviceId || qomPath?.endsWith(`/${deviceId}`);
  return matches ? size : undefined;
}

/**
 * QEMU's refusal of a requested size above the memory backend (hw/virtio/virtio-mem.c,
 * virtio_mem_set_requested_size, 7.2): "'requested-size' cannot exceed the memory backend size".
 * QMP gives it only the GenericError class, so the text is all there is to tell it apart.
 */
const ABOVE_BACKEND_SIZE = /cannot exceed the memory backend size/;

/**
 * Plug and unplug through one virtio-mem-pci device (`-device virtio-mem-pci,id=...`). QEMU
 * stores a requested size whether or not the guest driver is up, and accepts the size it already
 * requests, so ERR_DEVICE_NOT_ACTIVE and ERR_SAME_SIZE never come from here.
 */
export class VirtioMemDevice implements HotplugMemory {
  private readonly path: string;
  /** QEMU fixes a virtio-mem device's block size when it creates it: read it once. */
  private blockSizeRead: Promise<number> | undefined;

  constructor(
    private readonly qmp: QmpClient,
    readonly id: string,
  ) {
    this.path = `/machine/peripheral/${id}`;
  }

  private get<T>(property: string): Promise<T> {
    return this.qmp.execute<T>('qom-get', { path: this.path, property });
  }

  /** Bytes the guest has plugged. */
  size(): Promise<number> {
    return this.get<number>('size');
  }

  requestedSize(): Promise<number> {
    return this.get<number>('requested-size');
  }

  blockSize(): Promise<number> {
    this.blockSizeRead ??= this.get<number>('block-size').catch((err: unknown) => {
      this.blockSizeRead = undefined;
      throw err;
    });
    return this.blockSizeRead;
  }

  /** The device's whole region: the most that can be plugged. */
  async regionSize(): Promise<number> {
    const devices =
      await this.qmp.execute<{ type: string; data: { id?: string; 'max-size'?: number } }[]>(
        'query-memory-devices',
      );
    const dev = devices.find((d) => d.type === 'virtio-mem' && d.data.id === this.id);
    if (!dev?.data['max-size'])
      throw new Error(`no virtio-mem device '${this.id}' in query-memory-devices`);
    return dev.data['max-size'];
  }

  /** Asks the guest to plug or unplug until `bytes` are plugged; returns at once. */
  async setRequestedSize(bytes: number): Promise<void> {
    await this.checkRequestedSize(bytes);
    await this.request(bytes);
  }

  private async checkRequestedSize(bytes: number): Promise<void> {
    const block = await this.blockSize();
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % block !== 0) {
      throw new HotplugMemoryError(
        'ERR_NOT_BLOCK_MULTIPLE',
        `requested size ${bytes} must be a non-negative multiple of the block size ${block}`,
        { requestedBytes: bytes },
      );
    }
  }

  private async request(bytes: number): Promise<void> {
    try {
      await this.qmp.execute('qom-set', {
        path: this.path,
        property: 'requested-size',
        value: bytes,
      });
    } catch (err) {
      if (err instanceof QmpCommandError && ABOVE_BACKEND_SIZE.test(err.desc)) {
        throw new HotplugMemoryError(
          'ERR_ABOVE_REGION',
          `virtio-mem '${this.id}': requested size ${bytes} is larger than the region: ${err.desc}`,
          { requestedBytes: bytes, cause: err },
        );
      }
      throw err;
    }
  }

  /**
   * Waits until the plugged size equals `bytes`. Size-change events wake it early, but QEMU
   * holds back any that comes within a second of the previous one, so the size is read too,
   * every tenth of the time waited so far (at least 1 ms apart, at most `pollMs`): a resize is
   * timed to about a tenth, or a millisecond, and a long one costs QEMU a read per `pollMs`.
   * Resolves with the moment (performance.now()) the size was first seen at the target; an
   * aborted `signal` ends the wait with its reason.
   */
  waitForSize(bytes: number, opts: ResizeOptions & { pollMs?: number }): Promise<number> {
    return waitForPluggedSize(() => this.size(), bytes, {
      ...opts,
      device: `virtio-mem '${this.id}'`,
      sizeEvents: (listener) => {
        const onEvent = (e: QmpEvent) => {
          const size = sizeChangeOf(e, this.id);
          if (size !== undefined) listener(size);
        };
        this.qmp.on('event', onEvent);
        return () => this.qmp.off('event', onEvent);
      },
    });
  }

  /**
   * Requests `bytes` and waits for the guest to get there; returns the milliseconds from the
   * request to the size seen.
   */
  async resize(bytes: number, opts: ResizeOptions & { pollMs?: number }): Promise<number> {
    await this.checkRequestedSize(bytes);
    const start = performance.now();
    await this.request(bytes);
    const done = await this.waitForSize(bytes, opts);
    return done - start;
  }
}
