// kill -9 of a real `hotmem agent` process and a restart on the same cgroup tree and state
// directory: the new agent adopts what survived, with its output, and reports what did not.
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, expect, it } from 'vitest';
import { AgentClient } from '../../../lib/agent/client.js';
import { CgroupTree } from '../../../lib/cgroup.js';
import { type InstanceSummary, pidExists } from '../../../lib/instance/instance.js';
import { startCliAgent } from './cli-process.js';
import { makeTempTree, startHarness } from './harness.js';

/** Size at which an instance's output file is rotated (docs/agent-api.md). */
const LIMIT = 256 * 1024;
const agents: ChildProcess[] = [];
const pids: number[] = [];
let dir: string | undefined;

afterEach(async () => {
  for (const agent of agents.splice(0)) agent.kill('SIGKILL');
  for (const pid of pids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function instances(client: AgentClient): Promise<InstanceSummary[]> {
  return ((await client.json('GET', '/v1/instances')) as { instances: InstanceSummary[] })
    .instances;
}

/** The tick numbers in an instance's kept stdout. */
async function ticks(client: AgentClient, id: string): Promise<number[]> {
  const detail = (await client.json('GET', `/v1/instances/${id}`)) as {
    output: { stdout: string | null };
  };
  return [...(detail.output.stdout ?? '').matchAll(/tick (\d+)/g)].map((match) => Number(match[1]));
}

it('adopts surviving instances after kill -9 and marks the dead ones exited', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-restart-'));
  const first = await startCliAgent(dir);
  agents.push(first.agent);
  const client = new AgentClient({ socketPath: first.socketPath });
  // Writes on through the kill: with its output in a pipe to the agent it would die of SIGPIPE.
  const survivor = await client.createInstance({
    command: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done'],
    memoryBytes: 8 * 2 ** 20,
  });
  const victim = await client.createInstance({
    command: ['sleep', '60'],
    memoryBytes: 8 * 2 ** 20,
  });
  pids.push(survivor.pid, victim.pid);
  await expect.poll(async () => (await ticks(client, survivor.id)).length).toBeGreaterThan(0);

  first.agent.kill('SIGKILL');
  await new Promise((resolve) => first.agent.once('exit', resolve));
  process.kill(victim.pid, 'SIGKILL'); // dies while no agent is watching
  await new Promise((resolve) => setTimeout(resolve, 300)); // the survivor writes meanwhile

  const second = await startCliAgent(dir);
  agents.push(second.agent);
  const adopted = new AgentClient({ socketPath: second.socketPath });
  const byId = async () =>
    new Map((await instances(adopted)).map((instance) => [instance.id, instance]));
  let listed = await byId();
  expect(listed.get(survivor.id)).toMatchObject({
    pid: survivor.pid,
    state: 'running',
    adopted: true,
    command: ['sh', '-c', expect.stringContaining('tick')],
    memoryBytes: 8 * 2 ** 20,
  });
  await expect.poll(async () => (await byId()).get(victim.id)?.exit?.reason).toBe('lost');
  // Every line from the first on, none lost across the restart, and new ones still coming.
  const atRestart = await ticks(adopted, survivor.id);
  expect(atRestart).toEqual(Array.from({ length: atRestart.length }, (_, index) => index + 1));
  await expect
    .poll(async () => (await ticks(adopted, survivor.id)).length, { timeout: 5_000 })
    .toBeGreaterThan(atRestart.length + 3);
  expect(pidExists(survivor.pid)).toBe(true);

  process.kill(survivor.pid, 'SIGKILL');
  await expect
    .poll(async () => (await byId()).get(survivor.id)?.state, { timeout: 5_000 })
    .toBe('exited');
  listed = await byId();
  expect(listed.get(survivor.id)?.exit).toMatchObject({ code: null, reason: 'lost' });
  expect(await new CgroupTree(second.cgroupRoot).list()).toEqual([]);
  expect(await readdir(second.stateDir)).toEqual([]);
});

it('removes state left by instances that are gone as it starts', async () => {
  const tree = await makeTempTree();
  dir = tree.dir;
  const gone = 'i-0123456789ab';
  await mkdir(path.join(tree.stateDir, gone), { recursive: true });
  await writeFile(path.join(tree.stateDir, gone, 'stdout'), 'output nobody will read\n');
  await writeFile(path.join(tree.stateDir, `${gone}.json`), '{}\n');
  await writeFile(path.join(tree.stateDir, 'README'), 'not an instance: left alone\n');
  const harness = await startHarness({ tree });
  expect(await readdir(tree.stateDir)).toEqual(['README']);
  await harness.close();
});

it('keeps a flooding instance alive and its output file within its limit across kill -9', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-restart-'));
  const first = await startCliAgent(dir);
  agents.push(first.agent);
  const client = new AgentClient({ socketPath: first.socketPath });
  const flooder = await client.createInstance({
    command: ['yes'],
    memoryBytes: 64 * 2 ** 20,
  });
  pids.push(flooder.pid);
  const file = path.join(first.stateDir, flooder.id, 'stdout');
  let largest = 0;
  const sample = async (forMs: number) => {
    for (const end = Date.now() + forMs; Date.now() < end; await sleep(1)) {
      largest = Math.max(largest, (await stat(file).catch(() => ({ size: 0 }))).size);
    }
  };
  await sample(500);
  first.agent.kill('SIGKILL');
  await new Promise((resolve) => first.agent.once('exit', resolve));
  // Writes on while no agent runs: a pipe to the agent would have killed it with SIGPIPE.
  await sample(1_000);
  expect(pidExists(flooder.pid)).toBe(true);

  const second = await startCliAgent(dir);
  agents.push(second.agent);
  const adopted = new AgentClient({ socketPath: second.socketPath });
  await sample(500);
  expect(largest).toBeLessThanOrEqual(LIMIT);
  expect((await instances(adopted)).find((instance) => instance.id === flooder.id)).toMatchObject({
    pid: flooder.pid,
    state: 'running',
    adopted: true,
  });
  expect(await adopted.stopInstance(flooder.id)).toMatchObject({ state: 'exited' });
  expect(pidExists(flooder.pid)).toBe(false);
});
