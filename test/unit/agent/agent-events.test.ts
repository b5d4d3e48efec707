// The event stream with subscribers that do not keep up: the agent must not buffer for them
// without bound; it drops them, telling them why in a last record.
import http from 'node:http';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterEach, expect, it } from 'vitest';
import { FakePartitionManager } from './fake-partition-manager.js';
import { type Harness, startHarness } from './harness.js';

let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

function subscribe(socketPath: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath, path: '/v1/events' }, resolve).on('error', reject);
  });
}

/** Reads the rest of the stream; resolves when the agent ends it, or after timeoutMs. */
function readRest(
  stream: http.IncomingMessage,
  timeoutMs = 5_000,
): Promise<{ text: string; ended: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      stream.destroy();
      resolve({ text: Buffer.concat(chunks).toString('utf8'), ended: false });
    }, timeoutMs);
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', () => {});
    stream.on('end', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('utf8'), ended: true });
    });
    stream.resume();
  });
}

it('drops a subscriber that falls behind, with a last record saying why', async () => {
  const partitions = new FakePartitionManager();
  const backlog = 64 * 1024;
  harness = await startHarness({ partitions, limits: { eventBacklogBytes: backlog } });
  const slow = await subscribe(harness.socketPath);
  slow.pause();
  const keeping = await harness.client.events();
  let keptUp = 0;
  // Ends when the harness closes the server.
  void (async () => {
    for await (const _ of keeping) keptUp += 1;
  })();
  // ~4 MB of events, far more than the backlog plus what the sockets buffer.
  for (let batch = 0; batch < 100; batch += 1) {
    // The kernel's released events, as the manager passes them on.
    for (let event = 0; event < 100; event += 1) {
      partitions.emit('released', { partition: event % 4 });
    }
    await nextTurn();
  }
  const rest = await readRest(slow);
  expect(rest.ended).toBe(true);
  const lines = rest.text.trim().split('\n');
  expect(JSON.parse(lines.at(-1) as string)).toMatchObject({
    type: 'subscriber-dropped',
    reason: `fell behind by more than ${backlog} bytes`,
  });
  expect(rest.text.length).toBeLessThan(2 * 2 ** 20);
  // The subscriber that reads is not affected.
  await expect.poll(() => keptUp, { timeout: 5_000 }).toBeGreaterThanOrEqual(10_000);
});
