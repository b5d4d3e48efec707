// `hotmem oci-hook` against a real agent (fake partition manager, a binder that checks the pid
// is a live process): what a runtime's createRuntime/prestart and poststop hooks get, and what
// it gets when the agent, the kernel support, the pid or the size is missing.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import {
  type IfUnavailable,
  MEMORY_ANNOTATION,
  type OciHookStage,
  runOciHook,
} from '../../../lib/oci-hook.js';
import { FakePartitionManager, liveProcessBinder } from './fake-partition-manager.js';
import { type Harness, startHarness } from './harness.js';

const MiB = 2 ** 20;
const CLI = fileURLToPath(new URL('../../../lib/cli.ts', import.meta.url));
let harness: Harness | undefined;
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await harness?.close();
  harness = undefined;
});

async function start(options: { hotmem?: boolean } = {}) {
  const fake = new FakePartitionManager(2);
  harness = await startHarness({
    ...(options.hotmem !== false && { partitions: fake }),
    bindings: { binder: liveProcessBinder(fake), releaseTimeoutMs: 2_000 },
  });
  return { fake, harness };
}

/** A bundle directory with config.json; resolves with the state a runtime would write. */
async function bundle(
  dir: string,
  config: Record<string, unknown>,
  state: { id?: string; pid?: number; annotations?: Record<string, string> } = {},
): Promise<string> {
  const bundleDir = path.join(dir, 'bundle');
  await mkdir(bundleDir, { recursive: true });
  await writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(config));
  return JSON.stringify({
    ociVersion: '1.0.2',
    id: state.id ?? 'ctr-1',
    status: 'created',
    bundle: bundleDir,
    ...(state.pid !== undefined && { pid: state.pid }),
    ...(state.annotations && { annotations: state.annotations }),
  });
}

const limited = (limit: number) => ({ linux: { resources: { memory: { limit } } } });

function sleeper(): ChildProcess & { pid: number } {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  return child as ChildProcess & { pid: number };
}

function hook(
  stage: OciHookStage,
  state: string,
  options: { socketPath?: string; ifUnavailable?: IfUnavailable; warnings?: string[] } = {},
) {
  return runOciHook({
    stage,
    state,
    socketPath: options.socketPath ?? (harness as Harness).socketPath,
    ifUnavailable: options.ifUnavailable ?? 'fail',
    warn: (line) => options.warnings?.push(line),
  });
}

it('binds the container at createRuntime and releases it at poststop once reclaimed', async () => {
  const { fake, harness } = await start();
  const container = sleeper();
  const state = await bundle(harness.dir, limited(256 * MiB), { pid: container.pid });
  expect(await hook('createRuntime', state)).toEqual({
    action: 'bound',
    partition: 0,
    memoryBytes: 256 * MiB,
  });
  expect(await harness.client.bindings()).toEqual([
    expect.objectContaining({ name: 'ctr-1', pid: container.pid, state: 'bound' }),
  ]);
  const poststop = hook('poststop', state);
  container.kill('SIGKILL');
  fake.release(0);
  expect(await poststop).toEqual({ action: 'released', partition: 0, pagesMigrated: 0 });
  expect(await hook('poststop', state)).toEqual({ action: 'nothing-bound' });
});

it('binds once when the runtime runs it at createRuntime and prestart', async () => {
  const { fake, harness } = await start();
  const state = await bundle(harness.dir, limited(64 * MiB), { pid: sleeper().pid });
  const first = await hook('createRuntime', state);
  expect(await hook('prestart', state)).toEqual(first);
  expect(fake.calls.filter((call) => call.startsWith('acquire'))).toEqual([`acquire ${64 * MiB}`]);
});

it('sizes the partition from the annotation, the state before config.json', async () => {
  const { fake, harness } = await start();
  const state = await bundle(
    harness.dir,
    { ...limited(64 * MiB), annotations: { [MEMORY_ANNOTATION]: String(512 * MiB) } },
    { pid: sleeper().pid, annotations: { [MEMORY_ANNOTATION]: String(128 * MiB) } },
  );
  expect(await hook('createRuntime', state)).toMatchObject({ memoryBytes: 128 * MiB });
  expect(fake.calls).toContain(`acquire ${128 * MiB}`);
});

it('runs a container with no limit unbound, saying why, whatever --if-unavailable says', async () => {
  const { fake, harness } = await start();
  for (const config of [{}, limited(-1)]) {
    const warnings: string[] = [];
    const state = await bundle(harness.dir, config, { pid: sleeper().pid });
    expect(await hook('createRuntime', state, { warnings })).toMatchObject({ action: 'unbound' });
    expect(warnings).toEqual([
      `container ctr-1 runs unbound: no ${MEMORY_ANNOTATION} annotation and no linux.resources.memory.limit to size a partition from`,
    ]);
  }
  expect(fake.calls.filter((call) => call.startsWith('acquire'))).toEqual([]);
});

it('fails the container on a size no partition can have, or an annotation that is no size', async () => {
  const { fake, harness } = await start();
  const pid = sleeper().pid;
  for (const [config, message] of [
    [limited(1024), /linux.resources.memory.limit is 1024 bytes; a partition holds 4 MiB/],
    [limited(2 ** 41), /is 2199023255552 bytes; a partition holds 4 MiB .* to 1 TiB/],
    [{ annotations: { [MEMORY_ANNOTATION]: '512M' } }, /'512M' is not a number of bytes/],
  ] as const) {
    const state = await bundle(harness.dir, config, { pid });
    await expect(hook('createRuntime', state)).rejects.toMatchObject({
      exitCode: 1,
      message: expect.stringMatching(message),
    });
  }
  expect(fake.calls.filter((call) => call.startsWith('acquire'))).toEqual([]);
});

it('fails the container when its process is gone, with the agent’s reason', async () => {
  const { harness } = await start();
  const gone = spawn('true');
  await once(gone, 'exit');
  const state = await bundle(harness.dir, limited(64 * MiB), { pid: gone.pid as number });
  await expect(hook('createRuntime', state)).rejects.toMatchObject({
    exitCode: 1,
    message: `container ctr-1: bind failed: HOTMEM_PROCESS_NOT_FOUND: no process ${gone.pid}: it has exited`,
  });
  const noPid = await bundle(harness.dir, limited(64 * MiB));
  await expect(hook('prestart', noPid)).rejects.toMatchObject({
    message: expect.stringContaining('the state has no pid'),
  });
});

it('fails, or runs unbound as configured, when no agent listens or it has no HotMem', async () => {
  const { harness } = await start({ hotmem: false });
  const state = await bundle(harness.dir, limited(64 * MiB), { pid: sleeper().pid });
  const socketPath = path.join(harness.dir, 'no-agent.sock');
  await expect(hook('createRuntime', state, { socketPath })).rejects.toMatchObject({
    exitCode: 3,
    message: `container ctr-1: no HotMem agent listening on ${socketPath} (ENOENT) (--if-unavailable unbound would run it unbound)`,
  });
  const warnings: string[] = [];
  for (const stage of ['createRuntime', 'poststop'] as const) {
    expect(
      await hook(stage, state, { socketPath, ifUnavailable: 'unbound', warnings }),
    ).toMatchObject({ action: 'unbound' });
  }
  await expect(hook('createRuntime', state)).rejects.toMatchObject({
    exitCode: 3,
    message: expect.stringContaining('the agent cannot bind: this kernel has no HotMem partitions'),
  });
  expect(await hook('createRuntime', state, { ifUnavailable: 'unbound', warnings })).toMatchObject({
    action: 'unbound',
  });
  expect(warnings).toEqual([
    expect.stringMatching(/^container ctr-1 runs unbound: no HotMem agent listening on .*ENOENT/),
    expect.stringMatching(/^container ctr-1 runs unbound: no HotMem agent listening on .*ENOENT/),
    expect.stringMatching(/^container ctr-1 runs unbound: the agent cannot bind: this kernel/),
  ]);
});

it('as a process: the state on stdin, one line on stderr and the exit status the runtime acts on', async () => {
  const { harness } = await start();
  const gone = spawn('true');
  await once(gone, 'exit');
  const state = await bundle(harness.dir, limited(64 * MiB), { pid: gone.pid as number });
  const failed = await runCli(['oci-hook', 'createRuntime', '--agent', harness.socketPath], state);
  expect(failed).toEqual({
    code: 1,
    stderr: `hotmem: container ctr-1: bind failed: HOTMEM_PROCESS_NOT_FOUND: no process ${gone.pid}: it has exited\n`,
  });
  const unbound = await runCli(
    ['oci-hook', 'prestart', '--agent', '/nonexistent.sock', '--if-unavailable', 'unbound'],
    state,
  );
  expect(unbound).toEqual({
    code: 0,
    stderr: `hotmem oci-hook: container ctr-1 runs unbound: no HotMem agent listening on /nonexistent.sock (ENOENT)\n`,
  });
  const usage = await runCli(['oci-hook', 'poststart'], state);
  expect(usage).toMatchObject({ code: 2, stderr: expect.stringContaining("'poststart' is not") });
});

async function runCli(
  args: string[],
  stdin: string,
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk;
  });
  child.stdin.end(stdin);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stderr };
}
