// A real `hotmem agent` process is child subreaper: a process an instance leaves behind is
// reparented to it, and reaped by it (not left a zombie) when it exits.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { AgentClient } from '../../../lib/agent/client.js';
import { startCliAgent } from './cli-process.js';

let agent: ChildProcess | undefined;
let dir: string | undefined;

afterEach(async () => {
  agent?.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The parent pid and state of a process, or undefined once it is gone (reaped). */
async function processStatus(pid: number): Promise<{ ppid: number; state: string } | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] as string, ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

it('adopts and reaps the orphan an instance leaves behind', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-subreaper-'));
  const started = await startCliAgent(dir);
  agent = started.agent;
  const client = new AgentClient({ socketPath: started.socketPath });
  // The instance starts a background sleep, reports its pid and exits at once.
  const { id } = await client.createInstance({
    command: ['sh', '-c', 'sleep 1 >/dev/null 2>&1 & echo $!'],
    memoryBytes: 8 * 2 ** 20,
  });
  const exitedOutput = async () => {
    const detail = (await client.json('GET', `/v1/instances/${id}`)) as {
      state: string;
      output: { stdout: string };
    };
    return detail.state === 'exited' ? detail.output.stdout : '';
  };
  await expect.poll(exitedOutput, { timeout: 5_000 }).toMatch(/^\d+\n$/);
  const orphan = Number(await exitedOutput());
  expect(await processStatus(orphan)).toMatchObject({ ppid: started.agent.pid });
  await expect.poll(() => processStatus(orphan), { timeout: 5_000 }).toBeUndefined();
  const metrics = (await client.json('GET', '/metrics')) as string;
  // The sleep, and the instance's output relay, which exited once the sh had.
  expect(metrics).toContain('hotmem_orphans_reaped_total 2\n');
});
