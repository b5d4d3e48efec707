// Builds the test bed's initramfs without root: static busybox, an /init, the host's Node.js
// with the shared libraries it loads, the project's built package (JS, the .node addon, its
// production dependencies) and the guest-side test programs. The archive is a plain
// (uncompressed) newc cpio: the kernel unpacks it faster than it would gunzip it.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { CpioWriter } from './cpio.js';
import { cacheDir, projectRoot } from './paths.js';

/** Where the package is laid out inside the guest. */
export const GUEST_PACKAGE = '/hotmem';
export const GUEST_MEMHOG = '/usr/bin/memhog';
/** move_pages(2) on another process's pages, reporting nodes and blocks (movepages.c, static). */
export const GUEST_MOVEPAGES = '/usr/bin/movepages';
/** The package's launcher that binds to a partition and execs (native/hotmem_exec.cc). */
export const GUEST_HOTMEM_EXEC = `${GUEST_PACKAGE}/build/Release/hotmem-exec`;
/** The no-tax benchmark's fault and fork measurements (notax.c, static). */
export const GUEST_NOTAX = '/usr/bin/notax';
/** The replay's function (scripts/testbed/guest/function.mjs), run with the guest's node. */
export const GUEST_FUNCTION = `${GUEST_PACKAGE}/scripts/testbed/guest/function.mjs`;
/** The same function in C (function.c, static): a cold start of milliseconds, not seconds. */
export const GUEST_NATIVE_FUNCTION = '/usr/bin/function';

export const INIT_SCRIPT = `#!/bin/sh
# PID 1 of the HotMem test-bed guest: mount the basics, bring up the host channel, run the
# command given after "--" on the kernel command line, then report its exit status on the
# console and power off (QEMU runs with -no-reboot, so this ends the VM).
export PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
	ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
fi
echo "HOTMEM_GUEST_BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
[ $# -gt 0 ] || set -- /bin/sh
"$@"
echo "HOTMEM_GUEST_EXIT=$?"
reboot -f
`;

export interface InitramfsOptions {
  /** Extra host files to place in the guest: guest path -> host path. */
  extraFiles?: Record<string, string>;
}

function sha(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex').slice(0, 16);
}

function which(cmd: string): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = join(dir, cmd);
    if (existsSync(p)) return realpathSync(p);
  }
  throw new Error(`initramfs: '${cmd}' not found in PATH`);
}

/** A derived host file (stripped node, static memhog) built once per input digest. */
function cached(name: string, key: string, make: (out: string) => void): string {
  const dir = join(cacheDir(), 'initramfs-parts');
  const out = join(dir, `${name}-${key}`);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    make(`${out}.tmp`);
    renameSync(`${out}.tmp`, out);
  }
  return out;
}

/** Shared libraries a dynamically linked binary loads, with the dynamic loader. */
export function sharedLibraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  if (libs.length === 0) throw new Error(`initramfs: ldd found no libraries for ${binary}`);
  return libs;
}

function nodeBinary(): string {
  const node = process.execPath;
  const st = statSync(node);
  return cached('node', sha(node, String(st.size), String(st.mtimeMs)), (out) => {
    execFileSync('strip', ['-o', out, node]);
  });
}

/** The project's uapi headers (kernel-patches/uapi): guest programs include linux/hotmem.h. */
const UAPI_HEADER = 'kernel-patches/uapi/linux/hotmem.h';

/**
 * A static binary of one of the test bed's guest programs in C, compiled against the
 * repository's uapi header (so a program follows the series' ABI; the cache key covers it).
 */
export function guestBinary(name: string): string {
  const root = projectRoot();
  const source = join(root, `scripts/testbed/guest/${name}.c`);
  const key = sha(readFileSync(source), readFileSync(join(root, UAPI_HEADER)));
  return cached(name, key, (out) => {
    execFileSync('cc', [
      '-static',
      '-O2',
      '-Wall',
      '-Wextra',
      '-Werror',
      '-pthread',
      '-isystem',
      join(root, 'kernel-patches/uapi'),
      '-o',
      out,
      source,
    ]);
  });
}

/** Directories of the package's production dependencies, relative to the project root. */
function productionDependencies(): string[] {
  const out = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], {
    cwd: projectRoot(),
    encoding: 'utf8',
  });
  return out
    .split('\n')
    .filter(Boolean)
    .map((p) => relative(projectRoot(), p))
    .filter((p) => p.startsWith('node_modules'));
}

function* walk(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      // Nested dependencies are listed on their own by npm ls.
      if (e.name !== 'node_modules') yield* walk(p);
    } else if (e.isFile()) {
      yield p;
    }
  }
}

/** Every host file of the project that goes into the guest: guest path -> host path. */
function packageFiles(): Map<string, string> {
  const root = projectRoot();
  const files = new Map<string, string>();
  const add = (rel: string) => files.set(join(GUEST_PACKAGE, rel), join(root, rel));
  add('package.json');
  add('scripts/testbed/guest/server.mjs');
  add('scripts/testbed/guest/function.mjs');
  for (const dir of ['dist', 'build/Release', ...productionDependencies()]) {
    if (!existsSync(join(root, dir))) continue;
    for (const file of walk(join(root, dir))) {
      const rel = relative(root, file);
      // Object files and build intermediates are not needed at run time.
      if (dir === 'build/Release' && rel.split('/').length > 3) continue;
      add(rel);
    }
  }
  return files;
}

/** Builds the initramfs and returns its path (under the cache, named by its content). */
export async function buildInitramfs(opts: InitramfsOptions = {}): Promise<string> {
  const busybox = which('busybox');
  const node = nodeBinary();
  const files = new Map<string, string>([
    ['/bin/busybox', busybox],
    ['/usr/bin/node', node],
    [GUEST_MEMHOG, guestBinary('memhog')],
    [GUEST_MOVEPAGES, guestBinary('movepages')],
    [GUEST_NATIVE_FUNCTION, guestBinary('function')],
    [GUEST_NOTAX, guestBinary('notax')],
    ...packageFiles(),
  ]);
  for (const lib of sharedLibraries(process.execPath)) files.set(lib, realpathSync(lib));
  for (const [guest, host] of Object.entries(opts.extraFiles ?? {})) files.set(guest, host);

  const listing = [...files].map(([g, h]) => {
    const st = statSync(h);
    return `${g} ${h} ${st.size} ${st.mtimeMs}`;
  });
  const key = sha(INIT_SCRIPT, listing.sort().join('\n'));
  const dir = join(cacheDir(), 'initramfs');
  const out = join(dir, `initramfs-${key}.cpio`);
  if (existsSync(out)) {
    const now = new Date();
    utimesSync(out, now, now);
    return out;
  }
  mkdirSync(dir, { recursive: true });

  const stream = createWriteStream(`${out}.tmp`);
  const cpio = new CpioWriter(stream);
  const addDirs = async (path: string) => {
    if (path === '/') return;
    const parent = dirname(path);
    if (parent !== '/' && !cpio.has(parent)) await addDirs(parent);
    if (!cpio.has(path)) await cpio.add({ type: 'dir', path });
  };
  for (const d of [
    '/dev',
    '/proc',
    '/sys',
    '/tmp',
    '/run',
    '/root',
    '/etc',
    '/bin',
    '/sbin',
    '/usr/bin',
    '/usr/sbin',
  ]) {
    await addDirs(d);
  }
  await cpio.add({ type: 'file', path: '/init', mode: 0o755, data: Buffer.from(INIT_SCRIPT) });
  await cpio.add({
    type: 'file',
    path: '/etc/passwd',
    data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n'),
  });
  await cpio.add({ type: 'file', path: '/etc/group', data: Buffer.from('root:x:0:\n') });
  for (const [guest, host] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    await addDirs(dirname(guest));
    const st = statSync(host);
    await cpio.add({
      type: 'hostfile',
      path: guest,
      source: host,
      size: st.size,
      mode: st.mode & 0o777,
    });
  }
  const applets = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  for (const applet of applets) {
    const path = `/${applet}`;
    if (cpio.has(path)) continue;
    await addDirs(dirname(path));
    await cpio.add({ type: 'symlink', path, target: '/bin/busybox' });
  }
  await cpio.finish();
  renameSync(`${out}.tmp`, out);
  pruneArchives(dir);
  return out;
}

/** Archives are ~100 MiB, one per content: keep the `keep` most recently used. */
export function pruneArchives(dir: string, keep = 8): void {
  const archives = readdirSync(dir)
    .filter((f) => /^initramfs-[0-9a-f]+\.cpio$/.test(f))
    .map((f) => ({ path: join(dir, f), used: statSync(join(dir, f)).mtimeMs }))
    .sort((a, b) => b.used - a.used);
  for (const { path } of archives.slice(keep)) rmSync(path, { force: true });
}
