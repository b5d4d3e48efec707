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

/** An agent over a PartitionManager (no auto-reclaim, as in production) and a fake kernel. */
async function startOverFakeKernel(pluggedBlocks: number) {
  const kernel = new FakeHotplugKernel(128 * MiB, { partitions: 2, bootBlocks: 8 });
  kernel.plug(pluggedBlocks);
  const manager = new PartitionManager({
    blocks: kernel,
    device: kernel,
    logger: silentLogger(),
    autoReclaim: false,
  });
  const started = await startHarness({ partitions: partitionSource(manager) });
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
