// Which QEMU accelerator and CPU model the test bed boots guests with. /dev/kvm being there is not
// enough. A nested host's KVM can abort QEMU at the first vCPU reset with `-cpu host` ("failed to
// set MSR 0x10a", IA32_ARCH_CAPABILITIES), and, with that MSR left out, run the guest so slowly
// that a kernel prints nothing in 3 minutes (both seen on one machine here, 2026-12-06). So each
// candidate must boot a boot sector that exits QEMU through isa-debug-exit, within 3 s: TCG does
// it in about 0.1 s, a working KVM as fast. The first candidate that does is used, TCG otherwise.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Accelerator {
  accel: 'kvm' | 'tcg';
  /** The -cpu argument. */
  cpu: string;
  /** Why this one: what was tried and how it failed. */
  reason: string;
}

/** KVM CPU models, best first: the host's CPU, then the host's without arch-capabilities. */
export const KVM_CPUS = ['host', 'host,-arch-capabilities'] as const;
const TCG: Omit<Accelerator, 'reason'> = { accel: 'tcg', cpu: 'max' };

/** Boots a KVM guest with `cpu`: undefined if it ran, else why it did not. */
export type KvmProbe = (cpu: string) => string | undefined;

const PROBE_MS = 3_000;
const DEBUG_EXIT_PORT = 0xf4;
/** QEMU's exit status when the guest writes `v` to isa-debug-exit: (v << 1) | 1. */
const PROBE_VALUE = 0x10;
const PROBE_STATUS = (PROBE_VALUE << 1) | 1;

/**
 * A disk whose boot sector writes PROBE_VALUE to the isa-debug-exit port: mov al, v; out imm8,
 * al; then hlt and jmp $ in case it does not exit. A whole MiB: SeaBIOS cannot read a disk of
 * one sector.
 */
export function probeDisk(): Buffer {
  const disk = Buffer.alloc(1 << 20);
  Buffer.from([0xb0, PROBE_VALUE, 0xe6, DEBUG_EXIT_PORT, 0xf4, 0xeb, 0xfe]).copy(disk);
  disk.writeUInt16LE(0xaa55, 510);
  return disk;
}

export function probeKvm(cpu: string, qemu = 'qemu-system-x86_64'): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'hotmem-kvm-probe-'));
  try {
    const disk = join(dir, 'boot.img');
    writeFileSync(disk, probeDisk());
    const r = spawnSync(
      qemu,
      [
        ...['-machine', 'q35', '-accel', 'kvm', '-cpu', cpu],
        ...['-display', 'none', '-nodefaults', '-monitor', 'none', '-serial', 'none'],
        ...['-device', `isa-debug-exit,iobase=${DEBUG_EXIT_PORT},iosize=1`],
        ...['-drive', `file=${disk},format=raw`],
      ],
      { timeout: PROBE_MS, encoding: 'utf8' },
    );
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT')
      return `did not run a boot sector within ${PROBE_MS / 1000} s`;
    if (r.error) return `${qemu}: ${r.error.message}`;
    if (r.status === PROBE_STATUS) return undefined;
    const said = r.stderr.trim().split('\n')[0] ?? '';
    return `exited (${r.status ?? r.signal})${said ? `: ${said}` : ''}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function kvmOpenable(): string | undefined {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return undefined;
  } catch (err) {
    return `/dev/kvm: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
}

/**
 * The accelerator to boot with. HOTMEM_ACCEL=tcg forces software emulation; HOTMEM_ACCEL=kvm
 * demands KVM and throws if no CPU model works; unset, KVM if a model works, TCG otherwise.
 */
export function chooseAccelerator(
  env: NodeJS.ProcessEnv = process.env,
  probe: KvmProbe = probeKvm,
  openable: () => string | undefined = kvmOpenable,
): Accelerator {
  const wanted = env.HOTMEM_ACCEL;
  if (wanted !== undefined && wanted !== 'kvm' && wanted !== 'tcg')
    throw new Error(`HOTMEM_ACCEL must be "kvm" or "tcg", not "${wanted}"`);
  if (wanted === 'tcg') return { ...TCG, reason: 'HOTMEM_ACCEL=tcg' };
  const failures: string[] = [];
  const closed = openable();
  if (closed) failures.push(closed);
  else
    for (const cpu of KVM_CPUS) {
      const failed = probe(cpu);
      if (!failed)
        return {
          accel: 'kvm',
          cpu,
          reason: failures.length ? `KVM, ${failures.join('; ')}` : 'KVM',
        };
      failures.push(`-cpu ${cpu}: ${failed}`);
    }
  if (wanted === 'kvm')
    throw new Error(`HOTMEM_ACCEL=kvm, but KVM does not work: ${failures.join('; ')}`);
  return { ...TCG, reason: `TCG: ${failures.join('; ')}` };
}

let chosen: Accelerator | undefined;

/** chooseAccelerator(), once per process: the probe costs up to 3 s per CPU model. */
export function accelerator(): Accelerator {
  if (!chosen) {
    chosen = chooseAccelerator();
    console.error(
      `test bed: guests boot with ${chosen.accel} -cpu ${chosen.cpu} (${chosen.reason})`,
    );
  }
  return chosen;
}
