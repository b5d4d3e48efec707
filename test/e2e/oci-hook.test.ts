// Debian's crun in the guest, with `hotmem oci-hook` as its createRuntime and poststop hooks and
// the agent on its unix socket: a container with a memory limit runs a memory hog in a
// partition of its own, exits, and its partition is reclaimed with zero pages migrated while
// another container keeps running; a failing hook fails the container's start with its message.
//
// The kernel is the patched 6.12 with scripts/kernel/containers.config merged (user
// namespaces: crun reads /proc/self/uid_map), a build of its own so that the other suites'
// kernels stay as they are. The guest's root is the initramfs, where pivot_root(2) cannot work:
// crun runs with --no-pivot.
import { existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUEST_MEMHOG, GUEST_PACKAGE, sharedLibraries } from '../../scripts/testbed/initramfs.js';
import { projectRoot } from '../../scripts/testbed/paths.js';
import {
  bootGuest,
  buildKernel,
  extraKernelUnavailable,
  type Guest,
  HOTMEM_V6_12,
  hotMemKernels,
  kernelSuiteTitle,
} from '../../scripts/testbed/testbed.js';
import { GiB, MiB } from '../../scripts/testbed/vm.js';

const CRUN = '/usr/bin/crun';
const ROOTFS = '/oci/rootfs';
const CLI = `${GUEST_PACKAGE}/dist/lib/cli.js`;
const SOCKET = '/run/hotmem/agent.sock';
const HOOKS_LOG = '/run/oci-hooks.log';

const kernel = hotMemKernels().find((candidate) => candidate.name === HOTMEM_V6_12.name);
const containersKernel = {
  patches: HOTMEM_V6_12.series,
  configs: [join(projectRoot(), 'scripts/kernel/containers.config')],
};
const unavailable =
  kernel?.unavailable ??
  (existsSync(CRUN) ? undefined : `${CRUN} is not installed (scripts/setup.sh installs crun)`) ??
  extraKernelUnavailable('containers', containersKernel);

/** A bundle's config.json: only a mount namespace (the guest kernel has no other), no seccomp. */
function containerConfig(args: string[], memoryLimit: number) {
  const hook = (stage: string) => ({
    path: '/usr/bin/node',
    args: ['node', CLI, 'oci-hook', stage, '--agent', SOCKET],
    timeout: 60,
  });
  return {
    ociVersion: '1.0.2',
    process: { user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/' },
    root: { path: ROOTFS },
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }],
    annotations: {
      // crun would call setgroups(2) after reading /proc/self/setgroups; root keeps its groups.
      'run.oci.keep_original_groups': '1',
      // crun sends hooks' stderr to /dev/null unless given a file to append it to.
      'run.oci.hooks.stderr': HOOKS_LOG,
    },
    hooks: { createRuntime: [hook('createRuntime')], poststop: [hook('poststop')] },
    linux: {
      namespaces: [{ type: 'mount' }],
      // Allow-all rules only: crun may then skip its eBPF device filter (no bpf(2) here).
      resources: { memory: { limit: memoryLimit }, devices: [{ allow: true, access: 'rwm' }] },
    },
  };
}

interface Binding {
  name: string;
  pid: number;
  partition: number;
  state: string;
}

interface Partition {
  id: number;
  state: string;
  presentBytes: number;
  freeBytes: number;
}

describe.skipIf(unavailable !== undefined)(
  kernelSuiteTitle('OCI hooks with crun in the guest', {
    name: `${HOTMEM_V6_12.name} + containers.config`,
    unavailable,
  }),
  () => {
    let g: Guest;

    /** GET on the agent's unix socket, from inside the guest. */
    const agentGet = async <T>(path: string): Promise<T> => {
      const text = await g.guest.check([
        '/usr/bin/node',
        '-e',
        `require('node:http').get({ socketPath: '${SOCKET}', path: process.argv[1] }, (r) => {
           let body = ''; r.on('data', (d) => { body += d; }); r.on('end', () => process.stdout.write(body));
         }).on('error', (e) => { console.error(e.message); process.exit(1); })`,
        path,
      ]);
      return (path === '/metrics' ? text : JSON.parse(text)) as T;
    };

    /** Polls with growing pauses until check returns a value, up to timeoutMs. */
    const until = async <T>(
      what: string,
      check: () => Promise<T | undefined>,
      timeoutMs = 60_000,
    ): Promise<T> => {
      const deadline = Date.now() + timeoutMs;
      for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
        const value = await check().catch(() => undefined);
        if (value !== undefined) return value;
        if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    };

    const bindings = async () => (await agentGet<{ bindings: Binding[] }>('/v1/bindings')).bindings;
    const partition = async (id: number) =>
      (await agentGet<{ partitions: Partition[] }>('/v1/partitions')).partitions.find(
        (candidate) => candidate.id === id,
      );
    const metric = async (name: string) =>
      Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await agentGet<string>('/metrics'))?.[1]);

    const writeBundle = async (id: string, args: string[], memoryLimit: number) => {
      await g.guest.check(['mkdir', '-p', `/oci/${id}`]);
      await g.guest.write(
        `/oci/${id}/config.json`,
        JSON.stringify(containerConfig(args, memoryLimit)),
      );
    };

    /** `crun run` in the background; resolves once the container printed `ready`. */
    const runContainer = (id: string, ready: string) =>
      g.guest.spawn([CRUN, 'run', '--no-pivot', '--bundle', `/oci/${id}`, id], {
        waitFor: ready,
        timeoutMs: 120_000,
      });

    beforeAll(async () => {
      const bzImage = await buildKernel(containersKernel);
      const crunFiles: Record<string, string> = { [CRUN]: CRUN };
      for (const lib of sharedLibraries(CRUN)) crunFiles[lib] = realpathSync(lib);
      g = await bootGuest(bzImage, { hotplugRegion: 2 * GiB, extraFiles: crunFiles });
      for (const dir of ['bin', 'proc', 'dev', 'tmp']) {
        await g.guest.check(['mkdir', '-p', `${ROOTFS}/${dir}`]);
      }
      await g.guest.check(['cp', '/bin/busybox', GUEST_MEMHOG, `${ROOTFS}/bin/`]);
      await g.vm.virtioMem.resize(1 * GiB, { timeoutMs: 60_000 });
      await g.guest.spawn(['/usr/bin/node', CLI, 'agent', '--socket', SOCKET]);
      await until('agent health', () =>
        agentGet<{ binding: string }>('/v1/health').then((health) => health),
      );
    }, 3_600_000);

    afterAll(async () => {
      await g?.stop();
      if (g) expect(g.vm.kernelProblems()).toEqual([]);
    });

    it('binds a container with a memory limit, reclaims its partition on exit, keeps the other', async () => {
      await writeBundle('keeper', ['/bin/memhog', '32'], 64 * MiB);
      const keeperCrun = await runContainer('keeper', 'memhog ready');
      await writeBundle('hog', ['/bin/memhog', '200'], 256 * MiB);
      const hogCrun = await runContainer('hog', 'memhog ready');

      const [keeper, hog] = (await Promise.all(
        ['keeper', 'hog'].map(async (name) => {
          const found = (await bindings()).find((binding) => binding.name === name);
          expect(found).toMatchObject({ name, state: 'bound' });
          return found as Binding;
        }),
      )) as [Binding, Binding];
      expect(hog.partition).not.toBe(keeper.partition);
      // The hog's memory is in its partition: the bind before exec carried over to memhog.
      const hogPartition = await partition(hog.partition);
      expect(hogPartition?.state).toBe('bound');
      expect(
        (hogPartition?.presentBytes ?? 0) - (hogPartition?.freeBytes ?? 0),
      ).toBeGreaterThanOrEqual(200 * MiB);

      const reclaimsBefore = await metric('hotmem_reclaims_total');
      await g.guest.check([CRUN, 'kill', 'hog', 'KILL']);
      // crun run deletes the container after it exits, running the poststop hook, which
      // answers once the partition is reclaimed.
      const hogRun = await g.guest.wait(hogCrun, 120_000);
      expect(hogRun.stderr).not.toMatch(/error/i);
      // Every hook so far succeeded silently.
      expect(await g.guest.read(HOOKS_LOG).catch(() => '')).toBe('');
      expect((await bindings()).map((binding) => binding.name)).toEqual(['keeper']);
      expect((await partition(hog.partition))?.state).toBe('empty');
      expect(await metric('hotmem_reclaims_total')).toBe(reclaimsBefore + 1);
      expect(await metric('hotmem_pages_migrated_total')).toBe(0);

      // The other container runs on in its partition.
      expect((await partition(keeper.partition))?.state).toBe('bound');
      await g.guest.check([CRUN, 'kill', 'keeper', 'KILL']);
      await g.guest.wait(keeperCrun, 120_000);
      expect(await bindings()).toEqual([]);
      expect(await metric('hotmem_pages_migrated_total')).toBe(0);
    }, 600_000);

    it('fails the container start with the hook’s message when the hook fails', async () => {
      await writeBundle('tiny', ['/bin/busybox', 'echo', 'user code ran'], 1024 * 1024);
      const result = await g.guest.run(
        [CRUN, 'run', '--no-pivot', '--bundle', '/oci/tiny', 'tiny'],
        { timeoutMs: 120_000 },
      );
      expect(result.code).not.toBe(0);
      expect(result.stdout).not.toContain('user code ran');
      expect(result.stderr).toContain('error executing hook `/usr/bin/node` (exit code: 1)');
      expect(await g.guest.read(HOOKS_LOG)).toContain(
        'hotmem: container tiny: linux.resources.memory.limit is 1048576 bytes; a partition holds 4 MiB',
      );
      expect(await bindings()).toEqual([]);
    }, 300_000);
  },
);
