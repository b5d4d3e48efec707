// Builds a real agent (real HTTP server on a unix socket in a temp dir, real child processes, a
// temp-dir cgroup tree) around a fake partition manager.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, type AgentOptions } from '../../../lib/agent/agent.js';
import { AgentClient } from '../../../lib/agent/client.js';
import { AgentServer, type Endpoint } from '../../../lib/agent/server.js';
import { CgroupTree } from '../../../lib/cgroup.js';
import { silentLogger } from '../../../lib/log.js';

export interface Harness {
  dir: string;
  cgroupRoot: string;
  stateDir: string;
  socketPath: string;
  launcherArgv: string;
  agent: Agent;
  server: AgentServer;
  client: AgentClient;
  close(): Promise<void>;
}

export async function makeTempTree(): Promise<{
  dir: string;
  cgroupRoot: string;
  stateDir: string;
}> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hotmem-agent-'));
  const cgroupRoot = path.join(dir, 'cgroup');
  await mkdir(cgroupRoot);
  await writeFile(path.join(cgroupRoot, 'cgroup.controllers'), 'cpu memory pids\n');
  return { dir, cgroupRoot, stateDir: path.join(dir, 'state') };
}

/**
 * A stand-in for hotmem-exec (there is no HotMem kernel here): it appends its argv to a file,
 * one argument per line and a blank line after each call, then execs the command after "--".
 */
export async function writeStandInLauncher(dir: string): Promise<{ path: string; argv: string }> {
  const launcher = path.join(dir, 'stand-in-launcher.sh');
  const argv = path.join(dir, 'launcher-argv');
  await writeFile(
    launcher,
    `#!/bin/sh\n{ printf '%s\\n' "$@"; echo; } >> '${argv}'\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n`,
  );
  await chmod(launcher, 0o755);
  return { path: launcher, argv };
}

export async function startHarness(
  overrides: Partial<AgentOptions> & {
    endpoint?: Endpoint;
    tree?: Awaited<ReturnType<typeof makeTempTree>>;
  } = {},
): Promise<Harness> {
  const { endpoint: endpointOverride, tree: treeOverride, ...agentOverrides } = overrides;
  const tree = treeOverride ?? (await makeTempTree());
  const launcher = await writeStandInLauncher(tree.dir);
  const socketPath = path.join(tree.dir, 'agent.sock');
  const logger = silentLogger();
  const agent = new Agent({
    partitions: null,
    cgroups: new CgroupTree(tree.cgroupRoot),
    launcher: { path: launcher.path },
    pidfds: null,
    reaper: null,
    logger,
    stateDir: tree.stateDir,
    stopGraceMs: 2_000,
    ...agentOverrides,
  });
  await agent.start();
  const endpoint = endpointOverride ?? { socketPath };
  const server = await AgentServer.listen({ agent, logger, endpoint });
  const client = new AgentClient(
    'socketPath' in endpoint
      ? endpoint
      : { ...endpoint, port: Number(server.address.split(':').pop()) },
  );
  return {
    ...tree,
    socketPath,
    launcherArgv: launcher.argv,
    agent,
    server,
    client,
    async close() {
      await agent.shutdown();
      await server.close();
      await rm(tree.dir, { recursive: true, force: true });
    },
  };
}

/**
 * Reads events from the stream until `until` matches one (the stream stays open for more), or
 * fails after timeoutMs listing what it saw.
 */
export async function collectEvents<T extends { type: string }>(
  stream: AsyncGenerator<T>,
  until: (event: T) => boolean,
  timeoutMs = 10_000,
): Promise<T[]> {
  const seen: T[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - Date.now()));
    });
    const next = await Promise.race([stream.next(), timeout]);
    clearTimeout(timer);
    if (next === 'timeout' || next.done) {
      throw new Error(`event not seen in ${timeoutMs} ms: ${JSON.stringify(seen)}`);
    }
    seen.push(next.value);
    if (until(next.value)) return seen;
  }
}
