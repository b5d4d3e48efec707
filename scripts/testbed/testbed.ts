// The test bed in one call: a guest kernel built by scripts/build-kernel.sh, the initramfs,
// and a booted VM whose guest server answers; plus readers of the guest's memory state.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { GuestClient } from './guest.js';
import { buildInitramfs } from './initramfs.js';
import { projectRoot } from './paths.js';
import { Vm, type VmOptions } from './vm.js';

export const GUEST_SERVER_PORT = 7070;

export interface KernelOptions {
  /** A patch series directory such as kernel-patches/v6.12. */
  patches?: string;
  /** Extra config fragments. */
  configs?: string[];
  debug?: boolean;
  source?: string;
}

function buildArgs(opts: KernelOptions): string[] {
  return [
    ...(opts.source ? ['--source', opts.source] : []),
    ...(opts.patches ? ['--patches', opts.patches] : []),
    ...(opts.configs ?? []).flatMap((c) => ['--config', c]),
    ...(opts.debug ? ['--debug'] : []),
  ];
}

/** Builds (or finds in the cache) a guest kernel and resolves with the path of its bzImage. */
export async function buildKernel(opts: KernelOptions = {}): Promise<string> {
  const args = buildArgs(opts);
  const child = spawn(join(projectRoot(), 'scripts/build-kernel.sh'), args, {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  const status = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (status !== 0)
    throw new Error(`scripts/build-kernel.sh ${args.join(' ')} failed (status ${status})`);
  const dir = stdout.trim().split('\n').at(-1);
  if (!dir) throw new Error('scripts/build-kernel.sh printed no build directory');
  return join(dir, 'arch/x86/boot/bzImage');
}

/**
 * Whether `buildKernel(opts)` would find its kernel in the cache: scripts/build-kernel.sh
 * --dry-run, which says "built: DIR" or "not built: DIR" on stderr.
 */
export function isKernelBuilt(
  opts: KernelOptions = {},
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  const r = spawnSync(
    join(projectRoot(), 'scripts/build-kernel.sh'),
    [...buildArgs(opts), '--dry-run'],
    { encoding: 'utf8', env },
  );
  if (r.status !== 0)
    throw new Error(`scripts/build-kernel.sh --dry-run failed: ${r.stderr.trim()}`);
  return /\] built: /.test(r.stderr);
}

/**
 * Why a suite that boots a kernel other than the HotMem one and its debug build (the stock
 * kernel of the baseline and the selftest comparison, the containers kernel of the OCI hook
 * suite) is skipped, if it is. HOTMEM_EXTRA_KERNELS=build (the default) builds such a kernel
 * like any other; =cached runs its suites only when it is already in the cache, so that a cold
 * CI run builds two kernels, not four, and stays within its time.
 */
export function extraKernelUnavailable(
  what: string,
  opts: KernelOptions = {},
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const policy = env.HOTMEM_EXTRA_KERNELS ?? 'build';
  if (policy === 'build') return undefined;
  if (policy !== 'cached')
    throw new Error(
      `HOTMEM_EXTRA_KERNELS must be "build" or "cached", not ${JSON.stringify(policy)}`,
    );
  return isKernelBuilt(opts, env)
    ? undefined
    : `HOTMEM_EXTRA_KERNELS=cached and the ${what} kernel is not built yet (npm test without it builds it)`;
}

/** The HotMem series the e2e suites boot; CI builds Debian's 6.12 with it. */
export const HOTMEM_SERIES = join(projectRoot(), 'kernel-patches/v6.12');

/** Whether a series directory holds patches (beyond a cover letter). */
export function hasPatches(series: string): boolean {
  return (
    existsSync(series) &&
    readdirSync(series).some((f) => /^\d{4}-.*\.patch$/.test(f) && !f.startsWith('0000-'))
  );
}

/** A kernel with a HotMem series applied, as the e2e suites name, build and boot it. */
export interface HotMemKernel {
  name: string;
  series: string;
  /** Source tree; Debian's linux-source-6.12 when absent. */
  source?: string;
  /** Merge scripts/kernel/debug.config (KASAN, lockdep, DEBUG_VM). */
  debug?: boolean;
  /** Why this kernel cannot be built here, if it cannot. */
  unavailable?: string;
}

export const HOTMEM_V6_12: HotMemKernel = { name: 'patched 6.12', series: HOTMEM_SERIES };

const DEBUG_NAME = 'debug (KASAN, lockdep, DEBUG_VM)';

/** Every kernel the partition suite runs on: 6.12 and 6.6 (given a tree), each also as a debug build. */
export function hotMemKernels(env: NodeJS.ProcessEnv = process.env): HotMemKernel[] {
  const v66source = env.HOTMEM_V6_6_SOURCE;
  const v66: HotMemKernel = {
    name: 'patched 6.6',
    series: join(projectRoot(), 'kernel-patches/v6.6'),
    source: v66source,
    unavailable: v66source
      ? undefined
      : 'HOTMEM_V6_6_SOURCE is not set to a vanilla Linux 6.6.9 tree (kernel-patches/v6.6/BASE says where one is); only Debian 6.12 sources can be installed here',
  };
  return [
    HOTMEM_V6_12,
    { ...HOTMEM_V6_12, name: `patched 6.12 ${DEBUG_NAME}`, debug: true },
    v66,
    { ...v66, name: `patched 6.6 ${DEBUG_NAME}`, debug: true },
  ].map((k) => ({
    ...k,
    unavailable: k.unavailable ?? (hasPatches(k.series) ? undefined : `no patches in ${k.series}`),
  }));
}

/** A suite title naming the kernel, and why the suite is skipped if it cannot be built here. */
export function kernelSuiteTitle(
  what: string,
  kernel: Pick<HotMemKernel, 'name' | 'unavailable'>,
): string {
  const title = `${what} on the ${kernel.name} kernel`;
  return kernel.unavailable ? `${title} (skipped: ${kernel.unavailable})` : title;
}

/** The guest kernel with a HotMem series applied (build-kernel.sh merges CONFIG_HOTMEM). */
export function buildHotMemKernel(kernel: HotMemKernel = HOTMEM_V6_12): Promise<string> {
  return buildKernel({ source: kernel.source, patches: kernel.series, debug: kernel.debug });
}

/** The build directory of a kernel built by scripts/build-kernel.sh (vmlinux, .config, objects). */
export function buildDirectory(bzImage: string): string {
  return resolve(bzImage, '../../../..');
}

/** The source tree a kernel build was made from (its build directory's `source-tree` file). */
function sourceTree(bzImage: string): string {
  return readFileSync(join(buildDirectory(bzImage), 'source-tree'), 'utf8').trim();
}

/** tools/testing/selftests of the source tree of the kernel build `bzImage` belongs to. */
export function kernelSelftests(bzImage: string): string {
  return join(sourceTree(bzImage), 'tools/testing/selftests');
}

/** How to build one kselftest program: its main source and what else it needs. */
export interface SelftestProgram {
  /** Main source under tools/testing/selftests, e.g. mm/cow.c. */
  source: string;
  /** Other sources it links, under tools/testing/selftests (mm's vm_util.c, thp_settings.c). */
  helpers?: string[];
  /** Flags beyond lib.mk's, e.g. to include a header a source forgot. */
  extraCflags?: string[];
}

/**
 * Compiles a kselftest program statically, from the source tree of the kernel build that
 * `bzImage` belongs to and against that build's uapi headers, with the flags of the selftests'
 * lib.mk and mm/Makefile; returns the binary's path (under the build directory).
 */
export function buildSelftest(bzImage: string, program: SelftestProgram): string {
  const build = buildDirectory(bzImage);
  const tree = sourceTree(bzImage);
  const selftests = kernelSelftests(bzImage);
  const out = join(build, 'selftests', program.source.replace(/\.c$/, ''));
  // mm/Makefile generates local_config.h by probing for liburing; the static build links none.
  const localConfig = join(build, 'selftests/include');
  mkdirSync(localConfig, { recursive: true });
  writeFileSync(join(localConfig, 'local_config.h'), '// No liburing support found\n');
  mkdirSync(dirname(out), { recursive: true });
  // Written aside and renamed: another suite may be booting a guest with the previous binary.
  const partial = `${out}.${process.pid}.tmp`;
  execFileSync(
    'cc',
    [
      '-static',
      '-O2',
      '-Wall',
      '-U_FORTIFY_SOURCE',
      '-D_GNU_SOURCE=',
      '-isystem',
      join(build, 'usr/include'),
      '-I',
      tree,
      '-I',
      selftests,
      '-I',
      join(selftests, dirname(program.source)),
      '-I',
      localConfig,
      ...(program.extraCflags ?? []),
      '-o',
      partial,
      ...[program.source, ...(program.helpers ?? [])].map((s) => join(selftests, s)),
      '-lrt',
      '-lpthread',
      '-lm',
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  renameSync(partial, out);
  return out;
}

/** The series' kselftest (tools/testing/selftests/mm/hotmem.c), built for `bzImage`'s kernel. */
export function buildHotMemSelftest(bzImage: string): string {
  return buildSelftest(bzImage, { source: 'mm/hotmem.c' });
}

export interface Guest {
  vm: Vm;
  guest: GuestClient;
  /** Ends the guest server, waits for the guest to power off, tears QEMU down. */
  stop(): Promise<void>;
}

/** Boots `kernel` with the guest server as /init's command and waits until it answers. */
export async function bootGuest(
  kernel: string,
  opts: Partial<Omit<VmOptions, 'kernel' | 'initrd' | 'command'>> & {
    extraFiles?: Record<string, string>;
  } = {},
): Promise<Guest> {
  const initrd = await buildInitramfs({ extraFiles: opts.extraFiles });
  const vm = await Vm.start({
    kernel,
    initrd,
    command: [
      '/usr/bin/node',
      '/hotmem/scripts/testbed/guest/server.mjs',
      String(GUEST_SERVER_PORT),
    ],
    guestPorts: [GUEST_SERVER_PORT],
    readyMarker: 'HOTMEM_GUEST_READY',
    bootTimeoutMs: 180_000,
    ...opts,
  });
  const guest = new GuestClient(vm.hostPorts.get(GUEST_SERVER_PORT) as number);
  try {
    await guest.waitReady(60_000);
  } catch (err) {
    await vm.stop();
    throw err;
  }
  return {
    vm,
    guest,
    async stop() {
      await guest.shutdown().catch(() => undefined);
      await vm.stop(30_000);
    },
  };
}

/** /proc/meminfo or /proc/vmstat as numbers (meminfo values in bytes). */
export function parseKeyValues(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\S+?):?\s+(\d+)(\s+kB)?$/.exec(line.trim());
    if (m?.[1] && m[2]) out[m[1]] = Number(m[2]) * (m[3] ? 1024 : 1);
  }
  return out;
}

export async function meminfo(guest: GuestClient): Promise<Record<string, number>> {
  return parseKeyValues(await guest.read('/proc/meminfo'));
}

export async function vmstat(guest: GuestClient): Promise<Record<string, number>> {
  return parseKeyValues(await guest.read('/proc/vmstat'));
}

/** How far a /proc/vmstat counter moved since a snapshot (pgmigrate_success: pages migrated). */
export type VmstatMoved = (counter: string) => Promise<number>;

/** Snapshots /proc/vmstat; the function returned reads it again for each question. */
export async function vmstatSnapshot(guest: GuestClient): Promise<VmstatMoved> {
  const before = await vmstat(guest);
  return async (counter) => ((await vmstat(guest))[counter] ?? 0) - (before[counter] ?? 0);
}

/**
 * Resizes the virtio-mem device to `bytes` from the host; resolves with how long the guest took
 * and the /proc/vmstat counters' movement since just before the request.
 */
export async function resizeMeasured(
  g: Guest,
  bytes: number,
  timeoutMs: number,
): Promise<{ ms: number; moved: VmstatMoved }> {
  const moved = await vmstatSnapshot(g.guest);
  const ms = await g.vm.virtioMem.resize(bytes, { timeoutMs });
  return { ms, moved };
}

/** Memory blocks by state, read straight from the guest's sysfs. */
export async function blockStates(guest: GuestClient): Promise<Record<string, string>> {
  const out = await guest.check([
    '/bin/sh',
    '-c',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a template
    'for b in /sys/devices/system/memory/memory*; do echo "${b##*/} $(cat $b/state) $(cat $b/valid_zones)"; done',
  ]);
  const states: Record<string, string> = {};
  for (const line of out.trim().split('\n')) {
    const [name, state, ...zones] = line.split(' ');
    if (name && state) states[name] = `${state} ${zones.join(' ')}`.trim();
  }
  return states;
}
