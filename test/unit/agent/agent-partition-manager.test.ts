// The agent driving the real PartitionManager, with the in-memory fake kernel of
// test/unit/fixtures standing in for sysfs and /dev/hotmem, and the stand-in launcher.
import { once } from 'node:events';
import { afterEach, expect, it } from 'vitest';
import { silentLogger } from '../../../lib/log.js';
import { PartitionManager } from '../../../lib/partition-manager.js';
import { FakeHotplugKernel } from '../fixtures/fake-hotplug-kernel.js';
import { collectEvents, type Harness, startHarness } from './harness.js';

const MiB = 2 ** 20;
let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

/** An agent over a PartitionManager and a fake kernel, as in production. */
async function startOverFakeKernel(pluggedBlocks: number) {
  const kernel = new FakeHotplugKernel(128 * MiB, { partitions: 2, bootBlocks: 8 });
  kernel.plug(pluggedBlocks);
  const manager = new PartitionManager({ blocks: kernel, device: kernel, logger: silentLogger() });
  const started = await startHarness({ partitions: manager });
  harness = started;
  return { kernel, manager, client: started.client };
}

it('populates a partition for an instance and reclaims it once the kernel releases it', async () => {
  const { kernel, manager, client } = await startOverFakeKernel(4);
  const events = await client.events();
  const { id, partition } = await client.createInstance({
    command: ['sleep', '30'],
    memoryBytes: 200 * MiB,
  });
  expect(partition).toBe(0);
  kernel.bindProcess(0); // what hotmem-exec's bind does
  expect(await client.partitions()).toContainEqual(
    expect.objectContaining({ id: 0, state: 'bound', nrBlocks: 2, instance: id }),
  );
  expect(await client.memory()).toMatchObject({
    plugged: { blocks: 4, bytes: 512 * MiB },
    spare: { blocks: 2, bytes: 256 * MiB },
    bound: { blocks: 2, bytes: 256 * MiB },
    partitions: { empty: 1, bound: 1 },
  });

  await client.json('POST', `/v1/instances/${id}/stop`, {});
  kernel.releaseProcess(0);
  const seen = await collectEvents(events, (event) => event.type === 'partition-reclaimed');
  expect(seen.at(-1)).toMatchObject({
    partition: 0,
    report: { partition: 0, blocks: 2, bytes: 256 * MiB, pagesMigrated: 0 },
  });
  expect(kernel.calls.filter((call) => call.startsWith('reclaim'))).toEqual(['reclaim 0']);
  manager.close();
});

it('reclaims unused partitions when the kernel dropped events, and reports a failed stream', async () => {
  const { kernel, manager, client } = await startOverFakeKernel(2);
  const events = await client.events();
  const { id } = await client.createInstance({ command: ['true'], memoryBytes: 8 * MiB });
  await collectEvents(
    events,
    (event) => event.type === 'instance-exited' && event.instance.id === id,
  );
  kernel.bindProcess(0);
  kernel.releaseProcess(0); // ... but as if the released event were lost:
  kernel.queue('overflow', 0, 1);
  await collectEvents(events, (event) => event.type === 'partition-reclaimed');
  expect(kernel.calls.filter((call) => call.startsWith('reclaim'))).toEqual(['reclaim 0']);

  kernel.emit('error', new Error('read /dev/hotmem: EIO'));
  expect(await client.health()).toMatchObject({ status: 'degraded' });
  manager.close();
});

// What the PartitionManager did on its own before the agent owned the reclaim policy.

it('reclaims a partition when the kernel reports it released', async () => {
  const { kernel, manager } = await startOverFakeKernel(2);
  const { partition } = await manager.acquire(2 * 128 * MiB);
  kernel.bindProcess(partition);
  const released = once(manager, 'released');
  const reclaimed = once(manager, 'reclaimed');
  kernel.releaseProcess(partition);
  expect(await released).toEqual([{ partition }]);
  expect(await reclaimed).toEqual([
    { partition, blocks: 2, bytes: 256 * MiB, durationNs: 1000n, pagesMigrated: 0 },
  ]);
  expect(kernel.partition(partition).state).toBe('empty');
  manager.close();
});

it('reports a failed reclaim after a release as reclaimFailed', async () => {
  const { kernel, manager } = await startOverFakeKernel(1);
  const { partition } = await manager.acquire(128 * MiB);
  const failed = once(manager, 'reclaimFailed');
  // A release event for a partition that is bound again by the time the reclaim runs.
  kernel.bindProcess(partition);
  kernel.queue('released', partition, 0);
  const [{ partition: which, error }] = (await failed) as [{ partition: number; error: Error }];
  expect(which).toBe(partition);
  expect(error).toMatchObject({ code: 'EBUSY' });
  manager.close();
});

it('runs one reclaim for a partition released twice in a row', async () => {
  const { kernel, manager } = await startOverFakeKernel(1);
  const { partition } = await manager.acquire(128 * MiB);
  const reports: unknown[] = [];
  manager.on('reclaimed', (report) => reports.push(report));
  kernel.queue('released', partition, 0);
  kernel.queue('released', partition, 0);
  await expect.poll(() => reports.length).toBe(1);
  await harness?.agent.shutdown();
  expect(reports).toHaveLength(1);
  expect(kernel.calls.filter((c) => c === `reclaim ${partition}`)).toHaveLength(1);
  manager.close();
});

it('at start keeps bound partitions, reclaims leftover free ones and never reuses either', async () => {
  const kernel = new FakeHotplugKernel(128 * MiB, { partitions: 4, bootBlocks: 2 });
  const before = new PartitionManager({ blocks: kernel, device: kernel });
  kernel.plug(3);
  const bound = await before.acquire(128 * MiB);
  const leftover = await before.acquire(128 * MiB);
  kernel.bindProcess(bound.partition);

  const after = new PartitionManager({ blocks: kernel, device: kernel });
  const reclaimed = once(after, 'reclaimed');
  harness = await startHarness({ partitions: after });
  expect((await reclaimed)[0]).toMatchObject({ partition: leftover.partition });
  expect(kernel.partition(bound.partition).state).toBe('bound');
  expect(kernel.partition(leftover.partition).state).toBe('empty');
  const next = await after.acquire(128 * MiB);
  expect(next.partition).not.toBe(bound.partition);
  after.close();
});

it('lists the memory blocks once per GET /v1/memory and per GET /metrics', async () => {
  const { kernel, manager, client } = await startOverFakeKernel(2);
  const list = kernel.list.bind(kernel);
  let listings = 0;
  kernel.list = () => {
    listings += 1;
    return list();
  };
  await client.memory();
  expect(listings).toBe(1);
  await client.json('GET', '/metrics');
  expect(listings).toBe(2);
  manager.close();
});
