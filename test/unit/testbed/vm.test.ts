// Vm.start against a stand-in for qemu-system-x86_64 that dies at once: a QEMU crash gets one
// more boot, a QEMU that merely fails does not, and the error says which happened.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MiB, Vm, VmError } from '../../../scripts/testbed/vm.js';

describe('Vm.start when QEMU does not come up', () => {
  let dir: string;
  let path: string | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hotmem-fake-qemu-'));
    path = process.env.PATH;
    process.env.PATH = `${dir}:${path}`;
    // No KVM probe: it would run the stand-in too
    process.env.HOTMEM_ACCEL = 'tcg';
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
  });

  afterEach(() => {
    process.env.PATH = path;
    delete process.env.HOTMEM_ACCEL;
    vi.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A qemu-system-x86_64 that counts its runs in `runs`, then does `then`. */
  const fakeQemu = (then: string) => {
    const script = join(dir, 'qemu-system-x86_64');
    writeFileSync(script, `#!/bin/sh\necho run >>"${join(dir, 'runs')}"\n${then}\n`);
    chmodSync(script, 0o755);
  };
  const runs = () => readFileSync(join(dir, 'runs'), 'utf8').split('\n').filter(Boolean).length;
  /** A qemu-system-x86_64 that appends its arguments to `args`, each run ending with "--". */
  const recordingQemu = () =>
    fakeQemu(
      `printf '%s\\n' "$@" >>"${join(dir, 'args')}"; echo -- >>"${join(dir, 'args')}"; exit 1`,
    );
  /** The arguments of each run of recordingQemu(), in order. */
  const recordedRuns = () =>
    readFileSync(join(dir, 'args'), 'utf8')
      .split('--\n')
      .filter(Boolean)
      .map((run) => run.split('\n').filter(Boolean));
  const start = () => Vm.start({ kernel: 'bzImage', initrd: 'initrd', command: ['true'] });

  it('boots once more after QEMU dies of a signal, then gives up naming it', async () => {
    fakeQemu('echo "pci 0000:00:01.0: probing"; kill -SEGV $$');
    const err = await start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmError);
    expect((err as VmError).qemuSignal).toBe('SIGSEGV');
    expect((err as VmError).message).toMatch(/QEMU died of SIGSEGV before its QMP socket/);
    expect((err as VmError).consoleLog).toContain('probing');
    expect(runs()).toBe(2);
    expect(console.error).toHaveBeenCalledWith(expect.stringMatching(/SIGSEGV.*booting again/));
  });

  it('does not boot again when QEMU exits with a status', async () => {
    fakeQemu('echo "qemu-system-x86_64: -device virtio-mem-pci: bad option" >&2; exit 1');
    const err = await start().catch((e: unknown) => e);
    expect((err as VmError).message).toMatch(/QEMU exited \(status 1\) before its QMP socket/);
    expect((err as VmError).consoleLog).toContain('bad option');
    expect(runs()).toBe(1);
  });

  it('puts the boot memory on node 0, the virtio-mem device on node 1 and each CPU in a socket of its own', async () => {
    fakeQemu(`printf '%s\\n' "$@" >"${join(dir, 'args')}"; exit 1`);
    const err = await Vm.start({
      kernel: 'bzImage',
      initrd: 'initrd',
      command: ['true'],
      cpus: 4,
      bootMemory: 512 * 1024 * 1024,
      twoNodes: true,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmError);
    const args = readFileSync(join(dir, 'args'), 'utf8').split('\n');
    expect(args).toEqual(
      expect.arrayContaining([
        'memory-backend-ram,id=ram0,size=512M',
        'node,nodeid=0,cpus=0,memdev=ram0',
        'node,nodeid=1,cpus=1-3',
        '4,sockets=4',
      ]),
    );
    expect(args.find((a) => a.startsWith('virtio-mem-pci,'))).toMatch(/,node=1$/);
  });

  it('gives a swap disk as an empty, sparse virtio-blk drive', async () => {
    fakeQemu(
      `printf '%s\\n' "$@" >"${join(dir, 'args')}"; ` +
        `img=$(printf '%s\\n' "$@" | sed -n 's/^file=\\([^,]*\\),.*/\\1/p'); ` +
        `stat -c '%s %b' "$img" >"${join(dir, 'image')}"; exit 1`,
    );
    await Vm.start({
      kernel: 'bzImage',
      initrd: 'initrd',
      command: ['true'],
      swapDisk: 64 * 1024 * 1024,
    }).catch(() => undefined);
    const args = readFileSync(join(dir, 'args'), 'utf8').split('\n');
    const drive = args.find((a) => a.startsWith('file='));
    expect(drive).toMatch(/^file=\/.*\/swap\.img,if=none,id=swap0,format=raw$/);
    expect(args).toContain('virtio-blk-pci,drive=swap0');
    const [size, blocks] = readFileSync(join(dir, 'image'), 'utf8').trim().split(' ');
    expect(Number(size)).toBe(64 * 1024 * 1024);
    expect(Number(blocks)).toBe(0);
  });

  it('makes room and slots for DIMMs beside the virtio-mem region only when asked', async () => {
    recordingQemu();
    const opts = { kernel: 'bzImage', initrd: 'initrd', command: ['true'], bootMemory: 1024 * MiB };
    await Vm.start({ ...opts, hotplugRegion: 2048 * MiB }).catch(() => undefined);
    await Vm.start({ ...opts, hotplugRegion: 2048 * MiB, dimmRegion: 512 * MiB }).catch(
      () => undefined,
    );
    const memory = recordedRuns()
      .flat()
      .filter((a) => a.startsWith('1024M,'));
    expect(memory).toEqual(['1024M,maxmem=3072M', '1024M,maxmem=3584M,slots=4']);
  });

  it('counts instructions only when asked', async () => {
    recordingQemu();
    const opts = { kernel: 'bzImage', initrd: 'initrd', command: ['true'] };
    await Vm.start(opts).catch(() => undefined);
    await Vm.start({ ...opts, icount: true }).catch(() => undefined);
    const [plain = [], counted = []] = recordedRuns();
    expect(plain).not.toContain('-icount');
    expect(counted.slice(counted.indexOf('-accel'), counted.indexOf('-accel') + 4)).toEqual([
      '-accel',
      'tcg',
      '-icount',
      'shift=0,sleep=on',
    ]);
  });

  it('refuses a two-node guest with one CPU before starting QEMU', async () => {
    fakeQemu('exit 1');
    await expect(
      Vm.start({ kernel: 'bzImage', initrd: 'initrd', command: ['true'], cpus: 1, twoNodes: true }),
    ).rejects.toThrow(/two-node guest needs at least 2 CPUs/);
    expect(() => runs()).toThrow();
  });
});
