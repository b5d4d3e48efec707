// kill -9 of a real `hotmem agent` process and a restart on the same cgroup tree and state
// directory: the new agent adopts what survived and reports what did not.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { AgentClient } from '../../../lib/agent/client.js';
import { CgroupTree } from '../../../lib/cgroup.js';
import type { InstanceSummary } from '../../../lib/instance/instance.js';
import { startCliAgent } from './cli-process.js';

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

it('adopts surviving instances after kill -9 and marks the dead ones exited', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-restart-'));
  const first = await startCliAgent(dir);
  agents.push(first.agent);
  const client = new AgentClient({ socketPath: first.socketPath });
  const survivor = await client.createInstance({
    command: ['sleep', '60'],
    memoryBytes: 8 * 2 ** 20,
  });
  const victim = await client.createInstance({
    command: ['sleep', '60'],
    memoryBytes: 8 * 2 ** 20,
  });
  pids.push(survivor.pid, victim.pid);

  first.agent.kill('SIGKILL');
  await new Promise((resolve) => first.agent.once('exit', resolve));
  process.kill(victim.pid, 'SIGKILL'); // dies while no agent is watching

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
    command: ['sleep', '60'],
    memoryBytes: 8 * 2 ** 20,
  });
  await expect.poll(async () => (await byId()).get(victim.id)?.exit?.reason).toBe('lost');

  process.kill(survivor.pid, 'SIGKILL');
  await expect
    .poll(async () => (await byId()).get(survivor.id)?.state, { timeout: 5_000 })
    .toBe('exited');
  listed = await byId();
  expect(listed.get(survivor.id)?.exit).toMatchObject({ code: null, reason: 'lost' });
  expect(await new CgroupTree(second.cgroupRoot).list()).toEqual([]);
  expect(await readdir(second.stateDir)).toEqual([]);
});
