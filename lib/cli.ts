#!/usr/bin/env node
/**
 * hotmem: inspect memory blocks and partitions, run a command in a fresh partition, reclaim a
 * partition, or run the agent. Exit codes (docs/cli.md): 0 ok, 1 runtime error, 2 usage error,
 * 3 HotMem unavailable; `run` exits with its command's code.
 */
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type AgentPartition, type MemorySummary, summarizeMemory } from './agent/agent.js';
import { AgentClient, AgentRequestError } from './agent/client.js';
import { runAgent } from './agent/run.js';
import { DEFAULT_SOCKET_PATH } from './agent/server.js';
import { launcherPath } from './binding.js';
import { HotMemDevice, HotMemSysfs, type ReclaimReport } from './hotmem-device.js';
import { createLogger, type Logger } from './log.js';
import { type MemoryBlock, MemoryBlocks } from './memory-blocks.js';
import { type IfUnavailable, OCI_HOOK_STAGES, type OciHookStage, runOciHook } from './oci-hook.js';
import { PartitionManager } from './partition-manager.js';

export const EXIT = { ok: 0, runtime: 1, usage: 2, unavailable: 3 } as const;

/** Wrong invocation: exit 2 and a pointer to --help. */
export class UsageError extends Error {
  readonly exitCode = EXIT.usage;
}

/** HotMem is not there (no /dev/hotmem, no sysfs directory, addon not built): exit 3. */
export class UnavailableError extends Error {
  readonly exitCode = EXIT.unavailable;
}

const USAGE = `Usage: hotmem [global options] <command> [options]

Commands:
  status                         HotMem, memory blocks and partitions at a glance
  blocks                         list memory blocks
  partitions                     list HotMem partitions
  run [--memory SIZE] -- CMD...  run CMD bound to a new partition, reclaim it on exit
  reclaim <partition>            offline every block of a free partition
  agent [--socket PATH] [--listen HOST:PORT --token-file FILE]
        [--cgroup-root DIR] [--state-dir DIR] [--log-output] [--unbound]
                                 run the in-guest agent
  oci-hook <createRuntime|prestart|poststop> [--if-unavailable fail|unbound]
                                 OCI runtime hook (state on stdin): bind the container
                                 to a partition through the agent, or release it

Global options:
  --json            machine-readable output
  --debug           debug logging; stack traces on errors
  --root DIR        prefix for /sys and /dev (testing)
  --agent SOCKET    ask a running agent (status, partitions, oci-hook)
  -h, --help        this text

Sizes: bytes or a number with K, M, G or T (powers of 1024), e.g. 512M, 2G.
Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 HotMem unavailable; run: its command's.`;

const OPTIONS = {
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
  root: { type: 'string' },
  agent: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  memory: { type: 'string' },
  socket: { type: 'string' },
  listen: { type: 'string' },
  'token-file': { type: 'string' },
  'cgroup-root': { type: 'string' },
  'state-dir': { type: 'string' },
  'log-output': { type: 'boolean' },
  unbound: { type: 'boolean' },
  'if-unavailable': { type: 'string' },
} as const;

/** Which command accepts which of its own options; the global ones go with every command. */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  status: [],
  blocks: [],
  partitions: [],
  run: ['memory'],
  reclaim: [],
  agent: ['socket', 'listen', 'token-file', 'cgroup-root', 'state-dir', 'log-output', 'unbound'],
  'oci-hook': ['if-unavailable'],
};
const GLOBAL_OPTIONS = ['json', 'debug', 'root', 'agent', 'help'];
const AGENT_AWARE = ['status', 'partitions', 'oci-hook'];

const DEFAULT_RUN_MEMORY = 256 * 2 ** 20;
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
};

type Values = ReturnType<typeof parse>['values'];

interface Context {
  values: Values;
  args: string[];
  command: string[];
  root: string;
  json: boolean;
  out: (text: string) => void;
  log: Logger;
}

/** Parses 512M, 2G, 1.5G, 4096 (bytes) into a byte count; rejects anything else, naming it. */
export function parseSize(text: string, what = 'size'): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  const unit = SIZE_UNITS[(match?.[2] ?? '').toUpperCase()];
  if (!match || unit === undefined) {
    throw new UsageError(`${what}: '${text}' is not a size (examples: 512M, 2G, 1048576)`);
  }
  const bytes = Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`${what}: '${text}' must be a positive size below 8 PiB`);
  }
  return bytes;
}

export function formatBytes(bytes: number): string {
  for (const [unit, size] of [
    ['T', 2 ** 40],
    ['G', 2 ** 30],
    ['M', 2 ** 20],
    ['K', 2 ** 10],
  ] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))}${unit}`;
  }
  return `${bytes}B`;
}

function parse(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  const dash = argv.indexOf('--');
  const { values, positionals } = parse(dash >= 0 ? argv.slice(0, dash) : argv);
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT.ok;
  }
  const [name, ...args] = positionals;
  if (!name) throw new UsageError('no command given');
  const handler = COMMANDS[name];
  if (!handler) throw new UsageError(`unknown command '${name}'`);
  checkOptions(name, values);
  if (command.length > 0 && name !== 'run')
    throw new UsageError(`'${name}' takes no command after --`);
  // The agent logs its work; the other commands only what went wrong, unless asked.
  const log = openLog(name, values.debug ?? false);
  const context: Context = {
    values,
    args,
    command,
    root: values.root ?? '/',
    json: values.json ?? false,
    out: (text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
    log,
  };
  return handler(context);
}

/** The agent logs its work; the other commands only what went wrong, unless asked. */
function openLog(command: string, debug: boolean): Logger {
  try {
    return createLogger({
      ...(debug && { level: 'debug' }),
      defaultLevel: command === 'agent' ? 'info' : 'warn',
      name: 'hotmem',
    });
  } catch (error) {
    // A bad HOTMEM_LOG_LEVEL is a wrong invocation like a bad option.
    throw new UsageError((error as Error).message, { cause: error });
  }
}

function checkOptions(name: string, values: Values): void {
  const allowed = new Set([...GLOBAL_OPTIONS, ...(COMMAND_OPTIONS[name] ?? [])]);
  for (const [option, value] of Object.entries(values)) {
    if (value !== undefined && !allowed.has(option)) {
      throw new UsageError(`'${name}' does not take --${option}`);
    }
  }
  if (values.agent && !AGENT_AWARE.includes(name)) {
    throw new UsageError(`--agent works with ${AGENT_AWARE.join(', ')} only`);
  }
}

function expectArgs(context: Context, count: number, names: string): void {
  if (context.args.length !== count) {
    throw new UsageError(
      count === 0
        ? `unexpected argument '${context.args[0]}'`
        : `expected ${names}, got ${context.args.length === 0 ? 'nothing' : `'${context.args.join(' ')}'`}`,
    );
  }
}

const COMMANDS: Record<string, (context: Context) => Promise<number>> = {
  async status(context) {
    expectArgs(context, 0, '');
    if (context.values.agent) {
      const client = new AgentClient({ socketPath: context.values.agent });
      const [health, memory] = await Promise.all([
        client.health(),
        askAgent(() => client.memory()).catch((error: unknown) => {
          if (error instanceof UnavailableError) return null;
          throw error;
        }),
      ]);
      if (context.json) context.out(JSON.stringify({ agent: health, memory }));
      else
        context.out(
          renderStatus(
            health.hotmem,
            memory,
            `agent: ${health.status}, ${health.instancesRunning} instance(s), ${health.binding}`,
          ),
        );
      return EXIT.ok;
    }
    const blocks = await listBlocks(context.root);
    const partitions = await sysfsPartitions(context.root).catch((error: unknown) => {
      if (error instanceof UnavailableError) return null;
      throw error;
    });
    const offline = blocks.filter((block) => block.state === 'offline');
    const spare = {
      blocks: offline.length,
      bytes: offline.reduce((sum, block) => sum + block.size, 0),
    };
    const memory = partitions ? summarizeMemory(partitions, spare) : null;
    const blockCounts = countBy(blocks, (block) => block.state);
    if (context.json) {
      context.out(JSON.stringify({ hotmem: partitions !== null, blocks: blockCounts, memory }));
    } else {
      const line = `memory blocks: ${
        Object.entries(blockCounts)
          .map(([state, count]) => `${count} ${state}`)
          .join(', ') || 'none'
      }`;
      context.out(renderStatus(partitions !== null, memory, line));
    }
    return EXIT.ok;
  },

  async blocks(context) {
    expectArgs(context, 0, '');
    const blocks = await listBlocks(context.root);
    if (context.json) {
      context.out(
        JSON.stringify(blocks, (_key, value) =>
          typeof value === 'bigint' ? `0x${value.toString(16)}` : value,
        ),
      );
    } else {
      context.out(
        table(
          ['BLOCK', 'STATE', 'ZONE', 'NODE', 'PARTITION', 'START', 'SIZE'],
          blocks.map((block) => [
            String(block.id),
            block.state,
            block.zone ?? '-',
            block.node < 0 ? '-' : String(block.node),
            block.partition === null ? '-' : String(block.partition),
            `0x${block.start.toString(16)}`,
            formatBytes(block.size),
          ]),
        ),
      );
    }
    return EXIT.ok;
  },

  async partitions(context) {
    expectArgs(context, 0, '');
    const partitions: AgentPartition[] = context.values.agent
      ? await askAgent(() =>
          new AgentClient({ socketPath: context.values.agent as string }).partitions(),
        )
      : await sysfsPartitions(context.root);
    if (context.json) {
      context.out(JSON.stringify(partitions));
    } else {
      context.out(
        table(
          [
            'PARTITION',
            'STATE',
            'BLOCKS',
            'PRESENT',
            'FREE',
            'MMS',
            'SPILLED',
            'OOM',
            ...(context.values.agent ? ['INSTANCE'] : []),
          ],
          partitions.map((partition) => [
            String(partition.id),
            partition.state,
            String(partition.nrBlocks),
            formatBytes(partition.presentBytes),
            formatBytes(partition.freeBytes),
            String(partition.boundMms),
            String(partition.spilledPages),
            String(partition.oomKills),
            ...(context.values.agent ? [partition.instance ?? '-'] : []),
          ]),
        ),
      );
    }
    return EXIT.ok;
  },

  async run(context) {
    expectArgs(context, 0, '');
    if (context.command.length === 0) throw new UsageError("run needs a command after '--'");
    const bytes = context.values.memory
      ? parseSize(context.values.memory, '--memory')
      : DEFAULT_RUN_MEMORY;
    const device = openDevice(context.root);
    const manager = new PartitionManager({
      blocks: new MemoryBlocks({ root: context.root }),
      device,
      logger: context.log,
    });
    try {
      await manager.init();
      const { partition } = await manager.acquire(bytes);
      // Reclaimed whether the command ran or could not be started (then it was never bound).
      try {
        return await runBound(context, device.path, partition);
      } finally {
        await manager.reclaim(partition).then(
          (report) => context.log.info({ report: describeReclaim(report) }, 'reclaimed'),
          (error: unknown) => {
            // The command's status is what run reports; a partition left behind is worth a line.
            process.stderr.write(
              `hotmem: partition ${partition} not reclaimed: ${(error as Error).message}\n`,
            );
          },
        );
      }
    } finally {
      manager.close();
      device.close();
    }
  },

  async reclaim(context) {
    expectArgs(context, 1, 'a partition number');
    const text = context.args[0] as string;
    if (!/^\d+$/.test(text)) throw new UsageError(`partition: '${text}' is not a partition number`);
    const device = openDevice(context.root);
    try {
      const report = await device.reclaim(Number(text));
      context.out(
        context.json
          ? JSON.stringify({ ...report, durationNs: Number(report.durationNs) })
          : describeReclaim(report),
      );
      return EXIT.ok;
    } finally {
      device.close();
    }
  },

  async agent(context) {
    expectArgs(context, 0, '');
    const { values } = context;
    if (values.listen && values.socket)
      throw new UsageError('--listen and --socket exclude each other');
    if (values.listen && !values['token-file']) throw new UsageError('--listen needs --token-file');
    if (values['token-file'] && !values.listen)
      throw new UsageError('--token-file goes with --listen');
    await runAgent(
      {
        root: context.root,
        ...(values.socket && { socketPath: values.socket }),
        ...(values.listen && { listen: parseHostPort(values.listen) }),
        ...(values['token-file'] && { tokenFile: values['token-file'] }),
        ...(values['cgroup-root'] && { cgroupRoot: values['cgroup-root'] }),
        ...(values['state-dir'] && { stateDir: values['state-dir'] }),
        logOutput: values['log-output'] ?? false,
        unbound: values.unbound ?? false,
      },
      context.log,
    );
    return EXIT.ok;
  },

  'oci-hook': ociHook,
};

/** The hook's exit status is what the runtime acts on; stdout is left to the runtime. */
async function ociHook(context: Context): Promise<number> {
  expectArgs(context, 1, `a stage (${OCI_HOOK_STAGES.join(', ')})`);
  const stage = context.args[0] as string;
  if (!(OCI_HOOK_STAGES as readonly string[]).includes(stage)) {
    throw new UsageError(`stage: '${stage}' is not one of ${OCI_HOOK_STAGES.join(', ')}`);
  }
  const ifUnavailable = context.values['if-unavailable'] ?? 'fail';
  if (ifUnavailable !== 'fail' && ifUnavailable !== 'unbound') {
    throw new UsageError(`--if-unavailable: '${ifUnavailable}' is not fail or unbound`);
  }
  const outcome = await runOciHook({
    stage: stage as OciHookStage,
    state: await readStdin(),
    socketPath: context.values.agent ?? DEFAULT_SOCKET_PATH,
    ifUnavailable: ifUnavailable as IfUnavailable,
    warn: (line) => process.stderr.write(`hotmem oci-hook: ${line}\n`),
  });
  context.log.info({ stage, outcome }, 'oci-hook done');
  return EXIT.ok;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseHostPort(text: string): { host: string; port: number } {
  const match = /^(.+):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) {
    throw new UsageError(`--listen: '${text}' is not HOST:PORT (e.g. 127.0.0.1:7070)`);
  }
  return { host: (match[1] as string).replace(/^\[(.*)\]$/, '$1'), port };
}

/** Asks the agent; its HOTMEM_UNAVAILABLE answer becomes exit code 3, like the direct path's. */
async function askAgent<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof AgentRequestError && error.code === 'HOTMEM_UNAVAILABLE') {
      throw new UnavailableError(`agent: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/**
 * Partitions as /sys/kernel/mm/hotmem shows them (readable without CAP_SYS_ADMIN), in the shape
 * the agent gives them: the kernel knows no instances (always null), and the block ids, which
 * only sysfs lists, are left to `hotmem blocks`.
 */
async function sysfsPartitions(root: string): Promise<AgentPartition[]> {
  try {
    const partitions = await new HotMemSysfs({ root }).partitions();
    return partitions.map(({ blocks: _blocks, ...partition }) => ({
      ...partition,
      instance: null,
    }));
  } catch (error) {
    throw unavailableIfMissing(error, 'no HotMem partitions in sysfs');
  }
}

async function listBlocks(root: string): Promise<MemoryBlock[]> {
  try {
    return await new MemoryBlocks({ root }).list();
  } catch (error) {
    throw unavailableIfMissing(error, 'no memory hotplug in sysfs');
  }
}

function openDevice(root: string): HotMemDevice {
  try {
    return HotMemDevice.open({ root });
  } catch (error) {
    throw unavailableIfMissing(error, 'HotMem unavailable');
  }
}

/** ENOENT on a kernel interface, or no addon: HotMem is not there (exit 3). */
function unavailableIfMissing(error: unknown, what: string): unknown {
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'ENOENT' || message.startsWith('cannot load the hotmem native addon')) {
    return new UnavailableError(`${what}: ${message}`, { cause: error });
  }
  return error;
}

/** Runs the command through hotmem-exec bound to partition; resolves with the exit status. */
async function runBound(context: Context, devicePath: string, partition: number): Promise<number> {
  const child = spawn(
    launcherPath(),
    ['--device', devicePath, '--partition', String(partition), '--', ...context.command],
    { stdio: 'inherit' },
  );
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        resolve(code ?? 128 + (signal ? osConstants.signals[signal] : 0));
      });
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}

function describeReclaim(report: ReclaimReport): string {
  const ms = Number(report.durationNs) / 1e6;
  return `partition ${report.partition}: ${report.blocks} block(s), ${formatBytes(report.bytes)} offlined in ${ms.toFixed(1)} ms, ${report.pagesMigrated} page(s) migrated`;
}

function renderStatus(hotmem: boolean, memory: MemorySummary | null, firstLine: string): string {
  const lines = [firstLine, `hotmem: ${hotmem ? 'available' : 'unavailable'}`];
  if (memory) {
    const counts = Object.entries(memory.partitions).map(([state, count]) => `${count} ${state}`);
    lines.push(`partitions: ${counts.join(', ')}`);
    for (const kind of ['plugged', 'spare', 'bound', 'free'] as const) {
      lines.push(`${kind}: ${memory[kind].blocks} block(s), ${formatBytes(memory[kind].bytes)}`);
    }
  }
  return lines.join('\n');
}

function countBy<T>(items: T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] as number))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** Prints expected errors as one line, everything else with its stack; sets the exit code. */
export function handle(error: unknown, argv: string[] = process.argv.slice(2)): void {
  const debug = argv.includes('--debug');
  const exitCode = (error as { exitCode?: number }).exitCode ?? EXIT.runtime;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`hotmem: ${message}\n`);
  if (error instanceof UsageError) process.stderr.write("Run 'hotmem --help' for usage.\n");
  if (debug && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
  process.exitCode = exitCode;
}

/** True when this file is the program (bin link, node or tsx), not when a test imports it. */
function invokedDirectly(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => handle(error),
  );
}
