// Instance output and the agent's log: what an instance writes is kept (its tail) but not logged
// unless asked, and a writer as fast as it can be costs the agent neither log nor memory.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
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
  const log = createLogger({ destination: logFile, level: 'info' });
  harness = await startHarness({ tree, logger: log.logger });
  const { id } = await harness.client.createInstance({
    command: ['timeout', '1.5', 'yes'],
    memoryBytes: 8 * MiB,
  });
  const instance = harness.agent.getInstance(id);
  await instance.exited;
  log.flush();
  const logged = (await stat(logFile)).size;
  const text = await readFile(logFile, 'utf8');
  expect(logged, text.slice(0, 2000)).toBeLessThan(64 * 1024);
  // What was dropped is said once as it starts, and counted when the instance ends.
  const records = text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { msg: string; stream?: string; droppedBytes?: number });
  expect(records.filter((record) => record.msg.startsWith('instance writes faster'))).toEqual([
    expect.objectContaining({ stream: 'stdout', level: 40 }),
  ]);
  const emptied = records.find((record) => record.msg === 'output file was emptied at its limit');
  expect(emptied?.droppedBytes).toBeGreaterThan(0);
  const tail = instance.stdout?.toString() ?? '';
  expect(tail.length).toBeGreaterThan(0);
  // The newest output, starting anywhere in a line, with the markers of each emptying.
  const marker =
    /^\[hotmem: stdout reached 262144 bytes; the \d+ bytes before this line were dropped from its file\]$/;
  for (const line of tail.split('\n')) {
    if (line !== '' && line !== 'y') expect(line).toMatch(marker);
  }
});
