/**
 * `hotmem agent`: wires the real dependencies (kernel device, memory blocks, partition manager,
 * launcher, pidfds, subreaper) into an Agent, serves it, and shuts down in order on SIGTERM or
 * SIGINT: stop instances newest first, reclaim, close.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { launcherPath, relayPath } from '../binding.js';
import { CgroupTree, DEFAULT_CGROUP_ROOT } from '../cgroup.js';
import { devicePath, HotMemDevice } from '../hotmem-device.js';
import type { Launcher, Pidfds } from '../instance/instance.js';
import { MemoryBlocks } from '../memory-blocks.js';
import { PartitionManager } from '../partition-manager.js';
import {
  closeFd,
  loadProcessSupport,
  pidfdOpen,
  pidfdSendSignal,
  reapOrphans,
  setChildSubreaper,
} from '../process.js';
import { Agent, DEFAULT_STATE_DIR, type Reaper } from './agent.js';
import { Bindings, type ProcessBinder } from './bindings.js';
import { AgentServer, DEFAULT_SOCKET_PATH, type Endpoint } from './server.js';

export interface RunAgentOptions {
  /** Prefix for /sys and /dev (tests, chroots). */
  root: string;
  socketPath?: string;
  /** TCP instead of the unix socket; needs tokenFile. */
  listen?: { host: string; port: number };
  tokenFile?: string;
  cgroupRoot?: string;
  stateDir?: string;
  /** Log instances' output line by line. */
  logOutput?: boolean;
  /** Leave HotMem unused, as on a stock kernel: the baseline a comparison runs against. */
  unbound?: boolean;
}

/** Resolves once the agent has shut down after SIGTERM or SIGINT. */
export async function runAgent(options: RunAgentOptions, logger: Logger): Promise<void> {
  const endpoint = await resolveEndpoint(options);
  const native = nativeProcessSupport(logger);
  const hotmem = options.unbound ? null : openHotMem(options.root, logger);
  if (options.unbound) logger.info('--unbound: HotMem left unused, instances run unbound');
  const launcher = hotmem ? findLauncher(devicePath({ root: options.root }), logger) : null;
  const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  const agent = new Agent({
    partitions: hotmem?.manager ?? null,
    cgroups: new CgroupTree(options.cgroupRoot ?? DEFAULT_CGROUP_ROOT),
    launcher,
    outputRelay: findRelay(logger),
    pidfds: native?.pidfds ?? null,
    reaper: native?.reaper ?? null,
    logger,
    stateDir,
    logOutput: options.logOutput ?? false,
  });
  const device = hotmem?.device;
  const bindings = new Bindings({
    agent,
    binder: native && device ? processBinder(device) : null,
    logger,
    stateDir: path.join(stateDir, 'bindings'),
  });
  let server: AgentServer | undefined;
  // The first failure is the one reported; shutting down after it must not hide it.
  let failure: unknown;
  try {
    await agent.start();
    await bindings.start();
    server = await AgentServer.listen({ agent, bindings, logger, endpoint });
    const signal = await waitForSignal(['SIGTERM', 'SIGINT']);
    logger.info({ signal }, 'shutdown requested');
  } catch (error) {
    failure = error;
  }
  try {
    await agent.shutdown();
  } catch (error) {
    logger.error({ err: error }, 'shutdown failed');
    failure ??= error;
  }
  await server?.close();
  bindings.close();
  hotmem?.close();
  if (failure !== undefined) throw failure;
}

async function resolveEndpoint(options: RunAgentOptions): Promise<Endpoint> {
  if (!options.listen) return { socketPath: options.socketPath ?? DEFAULT_SOCKET_PATH };
  if (!options.tokenFile) throw new Error('--listen needs --token-file');
  const token = (await readPrivateFile(options.tokenFile)).trim();
  if (token.length < 16) {
    throw new Error(`${options.tokenFile}: the token must have at least 16 characters`);
  }
  return { ...options.listen, token };
}

/** The token is as good as root: a file others can read (or write) is refused, not used. */
async function readPrivateFile(file: string): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const { mode } = await handle.stat();
    if ((mode & 0o077) !== 0) {
      throw new Error(
        `${file}: the token file is readable by group or others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

function nativeProcessSupport(logger: Logger): { pidfds: Pidfds; reaper: Reaper } | null {
  try {
    loadProcessSupport();
  } catch (error) {
    logger.warn({ err: error }, 'native addon unavailable: signals by pid, no subreaper');
    return null;
  }
  return {
    pidfds: { pidfdOpen, pidfdSendSignal },
    reaper: { setChildSubreaper, reapOrphans },
  };
}

function findLauncher(device: string, logger: Logger): Launcher | null {
  try {
    return { path: launcherPath(), device };
  } catch (error) {
    logger.warn({ err: error }, 'hotmem-exec not found');
    return null;
  }
}

function findRelay(logger: Logger): string | null {
  try {
    return relayPath();
  } catch (error) {
    logger.warn({ err: error }, 'hotmem-relay not found: instances write output files unbounded');
    return null;
  }
}

function openHotMem(
  root: string,
  logger: Logger,
): { manager: PartitionManager; device: HotMemDevice; close(): void } | null {
  if (!HotMemDevice.available({ root })) {
    logger.warn({ root }, 'no usable /dev/hotmem: HotMem unavailable, instances run unbound');
    return null;
  }
  const device = HotMemDevice.open({ root });
  const manager = new PartitionManager({ blocks: new MemoryBlocks({ root }), device, logger });
  return {
    manager,
    device,
    close() {
      manager.close();
      device.close();
    },
  };
}

function processBinder(device: HotMemDevice): ProcessBinder {
  return {
    pidfdOpen,
    bind: (pidfd, partition, waitMs) => device.bind(pidfd, partition, { waitMs }),
    closeFd,
  };
}

function waitForSignal(signals: NodeJS.Signals[]): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handlers = signals.map((signal) => {
      const handler = () => {
        for (const [name, registered] of handlers) process.off(name, registered);
        resolve(signal);
      };
      process.on(signal, handler);
      return [signal, handler] as const;
    });
  });
}
