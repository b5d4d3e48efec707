// Runs the CLI as a separate process, the way users do (node + tsx on lib/cli.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../../lib/agent/client.js';

const CLI = fileURLToPath(new URL('../../../lib/cli.ts', import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** `hotmem agent` on a temp tree (no HotMem there: unbound); resolves once it answers. */
export async function startCliAgent(
  dir: string,
): Promise<{ agent: ChildProcess; socketPath: string; cgroupRoot: string; stateDir: string }> {
  const cgroupRoot = path.join(dir, 'cgroup');
  const stateDir = path.join(dir, 'state');
  const socketPath = path.join(dir, 'agent.sock');
  await mkdir(cgroupRoot, { recursive: true });
  await writeFile(path.join(cgroupRoot, 'cgroup.controllers'), 'cpu memory\n');
  const agent = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      CLI,
      'agent',
      '--root',
      dir,
      '--socket',
      socketPath,
      '--cgroup-root',
      cgroupRoot,
      '--state-dir',
      stateDir,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  agent.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk;
  });
  const client = new AgentClient({ socketPath }, { timeoutMs: 1_000 });
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}: ${stderr}`);
    try {
      await client.health();
      return { agent, socketPath, cgroupRoot, stateDir };
    } catch (error) {
      if (Date.now() > deadline)
        throw new Error(`agent did not answer: ${stderr}`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
