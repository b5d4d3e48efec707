/**
 * One function instance: a command started in its own cgroup and, when HotMem is available,
 * bound to its partition before its first instruction.
 *
 * Binding happens in the launcher (hotmem-exec): it joins the cgroup, binds itself to the
 * partition, then execs the command, so every page the command touches comes from the
 * partition. Without a launcher (stock kernel, unit tests) there is no partition: that is the
 * documented *unbound* mode, where hotmem-relay joins the cgroup before exec (a bare command,
 * without a relay either, is moved in right after spawn and runs its first instructions outside).
 *
 * Its stdout and stderr are pipes to hotmem-relay, which copies them into files in
 * `<outputDir>/<id>/` and bounds them (see OutputFiles): the relay is not the agent, so the
 * instance outlives the agent that started it and still writes, and the agent that adopts it
 * finds its output. The relay comes first in the exec chain (relay, launcher, command), so the
 * pid the agent spawns ends as the command's.
 *
 * Everything an instance acquires is registered on its CleanupStack as it is acquired, and the
 * stack is unwound on every way out: spawn failure, exit, stop, agent shutdown.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { CgroupTree, InstanceCgroup } from '../cgroup.js';
import { isErrnoError } from '../errors.js';
import { CleanupStack } from './cleanup-stack.js';
import { HttpEndpoint } from './http-endpoint.js';
import {
  DEFAULT_OUTPUT_FILE_LIMIT_BYTES,
  OutputFiles,
  type OutputFilesOptions,
} from './output-files.js';
import type { OutputRing } from './output-ring.js';

export const DEFAULT_STOP_GRACE_MS = 5_000;
/** How often an adopted process (not our child, so no exit notification) is checked. */
const ADOPTED_POLL_MS = 200;
/** How long stragglers left in the cgroup after the main process exits get to die. */
const STRAGGLER_WAIT_MS = 2_000;
/** How long the relay gets to copy what the instance's last writes left in its pipes. */
const RELAY_EXIT_WAIT_MS = 2_000;
/** In the instance's output directory: the pid of its hotmem-relay. */
const RELAY_PID_FILE = 'relay.pid';
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface Launcher {
  /** The hotmem-exec executable. */
  path: string;
  /** The HotMem character device; the launcher's default when absent. */
  device?: string;
  /** How long the launcher waits for the partition to be populated. */
  waitMs?: number;
}

/** The pidfd calls of the native binding; without them processes are signalled by pid. */
export interface Pidfds {
  pidfdOpen(pid: number): number;
  pidfdSendSignal(fd: number, signal: number): void;
}

export interface InstanceEnvironment {
  cgroups: CgroupTree;
  /**
   * Told about every child right after spawn(), before any event can be delivered: a subreaper
   * that reaps orphans must leave these to libuv.
   */
  onSpawn?: (child: ChildProcess) => void;
  /** null: spawn the command directly (unbound mode; the spec's partition must be null). */
  launcher: Launcher | null;
  /** The hotmem-relay executable; null: the instance writes its files itself, unbounded. */
  relay: string | null;
  pidfds: Pidfds | null;
  logger: Logger;
  /** Holds one directory of output files per instance, `<outputDir>/<id>/{stdout,stderr}`. */
  outputDir: string;
  /** Bytes of stdout and of stderr kept in memory per instance. */
  outputBytes?: number;
  /** Size at which the relay replaces an output file (DEFAULT_OUTPUT_FILE_LIMIT_BYTES). */
  outputFileLimitBytes?: number;
  /** Log the instance's output line by line (default off). */
  logOutput?: boolean;
}

export interface InstanceSpec {
  id: string;
  command: string[];
  env?: Record<string, string>;
  cwd?: string;
  memoryBytes: number;
  cpuWeight?: number;
  /** null: unbound mode. */
  partition: number | null;
  /** The TCP port on 127.0.0.1 it serves invocations on, if it does. */
  port?: number;
}

export type InstanceState = 'running' | 'stopping' | 'exited';

export interface InstanceExit {
  /** null when killed by a signal, or when an adopted process vanished (code unknowable). */
  code: number | null;
  signal: NodeJS.Signals | null;
  exitedAt: string;
  /** 'stopped': stop() was asked; 'lost': adopted, ended on its own, status unknowable. */
  reason: 'exited' | 'stopped' | 'lost';
}

export interface InstanceSummary {
  id: string;
  /** null for an adopted instance whose process was already gone. */
  pid: number | null;
  partition: number | null;
  command: string[];
  memoryBytes: number;
  cpuWeight: number | null;
  state: InstanceState;
  startedAt: string;
  adopted: boolean;
  exit: InstanceExit | null;
  /** The port it serves invocations on, null when it serves none. */
  port: number | null;
  /** When that port first accepted a connection (the end of its cold start). */
  readyAt: string | null;
}

export interface AdoptSpec {
  id: string;
  /** From the group's cgroup.procs; null when no process of it is left. */
  pid: number | null;
  command: string[];
  memoryBytes: number;
  cpuWeight?: number;
  partition: number | null;
  port?: number;
  startedAt?: string;
}

/**
 * The command could not be started at all; nothing of it is left behind. The message starts with
 * the request field at fault (`command.0`, `cwd`).
 */
export class SpawnError extends Error {
  readonly code: string | undefined;
  constructor(field: string, problem: string, cause?: unknown) {
    super(`${field}: ${problem}`, { cause });
    this.name = 'SpawnError';
    this.code = (cause as NodeJS.ErrnoException | undefined)?.code;
  }
}

export class Instance {
  readonly id: string;
  readonly pid: number | null;
  readonly partition: number | null;
  readonly command: string[];
  readonly memoryBytes: number;
  readonly cpuWeight: number | null;
  readonly startedAt: string;
  readonly adopted: boolean;
  /** null for an adopted instance whose output files were not found. */
  readonly stdout: OutputRing | null;
  readonly stderr: OutputRing | null;
  /** Settles once the main process is gone and the cleanup stack has been unwound. */
  readonly exited: Promise<InstanceExit>;
  readonly endpoint: HttpEndpoint | null;

  private stateValue: InstanceState = 'running';
  private exitValue: InstanceExit | null = null;
  private stopRequested = false;
  private resolveExited!: (exit: InstanceExit) => void;
  private readonly exitListeners: Array<(exit: InstanceExit) => void> = [];

  private constructor(
    init: {
      spec: Omit<InstanceSpec, 'env' | 'cwd'>;
      pid: number | null;
      startedAt: string;
      adopted: boolean;
      output: OutputFiles | null;
    },
    private readonly cgroup: InstanceCgroup,
    private readonly pidfd: number | null,
    private readonly cleanup: CleanupStack,
    private readonly env: InstanceEnvironment,
  ) {
    this.id = init.spec.id;
    this.pid = init.pid;
    this.partition = init.spec.partition;
    this.command = init.spec.command;
    this.memoryBytes = init.spec.memoryBytes;
    this.cpuWeight = init.spec.cpuWeight ?? null;
    this.startedAt = init.startedAt;
    this.adopted = init.adopted;
    this.stdout = init.output?.stdout ?? null;
    this.stderr = init.output?.stderr ?? null;
    this.exited = new Promise((resolve) => {
      this.resolveExited = resolve;
    });
    this.endpoint = init.spec.port === undefined ? null : new HttpEndpoint(init.spec.port);
    const endpoint = this.endpoint;
    if (endpoint) cleanup.push('stop waiting for its port', () => endpoint.close());
  }

  /**
   * Creates the cgroup, spawns the command (through the launcher when there is one) and resolves
   * once the process exists. `cleanup` may already hold the caller's steps (e.g. giving the
   * partition back); they run last. On failure the whole stack is unwound before the rejection.
   */
  static async start(
    spec: InstanceSpec,
    env: InstanceEnvironment,
    cleanup: CleanupStack = new CleanupStack(),
  ): Promise<Instance> {
    const logger = env.logger.child({ instance: spec.id });
    try {
      if (spec.command.length === 0)
        throw new RangeError('command: at least the program is needed');
      if (env.launcher === null && spec.partition !== null) {
        throw new Error(
          `partition ${spec.partition} requested but no launcher is available to bind it`,
        );
      }
      if (spec.cwd !== undefined) checkWorkingDirectory(spec.cwd);
      const searchPath = spec.env?.PATH ?? process.env.PATH ?? DEFAULT_PATH;
      const cgroup = await env.cgroups.create(spec.id, {
        memoryMax: spec.memoryBytes,
        ...(spec.cpuWeight !== undefined && { cpuWeight: spec.cpuWeight }),
      });
      cleanup.push('remove cgroup', () => cgroup.remove());
      const output = followOutput(spec.id, env, logger, cleanup, OutputFiles.create);

      const program = spec.command[0] as string;
      const launch = launchArgv(spec, env.launcher, cgroup.path);
      // The relay execs what spawn() used to, whose failures would then come as exit 127: they
      // still reject here, as spawn() would.
      if (env.relay !== null) checkProgram(launch[0] as string, program, searchPath, spec.cwd);
      const [file, ...args] = [...relayArgv(env, output, cgroup.path), ...launch];
      const child = output.withChildFds((stdout, stderr) => {
        try {
          return spawn(file as string, args, {
            cwd: spec.cwd,
            env: { ...spec.env, PATH: searchPath },
            stdio: ['ignore', stdout, stderr],
            // Its own session: a signal to the agent's process group does not reach instances,
            // the agent stops them itself, in order.
            detached: true,
          });
        } catch (error) {
          // Most exec failures (ENAMETOOLONG, ENOTDIR, E2BIG…) throw here; ENOENT and EACCES
          // come as an 'error' event instead (spawned() below).
          throw cannotStart(program, error);
        }
      });
      env.onSpawn?.(child);
      // Listen before the first await: a short command can exit meanwhile.
      const exited = childExit(child);
      const pid = await spawned(child, program);
      let pidfd: number | null = null;
      try {
        pidfd = env.pidfds ? env.pidfds.pidfdOpen(pid) : null;
        // The launcher or the relay joins before exec; only a bare command is moved in here.
        if (env.launcher === null && env.relay === null) await joinUnlessGone(cgroup, pid);
      } catch (error) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
        if (pidfd !== null) closeSync(pidfd);
        throw error;
      }
      const fd = pidfd;
      if (fd !== null) cleanup.push('close pidfd', () => closeSync(fd));

      const instance = new Instance(
        { spec, pid, startedAt: new Date().toISOString(), adopted: false, output },
        cgroup,
        pidfd,
        cleanup,
        { ...env, logger },
      );
      void exited.then((status) => instance.finish(status));
      logger.info({ pid, partition: spec.partition, command: spec.command }, 'instance started');
      return instance;
    } catch (error) {
      await cleanup.unwind(logger);
      throw error;
    }
  }

  /**
   * Takes over an instance a previous agent started: its cgroup is still there and `pid` was
   * read from its cgroup.procs. It is not our child, so its exit is noticed by polling its
   * pidfd (or pid) and its exit status cannot be known.
   */
  static adopt(
    spec: AdoptSpec,
    env: InstanceEnvironment,
    cleanup: CleanupStack = new CleanupStack(),
  ): Instance {
    const logger = env.logger.child({ instance: spec.id });
    const cgroup = env.cgroups.open(spec.id);
    cleanup.push('remove cgroup', () => cgroup.remove());
    let pidfd: number | null = null;
    if (env.pidfds && spec.pid !== null) {
      try {
        pidfd = env.pidfds.pidfdOpen(spec.pid);
      } catch (error) {
        if (!isErrnoError(error, 'ESRCH')) throw error;
      }
    }
    const fd = pidfd;
    if (fd !== null) cleanup.push('close pidfd', () => closeSync(fd));
    const output = followOutput(spec.id, env, logger, cleanup, OutputFiles.adopt);
    const instance = new Instance(
      {
        spec,
        pid: spec.pid,
        startedAt: spec.startedAt ?? new Date().toISOString(),
        adopted: true,
        output,
      },
      cgroup,
      pidfd,
      cleanup,
      { ...env, logger },
    );
    instance.watchAdopted(spec.pid === null || (env.pidfds !== null && pidfd === null));
    logger.info({ pid: spec.pid, partition: spec.partition }, 'instance adopted');
    return instance;
  }

  get state(): InstanceState {
    return this.stateValue;
  }

  get exit(): InstanceExit | null {
    return this.exitValue;
  }

  onExit(listener: (exit: InstanceExit) => void): void {
    this.exitListeners.push(listener);
  }

  /**
   * SIGTERM, then after graceMs SIGKILL to the whole cgroup (cgroup.kill, or the main process
   * when cgroup.kill is unavailable). Resolves with the exit once cleanup is done.
   */
  async stop(graceMs: number = DEFAULT_STOP_GRACE_MS): Promise<InstanceExit> {
    // Once the exit is recorded the pid may already be reaped and reused: no more signals.
    if (this.exitValue === null) {
      this.stopRequested = true;
      this.stateValue = 'stopping';
      this.env.logger.info({ graceMs }, 'stopping instance');
      this.trySignal(osConstants.signals.SIGTERM);
      const timer = sleep(graceMs, 'timeout' as const, { ref: false });
      const outcome = await Promise.race([this.exited, timer]);
      if (outcome === 'timeout' && this.exitValue === null) {
        this.env.logger.warn({ graceMs }, 'instance ignored SIGTERM, killing it');
        await this.killAll();
      }
    }
    return this.exited;
  }

  summary(): InstanceSummary {
    return {
      id: this.id,
      pid: this.pid,
      partition: this.partition,
      command: this.command,
      memoryBytes: this.memoryBytes,
      cpuWeight: this.cpuWeight,
      state: this.stateValue,
      startedAt: this.startedAt,
      adopted: this.adopted,
      exit: this.exitValue,
      port: this.endpoint?.port ?? null,
      readyAt: this.endpoint?.readyAt ?? null,
    };
  }

  private watchAdopted(alreadyGone: boolean): void {
    if (alreadyGone || !this.isAlive()) {
      void this.finish({ code: null, signal: null });
      return;
    }
    const timer = setInterval(() => {
      if (this.isAlive()) return;
      clearInterval(timer);
      void this.finish({ code: null, signal: null });
    }, ADOPTED_POLL_MS);
    timer.unref();
    this.cleanup.push('stop watching', () => clearInterval(timer));
  }

  private isAlive(): boolean {
    try {
      this.signal(0);
    } catch (error) {
      if (isErrnoError(error, 'ESRCH')) return false;
      throw error;
    }
    return !exitedOrZombie(this.pid as number);
  }

  /** Through the pidfd when there is one: a recycled pid can never be hit. */
  private signal(signal: number): void {
    if (this.pid === null) {
      throw Object.assign(new Error(`instance ${this.id} has no process`), { code: 'ESRCH' });
    }
    if (this.pidfd !== null && this.env.pidfds) {
      this.env.pidfds.pidfdSendSignal(this.pidfd, signal);
    } else {
      process.kill(this.pid, signal);
    }
  }

  private trySignal(signal: number): void {
    try {
      this.signal(signal);
    } catch (error) {
      if (!isErrnoError(error, 'ESRCH')) throw error;
    }
  }

  private async killAll(): Promise<void> {
    if (!(await this.cgroup.kill())) this.trySignal(osConstants.signals.SIGKILL);
  }

  private async finish(status: { code: number | null; signal: NodeJS.Signals | null }) {
    if (this.exitValue) return;
    const exit: InstanceExit = {
      ...status,
      exitedAt: new Date().toISOString(),
      reason: this.stopRequested ? 'stopped' : this.adopted ? 'lost' : 'exited',
    };
    this.exitValue = exit;
    this.env.logger.info({ pid: this.pid, ...status, reason: exit.reason }, 'instance exited');
    try {
      await this.killStragglers();
    } catch (error) {
      this.env.logger.warn({ err: error }, 'could not kill the processes left in the cgroup');
    }
    // Unwinding reads the last output, then removes the files.
    await this.cleanup.unwind(this.env.logger);
    this.stateValue = 'exited';
    this.resolveExited(exit);
    for (const listener of this.exitListeners) listener(exit);
  }

  /**
   * The instance ends with its main process: whatever it left running in the cgroup would keep
   * the partition bound, so it is killed too.
   */
  private async killStragglers(): Promise<void> {
    const deadline = Date.now() + STRAGGLER_WAIT_MS;
    let killed = false;
    for (;;) {
      const left = (await this.cgroup.pids()).filter((pid) => pid !== this.pid && pidExists(pid));
      if (left.length === 0) return;
      if (Date.now() > deadline) {
        throw new Error(`processes ${left.join(', ')} still in ${this.cgroup.path}`);
      }
      if (!killed) {
        this.env.logger.info({ pids: left }, 'killing processes left in the cgroup');
        if (!(await this.cgroup.kill())) {
          for (const pid of left) killIgnoringGone(pid);
        }
        killed = true;
      }
      await sleep(20);
    }
  }
}

/**
 * hotmem-relay and its options, ending in `--`; nothing without a relay. It joins the cgroup only
 * when no launcher does, after starting the relay outside it.
 */
function relayArgv(env: InstanceEnvironment, output: OutputFiles, cgroupPath: string): string[] {
  if (env.relay === null) return [];
  return [
    env.relay,
    '--stdout',
    output.filePath('stdout'),
    '--stderr',
    output.filePath('stderr'),
    '--limit-bytes',
    String(env.outputFileLimitBytes ?? DEFAULT_OUTPUT_FILE_LIMIT_BYTES),
    '--pid-file',
    path.join(output.dir, RELAY_PID_FILE),
    ...(env.launcher === null ? ['--cgroup', cgroupPath] : []),
    '--',
  ];
}

function launchArgv(spec: InstanceSpec, launcher: Launcher | null, cgroupPath: string): string[] {
  if (!launcher) return spec.command;
  return [
    launcher.path,
    ...(launcher.device ? ['--device', launcher.device] : []),
    ...(spec.partition !== null ? ['--partition', String(spec.partition)] : []),
    ...(spec.partition !== null && launcher.waitMs !== undefined
      ? ['--wait-ms', String(launcher.waitMs)]
      : []),
    '--cgroup',
    cgroupPath,
    '--',
    ...spec.command,
  ];
}

function spawned(child: ChildProcess, program: string): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid as number));
    child.once('error', (error) => reject(cannotStart(program, error)));
  });
}

/** Names the program, cut to a length fit for an error message, and the errno. */
function cannotStart(program: string, error: unknown): SpawnError {
  const shown = program.length > 64 ? `${program.slice(0, 64)}…` : program;
  const { code, syscall } = error as NodeJS.ErrnoException;
  const reason = code ? `${syscall ?? 'spawn'} ${code}` : String((error as Error)?.message);
  return new SpawnError('command.0', `cannot start '${shown}': ${reason}`, error);
}

/** The checks spawn() would fail on less clearly (a missing cwd reads as a missing program). */
function checkWorkingDirectory(cwd: string): void {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(cwd).isDirectory();
  } catch (error) {
    const problem = isErrnoError(error, 'ENOENT')
      ? 'does not exist'
      : `cannot be used: ${(error as NodeJS.ErrnoException).code}`;
    throw new SpawnError('cwd', `'${cwd}' ${problem}`, error);
  }
  if (!isDirectory) throw new SpawnError('cwd', `'${cwd}' is not a directory`);
}

/**
 * That execvp() will find file: searched on searchPath unless it has a slash, as execvp() does;
 * the first error that is not "not here" stops the search. Throws a SpawnError naming program.
 */
function checkProgram(
  file: string,
  program: string,
  searchPath: string,
  cwd: string | undefined,
): void {
  const candidates = file.includes('/')
    ? [path.resolve(cwd ?? '.', file)]
    : searchPath.split(':').map((dir) => path.resolve(cwd ?? '.', dir || '.', file));
  let denied = false;
  for (const candidate of candidates) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return;
      denied = true;
    } catch (error) {
      if (isErrnoError(error, 'EACCES')) denied = true;
      else if (!isErrnoError(error, 'ENOENT') && !isErrnoError(error, 'ENOTDIR')) {
        throw cannotStart(program, {
          code: (error as NodeJS.ErrnoException).code,
          syscall: 'spawn',
        });
      }
    }
  }
  throw cannotStart(program, { code: denied ? 'EACCES' : 'ENOENT', syscall: 'spawn' });
}

interface ChildStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function childExit(child: ChildProcess): Promise<ChildStatus> {
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

/**
 * Opens the instance's output files (creating them, or finding an earlier agent's) and registers
 * their cleanup: stop following after a last read, then remove them. Cleanup runs once the
 * instance's processes are gone, so no process of it writes to them any more.
 */
function followOutput<Output extends OutputFiles | null>(
  id: string,
  env: InstanceEnvironment,
  logger: Logger,
  cleanup: CleanupStack,
  open: (dir: string, options: OutputFilesOptions) => Output,
): Output {
  const dir = path.join(env.outputDir, id);
  cleanup.push('remove output files', () => rm(dir, { recursive: true, force: true }));
  const output = open(dir, {
    logger,
    logLines: env.logOutput ?? false,
    ...(env.outputBytes !== undefined && { keptBytes: env.outputBytes }),
  });
  if (output) {
    cleanup.push('stop following output', async () => {
      await relayExit(dir, logger);
      output.close();
    });
  }
  return output;
}

/**
 * Once the instance's processes are gone the relay copies what they left in its pipes and exits;
 * the last read waits for that, a bounded time. No pid file: no relay (or it never started).
 */
async function relayExit(dir: string, logger: Logger): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(path.join(dir, RELAY_PID_FILE), 'utf8'), 10);
  } catch (error) {
    if (isErrnoError(error, 'ENOENT')) return;
    throw error;
  }
  const deadline = Date.now() + RELAY_EXIT_WAIT_MS;
  while (pidExists(pid)) {
    if (Date.now() > deadline) {
      logger.warn({ relayPid: pid }, 'output relay still running: its last output may be missed');
      return;
    }
    await sleep(10);
  }
}

/** Unbound mode moves the process in after spawn; one that already exited cannot be moved. */
async function joinUnlessGone(cgroup: InstanceCgroup, pid: number): Promise<void> {
  try {
    await cgroup.addProcess(pid);
  } catch (error) {
    if (!isErrnoError(error, 'ESRCH')) throw error;
  }
}

/** A live process: one that exists and is not a zombie waiting for its parent to reap it. */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if (isErrnoError(error, 'ESRCH')) return false;
  }
  return !exitedOrZombie(pid);
}

/**
 * An adopted process is not our child: once it exits it may stay a zombie until its new parent
 * (init, which in some containers never reaps) collects it. For us it has exited.
 */
function exitedOrZombie(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (error) {
    return isErrnoError(error, 'ENOENT');
  }
  // The state follows the command name, which is in parentheses and may contain anything.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === 'Z' || state === 'X';
}

function killIgnoringGone(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (error) {
    if (!isErrnoError(error, 'ESRCH')) throw error;
  }
}
