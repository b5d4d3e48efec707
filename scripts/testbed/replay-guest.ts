// A trace replayed against a real guest of the test bed: the in-guest agent started for the
// mode (bound for hotmem, --unbound for stock), the guest onlining plugged blocks as the mode
// says (replay-modes.ts), the host controller driving QEMU's virtio-mem device over QMP, every
// invocation relayed by the agent to a function instance in the guest. All modes run in one
// booted VM, one after the other, on the same trace and budget.
import { AgentClient } from '../../lib/agent/client.js';
import { AgentInvoker } from '../../lib/host/controller/agent-invoker.js';
import type {
  ControllerConfigInput,
  ControllerMetrics,
} from '../../lib/host/controller/controller.js';
import { Controller } from '../../lib/host/controller/controller.js';
import { systemClock } from '../../lib/host/controller/ports.js';
import { type ReplaySummary, replay } from '../../lib/host/replay.js';
import type { Trace } from '../../lib/host/trace/trace.js';
import type { Logger } from '../../lib/log.js';
import { GUEST_FUNCTION, GUEST_NATIVE_FUNCTION, GUEST_PACKAGE } from './initramfs.js';
import { kernelWorkerCpuBetween, readKernelWorkerCpu } from './kernel-workers.js';
import { REPLAY_MODES, type ReplayMode } from './replay-modes.js';
import { blockStates, type Guest, vmstatSnapshot } from './testbed.js';
import { MiB } from './vm.js';

/** The agent's TCP port in the guest; bootGuest must forward it (guestPorts). */
export const REPLAY_AGENT_PORT = 7071;
const TOKEN = 'replay-token-0123456789abcdef';
const TOKEN_FILE = '/run/replay-agent-token';
/** Instances listen on ports from here up, one per instance started in a run. */
const FIRST_INSTANCE_PORT = 9000;
const INSTANCE_PORTS = 20_000;

export interface ModeRun {
  mode: ReplayMode;
  summary: ReplaySummary;
  metrics: ControllerMetrics;
  /** pgmigrate_success over the whole run, in the guest. */
  pagesMigrated: number;
  /** The device's plugged size once the controller closed, and before it started. */
  pluggedAfterBytes: number;
  pluggedBeforeBytes: number;
  /**
   * The zones hot-plugged blocks were seen online in (valid_zones, read every 10 s), so a run
   * shows where its memory went; absent from runs saved before it existed.
   */
  zonesSeen?: string[];
  /**
   * CPU time the guest's kernel workers spent over the run (kernel-workers.ts): virtio-mem's
   * plugs and unplugs, stock's migrations among them. Absent from runs saved before it existed.
   */
  kernelWorkerCpuMs?: number;
  wallMs: number;
}

export interface ReplayOptions {
  /** The instances' program: function.c (starts in ms) or function.mjs on node (seconds, TCG). */
  function: 'native' | 'node';
  /** Controller settings both modes share (mode is set per run). */
  controller: Omit<ControllerConfigInput, 'mode'>;
  logger?: Logger;
  /** Called with a line now and then while a run goes on. */
  progress?: (line: string) => void;
}

/**
 * What runs for an instance of a function: function.c or function.mjs holding half the
 * function's memory minus 16 MiB (node's own), so the instance stays within its memory.max.
 */
function instanceCommands(trace: Trace, program: ReplayOptions['function']) {
  const memory = new Map<string, number>();
  for (const invocation of trace.invocations) {
    memory.set(
      invocation.functionName,
      Math.max(memory.get(invocation.functionName) ?? 0, invocation.memoryBytes),
    );
  }
  let started = 0;
  return (functionName: string) => {
    const port = FIRST_INSTANCE_PORT + (started++ % INSTANCE_PORTS);
    const footprintMiB = Math.max(0, Math.floor((memory.get(functionName) ?? 0) / MiB / 2) - 16);
    return {
      command: program === 'native' ? [GUEST_NATIVE_FUNCTION] : ['/usr/bin/node', GUEST_FUNCTION],
      env: { PORT: String(port), FOOTPRINT_MIB: String(footprintMiB) },
      port,
    };
  };
}

async function startAgent(
  g: Guest,
  mode: ReplayMode,
): Promise<{ pid: number; client: AgentClient }> {
  await g.guest.write(TOKEN_FILE, TOKEN);
  await g.guest.check([
    '/usr/bin/node',
    '-e',
    `require('node:fs').chmodSync('${TOKEN_FILE}', 0o600)`,
  ]);
  const pid = await g.guest.spawn([
    '/usr/bin/node',
    `${GUEST_PACKAGE}/dist/lib/cli.js`,
    'agent',
    '--listen',
    `0.0.0.0:${REPLAY_AGENT_PORT}`,
    '--token-file',
    TOKEN_FILE,
    ...(REPLAY_MODES[mode].controller === 'stock' ? ['--unbound'] : []),
  ]);
  const port = g.vm.hostPorts.get(REPLAY_AGENT_PORT);
  if (port === undefined) throw new Error(`the guest's port ${REPLAY_AGENT_PORT} is not forwarded`);
  const client = new AgentClient({ host: '127.0.0.1', port, token: TOKEN });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await client.health();
      return { pid, client };
    } catch (error) {
      if (Date.now() > deadline)
        throw new Error('the agent did not answer in 60 s', { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/**
 * How the guest onlines hot-plugged memory: stock Linux onlines it as it arrives, movable (as
 * distributions' udev rules do) or, for stock-kernel, to ZONE_NORMAL; with HotMem it stays offline
 * until a partition takes it.
 */
async function setAutoOnline(g: Guest, mode: ReplayMode): Promise<void> {
  await g.guest.write(
    '/sys/devices/system/memory/auto_online_blocks',
    REPLAY_MODES[mode].autoOnline,
  );
}

const bootBlocks = new WeakMap<Guest, Promise<Set<string>>>();

/**
 * The guest's boot memory blocks, read at its first run (the guest removes a hot-plugged block a
 * moment after its last sub-block is unplugged, so a later read may still list one).
 */
function bootBlockNames(g: Guest): Promise<Set<string>> {
  let names = bootBlocks.get(g);
  if (!names) {
    names = blockStates(g.guest).then((states) => new Set(Object.keys(states)));
    bootBlocks.set(g, names);
  }
  return names;
}

/** Adds the zones of the online hot-plugged blocks (those not in `boot`) to `zones`. */
async function sampleZones(g: Guest, boot: Set<string>, zones: Set<string>): Promise<void> {
  for (const [name, state] of Object.entries(await blockStates(g.guest))) {
    const [status, ...valid] = state.split(' ');
    if (!boot.has(name) && status === 'online') zones.add(valid.join(' '));
  }
}

/** Replays `trace` in one mode; the device must be at its floor (nothing plugged by others). */
export async function replayInGuest(
  g: Guest,
  trace: Trace,
  mode: ReplayMode,
  options: ReplayOptions,
): Promise<ModeRun> {
  const spec = REPLAY_MODES[mode];
  const [requestedBeforeBytes, pluggedBeforeBytes] = await Promise.all([
    g.vm.virtioMem.requestedSize(),
    g.vm.virtioMem.size(),
  ]);
  if (pluggedBeforeBytes !== requestedBeforeBytes) {
    throw new Error(
      `${mode}: the device holds ${pluggedBeforeBytes} bytes, ${requestedBeforeBytes} requested: ` +
        'an earlier run left memory the guest could not unplug, and this run would start on it',
    );
  }
  const boot = await bootBlockNames(g);
  await setAutoOnline(g, mode);
  const agent = await startAgent(g, mode);
  try {
    const moved = await vmstatSnapshot(g.guest);
    const workers = await readKernelWorkerCpu(g.guest);
    const controller = new Controller(
      {
        hotplug: g.vm.virtioMem,
        agent: agent.client,
        invoker: new AgentInvoker(agent.client),
        instanceCommand: instanceCommands(trace, options.function),
        ...(options.logger && { logger: options.logger }),
      },
      {
        ...options.controller,
        mode: spec.controller,
        giveBackMemory: spec.giveBackMemory,
      },
    );
    await controller.start();
    const started = Date.now();
    const zones = new Set<string>();
    let sampling = Promise.resolve();
    const ticker = setInterval(() => {
      sampling = sampling.then(() => sampleZones(g, boot, zones)).catch(() => {});
      const done = controller.metrics.invocations.length;
      const failed = controller.metrics.invocations.filter((i) => i.error !== null).length;
      const plugged = controller.metrics.memory.at(-1)?.pluggedBytes ?? 0;
      options.progress?.(
        `${mode}: ${((Date.now() - started) / 1000).toFixed(0)} s, ${done}/${trace.invocations.length} invocations done (${failed} failed), ${plugged / MiB} MiB plugged`,
      );
    }, 10_000);
    let summary: ReplaySummary;
    try {
      summary = await replay(trace, controller, systemClock);
    } finally {
      clearInterval(ticker);
      await sampling;
    }
    return {
      mode,
      summary,
      metrics: controller.metrics,
      pagesMigrated: await moved('pgmigrate_success'),
      kernelWorkerCpuMs: kernelWorkerCpuBetween(workers, await readKernelWorkerCpu(g.guest)),
      pluggedBeforeBytes,
      pluggedAfterBytes: await g.vm.virtioMem.size(),
      zonesSeen: [...zones].sort(),
      wallMs: Date.now() - started,
    };
  } finally {
    await g.guest.signal(agent.pid, 'SIGTERM');
    await g.guest.wait(agent.pid, 60_000);
    await backToFloor(g, mode, requestedBeforeBytes, options.progress);
  }
}

/**
 * Brings the device back to the size it had before the run. What the kept run left plugged is
 * offline and free once the agent has stopped; what a ZONE_NORMAL run could not unplug may come
 * out now that no instance runs (sending the request again wakes the guest driver at once).
 * Memory still plugged after that is reported, and the next run refuses to start on it.
 */
async function backToFloor(
  g: Guest,
  mode: ReplayMode,
  floorBytes: number,
  progress: ((line: string) => void) | undefined,
): Promise<void> {
  if ((await g.vm.virtioMem.size()) === floorBytes) return;
  try {
    await g.vm.virtioMem.resize(floorBytes, { timeoutMs: 120_000 });
  } catch (error) {
    progress?.(
      `${mode}: the device did not come back to ${floorBytes} bytes: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}
