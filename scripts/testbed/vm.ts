// Boots a guest under QEMU with a virtio-mem device, a QMP socket and a forwarded port for the
// host <-> guest channel; captures the console to a file; always tears the VM down.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, type QmpEvent, VirtioMemDevice } from '../../lib/host/vmm/qemu.js';
import { accelerator } from './accel.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export interface VmOptions {
  kernel: string;
  initrd: string;
  /** Command the guest's /init runs (after "--" on the kernel command line). */
  command: string[];
  cpus?: number;
  bootMemory?: number;
  /** The virtio-mem region: the most that can be hot-plugged. */
  hotplugRegion?: number;
  /** virtio-mem device block size. */
  hotplugBlockSize?: number;
  /**
   * Two NUMA nodes: node 0 has the boot memory and the first CPU, node 1 the other CPUs and
   * the virtio-mem device, so hot-plugged memory is the only memory it ever has.
   */
  twoNodes?: boolean;
  /** An empty virtio-blk disk of this many bytes (/dev/vda in the guest) to swap on. */
  swapDisk?: number;
  /**
   * Room for ACPI-hot-plugged DIMMs (pc-dimm, see plugDimm()) beside the virtio-mem region: the
   * other way memory reaches a guest, and the one memory_hotplug.memmap_on_memory applies to
   * (virtio-mem does not use it).
   */
  dimmRegion?: number;
  /**
   * Count instructions (QEMU `-icount shift=0`, TCG only): while a vCPU runs, the guest's
   * clocks advance one nanosecond per guest instruction, so what the guest times measures the
   * instructions it executed, whatever the host's speed; idle, they follow real time. QEMU then
   * runs the vCPUs on one host thread, in turns.
   */
  icount?: boolean;
  /** Extra kernel command line parameters. */
  append?: string[];
  /** Guest TCP ports, each forwarded to a free port on the host's 127.0.0.1. */
  guestPorts?: number[];
  /** Deadline for the console to show `readyMarker`. */
  bootTimeoutMs?: number;
  readyMarker?: string;
  log?: (line: string) => void;
}

/** pc-dimm slots of a guest with a dimmRegion. */
const DIMM_SLOTS = 4;
// ACPI _OST status codes (ACPI 6.5, 6.3.5): success, and "ejection in progress", which Linux
// reports before it tries.
const ACPI_OST_SUCCESS = 0;
const ACPI_OST_EJECT_IN_PROGRESS = 0x84;

/** The guest refused to eject a DIMM: its memory could not all go offline. */
export class DimmEjectRefused extends Error {
  override readonly name = 'DimmEjectRefused';
  constructor(
    readonly dimm: string,
    /** The guest's final _OST status (0x82: device busy). */
    readonly status: number,
  ) {
    super(`the guest refused to eject DIMM ${dimm} (_OST status 0x${status.toString(16)})`);
  }
}

export class VmError extends Error {
  override readonly name = 'VmError';
  constructor(
    message: string,
    readonly consoleLog: string,
    /** The signal that ended QEMU, if one did before the guest was up. */
    readonly qemuSignal: NodeJS.Signals | null = null,
  ) {
    super(
      `${message}\n--- guest console (last 60 lines) ---\n${consoleLog.split('\n').slice(-60).join('\n')}`,
    );
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const running = new Set<ChildProcess>();
// A test run interrupted by Ctrl-C or a crash must not leave a guest behind.
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** QEMU itself failed (not the guest, not a kill of ours): worth one more try. */
function qemuCrashed(signal: NodeJS.Signals | null): boolean {
  return signal !== null && signal !== 'SIGKILL' && signal !== 'SIGTERM';
}

/** "QEMU died of SIGSEGV" or "QEMU exited (status 1)". */
function qemuEnd(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `QEMU died of ${signal}` : `QEMU exited (status ${code})`;
}

export class Vm {
  readonly consolePath: string;
  private console = '';
  private exitStatus: number | undefined;
  private readonly exited: Promise<number | null>;
  private waiters: { marker: string | RegExp; resolve: (m: RegExpMatchArray | string) => void }[] =
    [];

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly qmp: QmpClient,
    readonly virtioMem: VirtioMemDevice,
    /** Host port (on 127.0.0.1) for each forwarded guest port. */
    readonly hostPorts: ReadonlyMap<number, number>,
    readonly accel: 'kvm' | 'tcg',
  ) {
    this.consolePath = join(dir, 'console.log');
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  /**
   * Boots a guest and waits for its ready marker. QEMU 7.2's TCG has segfaulted here early in
   * a boot, in PCI enumeration, once in some hundred boots: a boot that QEMU itself ends with
   * a signal is retried once, and said so on stderr.
   */
  static async start(opts: VmOptions): Promise<Vm> {
    try {
      return await Vm.boot(opts);
    } catch (err) {
      if (!(err instanceof VmError) || !qemuCrashed(err.qemuSignal)) throw err;
      console.error(`QEMU died of ${err.qemuSignal} while booting the guest; booting again`);
      return Vm.boot(opts);
    }
  }

  private static async boot(opts: VmOptions): Promise<Vm> {
    const cpus = opts.cpus ?? 2;
    if (opts.twoNodes && cpus < 2) throw new Error('a two-node guest needs at least 2 CPUs');
    const { accel, cpu } = accelerator();
    if (opts.icount && accel !== 'tcg')
      throw new Error(`counting instructions (-icount) needs TCG; the test bed chose ${accel}`);
    const dir = mkdtempSync(join(tmpdir(), 'hotmem-vm-'));
    const boot = opts.bootMemory ?? GiB;
    const region = opts.hotplugRegion ?? 4 * GiB;
    const numa = opts.twoNodes
      ? [
          '-object',
          `memory-backend-ram,id=ram0,size=${boot / MiB}M`,
          '-numa',
          'node,nodeid=0,cpus=0,memdev=ram0',
          '-numa',
          `node,nodeid=1,cpus=1-${cpus - 1}`,
        ]
      : [];
    const swap: string[] = [];
    if (opts.swapDisk !== undefined) {
      const image = join(dir, 'swap.img');
      writeFileSync(image, '');
      truncateSync(image, opts.swapDisk);
      swap.push(
        '-drive',
        `file=${image},if=none,id=swap0,format=raw`,
        '-device',
        'virtio-blk-pci,drive=swap0',
      );
    }
    const hostPorts = new Map<number, number>();
    for (const guestPort of opts.guestPorts ?? []) hostPorts.set(guestPort, await freePort());
    const forwards = [...hostPorts]
      .map(([guest, host]) => `,hostfwd=tcp:127.0.0.1:${host}-:${guest}`)
      .join('');
    const append = [
      'console=ttyS0',
      'panic=-1',
      'oops=panic',
      'printk.devkmsg=on',
      ...(opts.append ?? []),
      '--',
      ...opts.command,
    ];
    const args = [
      '-machine',
      'q35',
      '-accel',
      accel,
      ...(opts.icount ? ['-icount', 'shift=0,sleep=on'] : []),
      '-cpu',
      cpu,
      '-smp',
      // A CPU per socket: CPUs that share a cache across nodes make Linux warn at boot.
      opts.twoNodes ? `${cpus},sockets=${cpus}` : String(cpus),
      '-m',
      `${boot / MiB}M,maxmem=${(boot + region + (opts.dimmRegion ?? 0)) / MiB}M${opts.dimmRegion ? `,slots=${DIMM_SLOTS}` : ''}`,
      ...numa,
      '-object',
      `memory-backend-ram,id=vmem0,size=${region / MiB}M`,
      '-device',
      `virtio-mem-pci,id=vm0,memdev=vmem0,block-size=${(opts.hotplugBlockSize ?? 2 * MiB) / MiB}M,requested-size=0${opts.twoNodes ? ',node=1' : ''}`,
      ...swap,
      '-kernel',
      opts.kernel,
      '-initrd',
      opts.initrd,
      '-append',
      append.join(' '),
      '-display',
      'none',
      '-monitor',
      'none',
      '-serial',
      'stdio',
      '-no-reboot',
      '-qmp',
      `unix:${join(dir, 'qmp.sock')},server=on,wait=off`,
      ...(hostPorts.size > 0
        ? [
            '-netdev',
            `user,id=net0,restrict=on${forwards}`,
            '-device',
            'virtio-net-pci,netdev=net0',
          ]
        : ['-nic', 'none']),
    ];
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    child.on('exit', () => running.delete(child));
    let vm: Vm | undefined;
    const pending: string[] = [];
    const consoleFile = createWriteStream(join(dir, 'console.log'));
    const onOutput = (chunk: Buffer) => {
      consoleFile.write(chunk);
      if (vm) vm.onConsole(chunk.toString());
      else pending.push(chunk.toString());
    };
    child.stdout?.on('data', onOutput);
    child.stderr?.on('data', onOutput);
    const spawnError = new Promise<never>((_, reject) => child.on('error', reject));
    const earlyExit = new Promise<never>((_, reject) =>
      child.on('exit', (code, signal) =>
        reject(
          new VmError(
            `${qemuEnd(code, signal)} before its QMP socket answered`,
            pending.join(''),
            signal,
          ),
        ),
      ),
    );
    earlyExit.catch(() => undefined);
    try {
      const qmp = await Promise.race([
        QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: 30_000 }),
        spawnError,
        earlyExit,
      ]);
      vm = new Vm(child, dir, qmp, new VirtioMemDevice(qmp, 'vm0'), hostPorts, accel);
      for (const p of pending) vm.onConsole(p);
      opts.log?.(`qemu ${accel} started: console ${vm.consolePath}`);
      await vm.waitForConsole(
        opts.readyMarker ?? 'HOTMEM_GUEST_BOOTED',
        opts.bootTimeoutMs ?? 120_000,
      );
      return vm;
    } catch (err) {
      const log = vm?.console ?? pending.join('');
      if (vm) await vm.stop();
      else child.kill('SIGKILL');
      throw err instanceof VmError
        ? err
        : new VmError(`guest did not boot: ${(err as Error).message}`, log);
    }
  }

  private onConsole(text: string): void {
    this.console += text;
    const m = /HOTMEM_GUEST_EXIT=(\d+)/.exec(this.console);
    if (m) this.exitStatus = Number(m[1]);
    this.waiters = this.waiters.filter((w) => {
      const found =
        typeof w.marker === 'string'
          ? this.console.includes(w.marker) && w.marker
          : this.console.match(w.marker);
      if (found) w.resolve(found);
      return !found;
    });
  }

  /** Everything the guest printed so far. */
  get consoleLog(): string {
    return this.console;
  }

  /** The status /init reported for its command, once it has finished. */
  get guestExitStatus(): number | undefined {
    return this.exitStatus;
  }

  /** Waits until the console shows `marker`; fails when the deadline passes or QEMU exits. */
  async waitForConsole(
    marker: string | RegExp,
    timeoutMs: number,
  ): Promise<RegExpMatchArray | string> {
    let timer: NodeJS.Timeout | undefined;
    const found = new Promise<RegExpMatchArray | string>((resolve) => {
      this.waiters.push({ marker, resolve });
      this.onConsole('');
    });
    const failure = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new VmError(`console did not show ${marker} within ${timeoutMs} ms`, this.console),
          ),
        timeoutMs,
      );
      this.exited.then((code) =>
        reject(
          new VmError(
            `${qemuEnd(code, this.child.signalCode)} before the console showed ${marker}`,
            this.console,
            this.child.signalCode,
          ),
        ),
      );
    });
    try {
      return await Promise.race([found, failure]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Hot-plugs a DIMM of `bytes` (pc-dimm `id`, backed by memory-backend-ram `${id}-ram`) into the
   * guest's dimmRegion. ACPI tells the guest, which adds its memory blocks (offline, unless the
   * guest's auto-online policy says otherwise).
   */
  async plugDimm(id: string, bytes: number): Promise<void> {
    const memdev = `${id}-ram`;
    await this.qmp.execute('object-add', {
      'qom-type': 'memory-backend-ram',
      id: memdev,
      size: bytes,
    });
    try {
      await this.qmp.execute('device_add', { driver: 'pc-dimm', id, memdev });
    } catch (err) {
      await this.qmp.execute('object-del', { id: memdev }).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Asks the guest to eject DIMM `id` and waits up to timeoutMs for the answer, then drops its
   * backend. The guest takes every memory block of the DIMM offline first (ACPI _EJ0) and
   * refuses the eject when one will not go: its final _OST status (QEMU's ACPI_DEVICE_OST)
   * then rejects with DimmEjectRefused, the DIMM still plugged.
   */
  async unplugDimm(id: string, timeoutMs: number): Promise<void> {
    let onEvent: ((e: QmpEvent) => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    const answered = new Promise<void>((resolve, reject) => {
      onEvent = (e) => {
        if (e.event === 'DEVICE_DELETED' && (e.data as { device?: string }).device === id)
          resolve();
        const ost = (e.data as { info?: { device?: string; status?: number } }).info;
        if (
          e.event === 'ACPI_DEVICE_OST' &&
          ost?.device === id &&
          ost.status !== undefined &&
          ost.status !== ACPI_OST_SUCCESS &&
          ost.status !== ACPI_OST_EJECT_IN_PROGRESS
        )
          reject(new DimmEjectRefused(id, ost.status));
      };
      this.qmp.on('event', onEvent);
      timer = setTimeout(
        () =>
          reject(
            new Error(`the guest did not answer the eject of DIMM ${id} within ${timeoutMs} ms`),
          ),
        timeoutMs,
      );
    });
    try {
      await this.qmp.execute('device_del', { id });
      await answered;
    } finally {
      clearTimeout(timer);
      if (onEvent) this.qmp.off('event', onEvent);
    }
    await this.qmp.execute('object-del', { id: `${id}-ram` });
  }

  /** Kernel warnings, oopses and lockdep/KASAN reports seen on the console. */
  kernelProblems(): string[] {
    return this.console
      .split('\n')
      .filter((l) =>
        /(WARNING:|BUG:|Oops|Kernel panic|KASAN|possible circular locking|INFO: task .* blocked)/.test(
          l,
        ),
      );
  }

  /**
   * Waits for QEMU to exit by itself (the guest's command finished), up to timeoutMs; then
   * asks QMP to quit; then kills it. Always removes the VM's temporary directory.
   */
  async stop(timeoutMs = 0): Promise<void> {
    const deadline = (ms: number) =>
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());
    const alive = () => this.child.exitCode === null && this.child.signalCode === null;
    if (alive() && timeoutMs > 0) await Promise.race([this.exited, deadline(timeoutMs)]);
    if (alive()) {
      await this.qmp.execute('quit', undefined, { timeoutMs: 2000 }).catch(() => undefined);
      if ((await Promise.race([this.exited, deadline(5000)])) === 'timeout')
        this.child.kill('SIGKILL');
      await this.exited;
    }
    this.qmp.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
