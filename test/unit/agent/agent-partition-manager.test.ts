// The agent driving the real PartitionManager through partitionSource(), with the in-memory fake
// kernel of test/unit/fixtures standing in for sysfs and /dev/hotmem, and the stand-in launcher.
import { afterEach, expect, it } from 'vitest';
import { partitionSource } from '../../../lib/agent/run.js';
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

it('populates a partition for an instance and reclaims it once the kernel releases it', async () => {
  const kernel = new FakeHotplugKernel(128 * MiB, { partitions: 2, bootBlocks: 8 });
  kernel.plug(4);
  const manager = new PartitionManager({
    blocks: kernel,
    device: kernel,
    logger: silentLogger(),
    autoReclaim: false,
  });
  harness = await startHarness({ partitions: partitionSource(manager) });
  const events = await harness.client.events();
  const { id, partition } = await harness.client.createInstance({
    command: ['sleep', '30'],
    memoryBytes: 200 * MiB,
  });
  expect(partition).toBe(0);
  kernel.bindProcess(0); // what hotmem-exec's bind does
  expect(await harness.client.partitions()).toContainEqual(
    expect.objectContaining({ id: 0, state: 'bound', nrBlocks: 2, instance: id }),
  );
  expect(await harness.client.memory()).toMatchObject({
    bound: { blocks: 2, bytes: 256 * MiB },
    partitions: { empty: 1, bound: 1 },
  });

  await harness.client.json('POST', `/v1/instances/${id}/stop`, {});
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
  const kernel = new FakeHotplugKernel(128 * MiB, { partitions: 2, bootBlocks: 8 });
  kernel.plug(2);
  const manager = new PartitionManager({
    blocks: kernel,
    device: kernel,
    logger: silentLogger(),
    autoReclaim: false,
  });
  harness = await startHarness({ partitions: partitionSource(manager) });
  const events = await harness.client.events();
  const { id } = await harness.client.createInstance({ command: ['true'], memoryBytes: 8 * MiB });
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
  expect(await harness.client.health()).toMatchObject({ status: 'degraded' });
  manager.close();
});
