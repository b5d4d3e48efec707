// Builds a real agent (real HTTP server on a unix socket in a temp dir, real child processes, a
// temp-dir cgroup tree) around a fake partition manager.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Agent, type AgentOptions } from '../../../lib/agent/agent.js';
import { Bindings, type BindingsOptions } from '../../../lib/agent/bindings.js';
import { AgentClient } from '../../../lib/agent/client.js';
import { AgentServer, type Endpoint, type ServerLimits } from '../../../lib/agent/server.js';
import { relayPath } from '../../../lib/binding.js';
import { CgroupTree } from '../../../lib/cgroup.js';
import { type Logger, silentLogger } from '../../../lib/log.js';

export interface Harness {
  dir: string;
  cgroupRoot: string;
  stateDir: string;
  socketPath: string;
  launcherArgv: string;
  agent: Agent;
  bindings: Bindings;
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
    limits?: Partial<ServerLimits>;
    logger?: Logger;
    bindings?: Partial<Pick<BindingsOptions, 'binder' | 'releaseTimeoutMs' | 'retainSettled'>>;
  } = {},
): Promise<Harness> {
  const {
    endpoint: endpointOverride,
    tree: treeOverride,
    limits,
    logger = silentLogger(),
    bindings: bindingsOverrides,
    ...agentOverrides
  } = overrides;
  const tree = treeOverride ?? (await makeTempTree());
  const launcher = await writeStandInLauncher(tree.dir);
  const socketPath = path.join(tree.dir, 'agent.sock');
  const agent = new Agent({
    partitions: null,
    cgroups: new CgroupTree(tree.cgroupRoot),
    launcher: { path: launcher.path },
    outputRelay: relayPath(),
    pidfds: null,
    reaper: null,
    logger,
    stateDir: tree.stateDir,
    stopGraceMs: 2_000,
    ...agentOverrides,
  });
  await agent.start();
  const bindings = new Bindings({
    agent,
    binder: null,
    logger,
    stateDir: path.join(tree.stateDir, 'bindings'),
    ...bindingsOverrides,
  });
  await bindings.start();
  const endpoint = endpointOverride ?? { socketPath };
  const server = await AgentServer.listen({
    agent,
    bindings,
    logger,
    endpoint,
    ...(limits && { limits }),
  });
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
    bindings,
    server,
    client,
    async close() {
      await agent.shutdown();
      await server.close();
      bindings.close();
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

/** A logger at debug level that keeps every record, parsed, in `records`. */
export function capturingLogger(): { logger: Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'debug' },
    { write: (line: string) => records.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { logger, records };
}

export interface RawAnswer {
  /** Of the final answer (after any 100 Continue); 0 when none came. */
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Everything received, interim answers included. */
  raw: string;
  /** The server closed or reset the connection before waitMs passed. */
  closed: boolean;
}

/**
 * Writes `request` verbatim on a new connection, then reads until the server closes it or
 * waitMs passed (then the client closes it): for what a well-behaved client never sends.
 */
export function exchange(
  to: string | { host: string; port: number },
  request: string | Buffer,
  waitMs = 5_000,
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = typeof to === 'string' ? net.connect(to) : net.connect(to.port, to.host);
    const chunks: Buffer[] = [];
    let closed = false;
    const timer = setTimeout(() => socket.destroy(), waitMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = () => {
      closed = true;
    };
    socket.on('error', ended);
    socket.on('end', ended);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(parseAnswer(Buffer.concat(chunks).toString('latin1'), closed));
    });
    socket.write(request);
  });
}

function parseAnswer(raw: string, closed: boolean): RawAnswer {
  let rest = raw;
  for (;;) {
    const headEnd = rest.indexOf('\r\n\r\n');
    if (headEnd < 0) return { status: 0, headers: {}, body: '', raw, closed };
    const [statusLine = '', ...lines] = rest.slice(0, headEnd).split('\r\n');
    const status = Number(statusLine.split(' ')[1]);
    const headers = Object.fromEntries(
      lines.map((line) => {
        const colon = line.indexOf(':');
        return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
      }),
    );
    rest = rest.slice(headEnd + 4);
    if (status >= 100 && status < 200) continue;
    const length = Number(headers['content-length'] ?? rest.length);
    return {
      status,
      headers,
      body: Buffer.from(rest, 'latin1').subarray(0, length).toString('utf8'),
      raw,
      closed,
    };
  }
}

/** The documented error body, parsed: `{error: {code, message}}`, or throws saying what came. */
export function errorBody(answer: RawAnswer): { code: string; message: string } {
  const parsed = JSON.parse(answer.body) as { error?: { code?: unknown; message?: unknown } };
  if (typeof parsed.error?.code !== 'string' || typeof parsed.error.message !== 'string') {
    throw new Error(`not the documented error body: ${answer.raw}`);
  }
  return { code: parsed.error.code, message: parsed.error.message };
}
