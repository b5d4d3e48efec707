// POST /v1/bindings and DELETE /v1/bindings/:name on a real agent and server, with the fake
// partition manager playing the kernel and a binder that checks the pid is a live process.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { AgentRequestError } from '../../../lib/agent/client.js';
import { FakePartitionManager, liveProcessBinder } from './fake-partition-manager.js';
import { type Harness, makeTempTree, startHarness } from './harness.js';

const MiB = 2 ** 20;
let harness: Harness | undefined;
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await harness?.close();
  harness = undefined;
});

function sleeper(): ChildProcess & { pid: number } {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  return child as ChildProcess & { pid: number };
}

async function start(options: { releaseTimeoutMs?: number } = {}) {
  const fake = new FakePartitionManager(2);
  const binder = liveProcessBinder(fake);
  harness = await startHarness({
    partitions: fake,
    bindings: { binder, releaseTimeoutMs: options.releaseTimeoutMs ?? 2_000 },
  });
  return { fake, binder, client: harness.client, harness };
}

async function rejection(promise: Promise<unknown>): Promise<AgentRequestError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof AgentRequestError)) throw new Error(`expected an agent error: ${error}`);
  return error;
}

it('binds a running process to a partition of its own and records it', async () => {
  const { fake, binder, client, harness } = await start();
  const { pid } = sleeper();
  const answer = await client.createBinding({ name: 'ctr-1', pid, memoryBytes: 200 * MiB });
  expect(answer).toMatchObject({ name: 'ctr-1', pid, partition: 0, state: 'bound' });
  expect((await fake.status()).partitions[0]).toMatchObject({ state: 'bound', nrBlocks: 2 });
  expect(binder.open.size).toBe(0);
  expect(await client.bindings()).toEqual([answer]);
  const record = path.join(harness.stateDir, 'bindings', 'ctr-1.json');
  expect(JSON.parse(await readFile(record, 'utf8'))).toMatchObject({ pid, partition: 0 });
});

it('answers the same binding when the hook runs twice, and refuses the name for another pid', async () => {
  const { fake, client } = await start();
  const first = sleeper();
  const request = { name: 'ctr-1', pid: first.pid, memoryBytes: 64 * MiB };
  const [a, b] = await Promise.all([client.createBinding(request), client.createBinding(request)]);
  expect(b).toEqual(a);
  const again = await client.json('POST', '/v1/bindings', request);
  expect(again).toEqual(a);
  expect(fake.calls.filter((call) => call.startsWith('acquire'))).toHaveLength(1);

  const other = sleeper();
  const conflict = await rejection(client.createBinding({ ...request, pid: other.pid }));
  expect(conflict).toMatchObject({ status: 409, code: 'HOTMEM_BINDING_EXISTS' });
  expect(conflict.message).toContain(`bound to pid ${first.pid}`);
});

it('refuses a pid with no process before acquiring anything', async () => {
  const { fake, client } = await start();
  const gone = spawn('true');
  await once(gone, 'exit');
  const error = await rejection(
    client.createBinding({ name: 'ctr-1', pid: gone.pid as number, memoryBytes: 64 * MiB }),
  );
  expect(error).toMatchObject({ status: 422, code: 'HOTMEM_PROCESS_NOT_FOUND' });
  expect(fake.calls.filter((call) => call.startsWith('acquire'))).toEqual([]);
  expect(await client.bindings()).toEqual([]);
});

it('validates the request: sizes, pids and names', async () => {
  const { client } = await start();
  const { pid } = sleeper();
  for (const [body, field] of [
    [{ name: 'c', pid, memoryBytes: MiB }, 'memoryBytes'],
    [{ name: 'c', pid, memoryBytes: 2 ** 41 }, 'memoryBytes'],
    [{ name: 'c', pid: 0, memoryBytes: 64 * MiB }, 'pid'],
    [{ name: 'c', pid: 1, memoryBytes: 64 * MiB }, 'pid'],
    [{ name: '../c', pid, memoryBytes: 64 * MiB }, 'name'],
    [{ name: 'c', pid, memoryBytes: 64 * MiB, spill: true }, 'Unrecognized key'],
  ] as const) {
    const error = await rejection(client.json('POST', '/v1/bindings', body));
    expect(error).toMatchObject({ status: 400, code: 'HOTMEM_INVALID_REQUEST' });
    expect(error.message).toContain(field);
  }
  const name = await rejection(client.json('DELETE', `/v1/bindings/${'x'.repeat(129)}`));
  expect(name).toMatchObject({ status: 400, code: 'HOTMEM_INVALID_REQUEST' });
});

it('releases once the kernel reported the partition released and the agent reclaimed it', async () => {
  const { fake, client, harness } = await start();
  const child = sleeper();
  await client.createBinding({ name: 'ctr-1', pid: child.pid, memoryBytes: 64 * MiB });
  const released = client.releaseBinding('ctr-1');
  // The container exits while the release waits: the kernel reports the partition released.
  child.kill('SIGKILL');
  await once(child, 'exit');
  fake.release(0);
  expect(await released).toEqual({
    name: 'ctr-1',
    pid: child.pid,
    partition: 0,
    reclaim: expect.objectContaining({ partition: 0, pagesMigrated: 0 }),
  });
  expect((await fake.status()).partitions[0]?.state).toBe('empty');
  expect(await readdir(path.join(harness.stateDir, 'bindings'))).toEqual([]);
  const again = await rejection(client.releaseBinding('ctr-1'));
  expect(again).toMatchObject({ status: 404, code: 'HOTMEM_BINDING_NOT_FOUND' });
});

it('answers 409 naming the bound processes when the partition is not released in time', async () => {
  const { fake, client } = await start({ releaseTimeoutMs: 200 });
  const { pid } = sleeper();
  await client.createBinding({ name: 'ctr-1', pid, memoryBytes: 64 * MiB });
  const busy = await rejection(client.releaseBinding('ctr-1'));
  expect(busy).toMatchObject({ status: 409, code: 'HOTMEM_BINDING_BUSY' });
  expect(busy.message).toMatch(/partition 0 of 'ctr-1' is still bound with 1 process\(es\) bound/);
  // Kept for another try, which succeeds once the kernel released it.
  fake.release(0);
  expect(await client.releaseBinding('ctr-1')).toMatchObject({ partition: 0 });
});

it('reports a release whose reclaim failed, and forgets the binding', async () => {
  const { fake, client } = await start();
  const { pid } = sleeper();
  await client.createBinding({ name: 'ctr-1', pid, memoryBytes: 64 * MiB });
  fake.reclaim = async () => {
    throw Object.assign(new Error('offline block 7: EBUSY'), { code: 'EBUSY' });
  };
  fake.release(0);
  const failed = await rejection(client.releaseBinding('ctr-1'));
  expect(failed).toMatchObject({ status: 500, code: 'HOTMEM_RECLAIM_FAILED' });
  expect(failed.message).toContain('offline block 7: EBUSY');
  expect(await client.bindings()).toEqual([]);
});

it('gives back the partition when the bind fails, and names a process bound already', async () => {
  const { fake, binder, client } = await start();
  binder.bind = async () => {
    throw Object.assign(new Error('HOTMEM_IOC_BIND: EBUSY'), { code: 'EBUSY' });
  };
  const { pid } = sleeper();
  const error = await rejection(
    client.createBinding({ name: 'ctr-1', pid, memoryBytes: 64 * MiB }),
  );
  expect(error).toMatchObject({ status: 409, code: 'HOTMEM_ALREADY_BOUND' });
  await expect.poll(() => fake.calls).toContain('reclaim 0');
  expect(binder.open.size).toBe(0);
  expect(await client.bindings()).toEqual([]);
});

it('gives back each partition that lost its memory while the bind waited, and stops after three', async () => {
  const { fake, binder, client } = await start();
  const waits: number[] = [];
  binder.bind = async (_pidfd, _partition, waitMs) => {
    waits.push(waitMs);
    // Shaped as the addon's errors are: Node's negative errno, the code and the syscall.
    throw Object.assign(new Error('HOTMEM_IOC_BIND: ETIMEDOUT'), {
      code: 'ETIMEDOUT',
      errno: -110,
      syscall: 'ioctl',
    });
  };
  const { pid } = sleeper();
  const error = await rejection(
    client.createBinding({ name: 'ctr-1', pid, memoryBytes: 64 * MiB }),
  );
  expect(waits).toEqual([2_000, 2_000, 2_000]);
  expect(error).toMatchObject({ status: 503, code: 'HOTMEM_NO_PARTITION' });
  expect(error.message).toMatch(
    /^partition \d did not take the bind of process \d+ within 2000 ms: it was reclaimed, unplugged or offlined meanwhile, as were the 2 acquired before it$/,
  );
  const reclaims = () => fake.calls.filter((call) => call.startsWith('reclaim '));
  await expect.poll(() => reclaims().length).toBe(3);
  expect(fake.calls.filter((call) => call.startsWith('acquire '))).toHaveLength(3);
  expect(binder.open.size).toBe(0);
  expect(await client.bindings()).toEqual([]);
});

it('binds to another partition when the first lost its memory before the bind took', async () => {
  const { fake, binder, client } = await start();
  const live = binder.bind;
  const tried: number[] = [];
  binder.bind = async (pidfd, partition, waitMs) => {
    tried.push(partition);
    if (tried.length === 1) {
      // virtio-mem took the populated partition's memory: the kernel's wait ran out.
      throw Object.assign(new Error('HOTMEM_IOC_BIND: ETIMEDOUT'), {
        code: 'ETIMEDOUT',
        errno: -110,
        syscall: 'ioctl',
      });
    }
    return live(pidfd, partition, waitMs);
  };
  const { pid } = sleeper();
  const binding = await client.createBinding({ name: 'ctr-1', pid, memoryBytes: 64 * MiB });
  // The first partition is given back; the second acquire may populate the same one again.
  await expect.poll(() => fake.calls).toContain('reclaim 0');
  expect(tried).toHaveLength(2);
  expect(fake.calls.filter((call) => call.startsWith('acquire '))).toHaveLength(2);
  expect(binding).toMatchObject({ name: 'ctr-1', pid, partition: tried[1], state: 'bound' });
  expect(binder.open.size).toBe(0);
  expect(await client.bindings()).toMatchObject([{ name: 'ctr-1', partition: tried[1] }]);
});

it('answers HOTMEM_UNAVAILABLE without HotMem, and 404 to a release', async () => {
  harness = await startHarness();
  const { pid } = sleeper();
  const error = await rejection(
    harness.client.createBinding({ name: 'ctr-1', pid, memoryBytes: 64 * MiB }),
  );
  expect(error).toMatchObject({ status: 503, code: 'HOTMEM_UNAVAILABLE' });
  const release = await rejection(harness.client.releaseBinding('ctr-1'));
  expect(release).toMatchObject({ status: 404, code: 'HOTMEM_BINDING_NOT_FOUND' });
});

it('adopts recorded bindings after a restart: a bound one is watched, a released one is done', async () => {
  const tree = await makeTempTree();
  const fake = new FakePartitionManager(2);
  const binder = liveProcessBinder(fake);
  const first = await startHarness({ tree, partitions: fake, bindings: { binder } });
  const still = sleeper();
  const exited = sleeper();
  await first.client.createBinding({ name: 'running', pid: still.pid, memoryBytes: 64 * MiB });
  await first.client.createBinding({ name: 'exited', pid: exited.pid, memoryBytes: 64 * MiB });
  // The agent goes away (its state stays); meanwhile one container exits unseen.
  await first.agent.shutdown();
  await first.server.close();
  first.bindings.close();
  fake.release(1);

  harness = await startHarness({ tree, partitions: fake, bindings: { binder } });
  expect(await harness.client.bindings()).toEqual([
    expect.objectContaining({ name: 'running', partition: 0, state: 'bound' }),
    expect.objectContaining({ name: 'exited', partition: 1, state: 'reclaimed' }),
  ]);
  expect(await harness.client.releaseBinding('exited')).toMatchObject({ reclaim: null });
  fake.release(0);
  expect(await harness.client.releaseBinding('running')).toMatchObject({
    partition: 0,
    reclaim: expect.objectContaining({ pagesMigrated: 0 }),
  });
});
