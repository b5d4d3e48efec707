// Which accelerator the test bed boots with: a /dev/kvm that QEMU cannot use with `-cpu host`
// (a nested host's KVM refusing IA32_ARCH_CAPABILITIES) must not fail every guest.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chooseAccelerator,
  KVM_CPUS,
  probeDisk,
  probeKvm,
} from '../../../scripts/testbed/accel.js';

const MSR_ABORT = 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69';
const noProbe = () => {
  throw new Error('probed');
};
const open = () => undefined;

describe('chooseAccelerator', () => {
  it('uses TCG when asked to, without probing KVM', () => {
    expect(chooseAccelerator({ HOTMEM_ACCEL: 'tcg' }, noProbe, open)).toEqual({
      accel: 'tcg',
      cpu: 'max',
      reason: 'HOTMEM_ACCEL=tcg',
    });
  });

  it('uses TCG, saying why, when /dev/kvm cannot be opened', () => {
    const a = chooseAccelerator({}, noProbe, () => '/dev/kvm: ENOENT');
    expect(a).toMatchObject({ accel: 'tcg', cpu: 'max' });
    expect(a.reason).toBe('TCG: /dev/kvm: ENOENT');
  });

  it('uses the host CPU when KVM takes it', () => {
    const tried: string[] = [];
    const a = chooseAccelerator({}, (cpu) => void tried.push(cpu), open);
    expect(a).toEqual({ accel: 'kvm', cpu: 'host', reason: 'KVM' });
    expect(tried).toEqual(['host']);
  });

  it('drops arch-capabilities when KVM aborts QEMU on that MSR', () => {
    const a = chooseAccelerator({}, (cpu) => (cpu === 'host' ? MSR_ABORT : undefined), open);
    expect(a.accel).toBe('kvm');
    expect(a.cpu).toBe('host,-arch-capabilities');
    expect(a.reason).toContain(`-cpu host: ${MSR_ABORT}`);
  });

  it('falls back to TCG naming every CPU model that failed', () => {
    const a = chooseAccelerator({}, (cpu) => `${cpu} failed`, open);
    expect(a).toMatchObject({ accel: 'tcg', cpu: 'max' });
    for (const cpu of KVM_CPUS) expect(a.reason).toContain(`-cpu ${cpu}: ${cpu} failed`);
  });

  it('throws when KVM is demanded and does not work', () => {
    expect(() => chooseAccelerator({ HOTMEM_ACCEL: 'kvm' }, () => 'no', open)).toThrow(
      /HOTMEM_ACCEL=kvm, but KVM does not work: -cpu host: no/,
    );
    expect(() =>
      chooseAccelerator({ HOTMEM_ACCEL: 'kvm' }, noProbe, () => '/dev/kvm: EACCES'),
    ).toThrow(/\/dev\/kvm: EACCES/);
  });

  it('rejects an HOTMEM_ACCEL it does not know', () => {
    expect(() => chooseAccelerator({ HOTMEM_ACCEL: 'hvf' }, noProbe, open)).toThrow(
      'HOTMEM_ACCEL must be "kvm" or "tcg", not "hvf"',
    );
  });
});

describe('probeKvm against a stand-in for QEMU', () => {
  let dir: string;
  const fake = (name: string, body: string) => {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hotmem-accel-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reports a QEMU that aborts, with its first line', () => {
    const qemu = fake(
      'abort',
      `echo "${MSR_ABORT}" >&2; echo "kvm.c: assertion" >&2; kill -ABRT $$`,
    );
    expect(probeKvm('host', qemu)).toBe(`exited (SIGABRT): ${MSR_ABORT}`);
  });

  it('reports a QEMU that exits with an error status', () => {
    expect(probeKvm('host', fake('fails', 'exit 1'))).toBe('exited (1)');
  });

  it('reports a QEMU that is not there', () => {
    expect(probeKvm('host', join(dir, 'missing'))).toMatch(/missing.*ENOENT/);
  });

  it('refuses a QEMU that stays up without running the boot sector, as on a stuck vCPU', () => {
    // QEMU exits 0 on the SIGTERM the timeout sends
    const qemu = fake('stuck', `trap 'exit 0' TERM; while :; do sleep 0.1; done`);
    expect(probeKvm('host', qemu)).toBe('did not run a boot sector within 3 s');
  });

  it('accepts a guest that exits through isa-debug-exit, booted with the CPU model from a boot sector', () => {
    const args = join(dir, 'args');
    const sector = join(dir, 'sector');
    // The status QEMU exits with when the guest writes 0x10 to isa-debug-exit
    const qemu = fake(
      'runs',
      `echo "$@" >"${args}"; disk=$(echo "$@" | sed 's/.*file=\\([^,]*\\),.*/\\1/'); head -c 512 "$disk" >"${sector}"; exit 33`,
    );
    expect(probeKvm('host,-arch-capabilities', qemu)).toBeUndefined();
    expect(readFileSync(args, 'utf8')).toMatch(
      /-accel kvm -cpu host,-arch-capabilities .*-device isa-debug-exit,iobase=244,iosize=1 -drive file=.*boot\.img,format=raw/,
    );
    const boot = readFileSync(sector);
    expect(boot.subarray(0, 4)).toEqual(Buffer.from([0xb0, 0x10, 0xe6, 0xf4]));
    expect(boot.readUInt16LE(510)).toBe(0xaa55);
  });
});

describe('probeDisk', () => {
  it('is a MiB with a boot sector that writes 0x10 to port 0xf4', () => {
    const disk = probeDisk();
    expect(disk.length).toBe(1 << 20);
    expect([...disk.subarray(0, 7)]).toEqual([0xb0, 0x10, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe]);
    expect(disk.readUInt16LE(510)).toBe(0xaa55);
  });
});
