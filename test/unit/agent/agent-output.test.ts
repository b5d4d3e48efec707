// Instance output and the agent's log: what an instance writes is kept (its tail) but not logged
// unless asked, and a writer as fast as it can be costs the agent neither log nor memory.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, expect, it } from 'vitest';
import { createLogger } from '../../../lib/log.js';
import {
  capturingLogger,
  collectEvents,
  type Harness,
  makeTempTree,
  startHarness,
} from './harness.js';

const MiB = 2 ** 20;
const LIMIT = 256 * 1024;
let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

async function runToExit(command: string[]): Promise<string> {
  const events = await (harness as Harness).client.events();
  const { id } = await (harness as Harness).client.createInstance({
    command,
    memoryBytes: 8 * MiB,
  });
  await collectEvents(events, (event) => event.type === 'instance-exited');
  await events.return(undefined);
  return id;
}

/** Prints 42-out and 42-err, which its argv (logged as the instance starts) does not contain. */
const printsMarkers = ['sh', '-c', 'echo $((6 * 7))-out; echo $((6 * 7))-err >&2'];

it('does not log instance output by default, and keeps its tail', async () => {
  const { logger, records } = capturingLogger();
  harness = await startHarness({ logger });
  const id = await runToExit(printsMarkers);
  expect(JSON.stringify(records)).not.toMatch(/42-(out|err)/);
  expect(harness.agent.getInstance(id).stdout?.toString()).toBe('42-out\n');
});

it('logs instance output line by line when asked to', async () => {
  const { logger, records } = capturingLogger();
  harness = await startHarness({ logger, logOutput: true });
  await runToExit(printsMarkers);
  expect(records).toContainEqual(expect.objectContaining({ stream: 'stdout', msg: '42-out' }));
  expect(records).toContainEqual(expect.objectContaining({ stream: 'stderr', msg: '42-err' }));
});

it('keeps the agent log small while an instance floods its output', async () => {
  const tree = await makeTempTree();
  const logFile = path.join(tree.dir, 'agent.log');
  const logger = createLogger({ destination: logFile, level: 'info' });
  harness = await startHarness({ tree, logger });
  const { id } = await harness.client.createInstance({
    command: ['timeout', '1.5', 'yes'],
    memoryBytes: 8 * MiB,
  });
  const instance = harness.agent.getInstance(id);
  await instance.exited;
  const logged = (await stat(logFile)).size;
  const text = await readFile(logFile, 'utf8');
  expect(logged, text.slice(0, 2000)).toBeLessThan(64 * 1024);
  // What was dropped is said once, as the instance ends.
  const records = text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { msg: string; stream?: string; replacements?: number });
  const dropped = records.filter((record) =>
    record.msg.startsWith('output file reached its limit'),
  );
  expect(dropped).toEqual([expect.objectContaining({ stream: 'stdout', level: 30 })]);
  expect(dropped[0]?.replacements).toBeGreaterThan(0);
  const tail = instance.stdout?.toString() ?? '';
  expect(tail.length).toBeGreaterThan(0);
  // The newest output, starting anywhere in a line, with the markers of each replacement.
  const marker =
    /^\[hotmem: stdout reached 262144 bytes; the 262144 bytes before this line were dropped from its file \(\d+ bytes of output dropped so far\)\]$/;
  for (const line of tail.split('\n')) {
    if (line !== '' && line !== 'y') expect(line).toMatch(marker);
  }
});

/** Writes 1 KiB lines to stdout as fast as it can for floodMs, then its byte count to stderr. */
function flooder(floodMs: number): string[] {
  return [
    process.execPath,
    '-e',
    `const fs = require('node:fs');
     const line = Buffer.from('x'.repeat(1023) + '\\n');
     let written = 0;
     for (const end = Date.now() + ${floodMs}; Date.now() < end; ) written += fs.writeSync(1, line);
     fs.writeSync(2, 'wrote ' + written + '\\n');
     setInterval(() => {}, 1000);`,
  ];
}

/** The largest size seen of file, looked at every millisecond until `until` settles. */
async function largestSize(file: string, until: Promise<unknown>): Promise<number> {
  let settled = false;
  void until.finally(() => {
    settled = true;
  });
  let largest = 0;
  while (!settled) {
    largest = Math.max(largest, (await stat(file).catch(() => ({ size: 0 }))).size);
    await sleep(1);
  }
  return largest;
}

/** What the file accounts for: the bytes its last marker says were dropped, plus what follows. */
function accountedBytes(text: string): number {
  const markers = [...text.matchAll(/\(([0-9]+) bytes of output dropped so far\)\]\n/g)];
  const last = markers.at(-1);
  if (!last) return Buffer.byteLength(text);
  return Number(last[1]) + Buffer.byteLength(text.slice((last.index ?? 0) + last[0].length));
}

it('keeps the output file within its limit under a writer as fast as it can be', async () => {
  harness = await startHarness();
  const { id } = await harness.client.createInstance({
    command: flooder(2_000),
    memoryBytes: 64 * MiB,
  });
  const instance = harness.agent.getInstance(id);
  const file = path.join(harness.stateDir, id, 'stdout');
  const flooded = (async () => {
    while (!instance.stderr?.toString().startsWith('wrote ')) await sleep(10);
  })();
  const largest = await largestSize(file, flooded);
  const written = Number(/wrote (\d+)/.exec(instance.stderr?.toString() ?? '')?.[1]);
  expect(largest).toBeLessThanOrEqual(LIMIT);
  // Every byte written is in the file or counted by the marker that starts it.
  await expect.poll(async () => accountedBytes(await readFile(file, 'utf8'))).toBe(written);
  const text = await readFile(file, 'utf8');
  expect(text).toMatch(
    /^\[hotmem: stdout reached 262144 bytes; the 262144 bytes before this line were dropped from its file \(\d+ bytes of output dropped so far\)\]\n/,
  );
  expect(written).toBeGreaterThan(4 * LIMIT);
});
