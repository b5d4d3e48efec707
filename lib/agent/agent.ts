/**
 * The agent's state and behaviour, without HTTP: instances, their partitions, reclaim after
 * release, events, metrics, adoption after a restart, orderly shutdown.
 *
 * The agent owns every partition policy: when a partition is reclaimed (after its release, at
 * start, at shutdown, after dropped kernel events), that one reclaim runs per partition at a time,
 * and that each is timed and reported once. The PartitionManager only does what it is asked.
 *
 * Every dependency is injected: the PartitionManager (a fake in unit tests), the cgroup tree, the
 * launcher, the pidfd and reaper primitives.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { CgroupTree } from '../cgroup.js';
import type { PartitionInfo, PartitionState } from '../hotmem-device.js';
import { CleanupStack } from '../instance/cleanup-stack.js';
import { InvocationError, type InvocationResult } from '../instance/http-endpoint.js';
import {
  DEFAULT_STOP_GRACE_MS,
  Instance,
  type InstanceEnvironment,
  type InstanceSummary,
  type Launcher,
  type Pidfds,
  pidExists,
  SpawnError,
} from '../instance/instance.js';
import type { Acquired, ManagerStatus, PartitionManagerApi } from '../partition-manager.js';
import { AgentError } from './errors.js';
import { Histogram, type MetricFamily, RECLAIM_BUCKETS_SECONDS, renderMetrics } from './metrics.js';
import {
  type CreateInstanceRequest,
  DEFAULT_INVOKE_TIMEOUT_MS,
  type InvokeRequest,
  instanceIdSchema,
} from './schemas.js';

export const DEFAULT_STATE_DIR = '/run/hotmem/instances';
const DEFAULT_ACQUIRE_TIMEOUT_MS = 10_000;
/** Exited instances stay listed (with their exit status) until this many newer ones exited. */
const DEFAULT_RETAIN_EXITED = 256;

const PARTITION_STATES: readonly PartitionState[] = ['empty', 'free', 'bound', 'reclaiming'];

/** A partition as the kernel reports it, with the instance the agent populated it for. */
export type AgentPartition = PartitionInfo & { instance: string | null };

export interface BlockCount {
  blocks: number;
  bytes: number;
}

export interface Reaper {
  setChildSubreaper(): void;
  reapOrphans(
    knownPids: number[],
  ): Array<{ pid: number; code: number | null; signal: string | null }>;
}

export interface AgentOptions {
  /** null: HotMem is not available; instances run unbound. */
  partitions: PartitionManagerApi | null;
  cgroups: CgroupTree;
  /** null: no hotmem-exec; instances run unbound even if partitions exist. */
  launcher: Launcher | null;
  /** The hotmem-relay executable; null: instances' output files are not bounded. */
  outputRelay: string | null;
  pidfds: Pidfds | null;
  /** null: the agent is not a subreaper (unit tests). */
  reaper: Reaper | null;
  logger: Logger;
  /**
   * Per instance a JSON record `<id>.json`, read back to adopt instances after a restart, and its
   * output files `<id>/stdout` and `<id>/stderr`.
   */
  stateDir?: string;
  acquireTimeoutMs?: number;
  spill?: boolean;
  stopGraceMs?: number;
  retainExited?: number;
  /** Log instances' output line by line (default off: one instance could flood the log). */
  logOutput?: boolean;
}

export interface SerializedReclaimReport {
  partition: number;
  blocks: number;
  bytes: number;
  durationNs: number;
  pagesMigrated: number;
}

export type AgentEvent = { time: string } & (
  | { type: 'instance-started'; instance: InstanceSummary }
  | { type: 'instance-ready'; instance: InstanceSummary }
  | { type: 'instance-exited'; instance: InstanceSummary }
  | { type: 'partition-released'; partition: number }
  | { type: 'partition-reclaimed'; partition: number; report: SerializedReclaimReport }
  | { type: 'partition-reclaim-failed'; partition: number; error: string }
);

type AgentEventBody = AgentEvent extends infer E
  ? E extends AgentEvent
    ? Omit<E, 'time'>
    : never
  : never;

export interface MemorySummary {
  /** All hot-plugged memory the guest has: in partitions or spare. */
  plugged: BlockCount;
  /** Plugged, offline, in no partition yet: what acquire() populates partitions from. */
  spare: BlockCount;
  /** In partitions a process is bound to. */
  bound: BlockCount;
  /** In populated partitions no process is bound to. */
  free: BlockCount;
  partitions: Record<PartitionState, number>;
}

export interface AgentHealth {
  /** degraded: the kernel's event stream failed, partitions are no longer reclaimed on release. */
  status: 'ok' | 'degraded' | 'shutting-down';
  hotmem: boolean;
  binding: 'bound' | 'unbound';
  instancesRunning: number;
  uptimeSeconds: number;
}

const instanceRecordSchema = z.object({
  id: z.string(),
  /** null until the process exists. */
  pid: z.number().int().positive().nullable(),
  command: z.array(z.string()),
  memoryBytes: z.number().int().positive(),
  cpuWeight: z.number().int().nullable(),
  partition: z.number().int().nonnegative().nullable(),
  /** Absent in records written before instances had ports. */
  port: z.number().int().min(1).max(65535).nullable().optional(),
  startedAt: z.string(),
});

type InstanceRecord = z.infer<typeof instanceRecordSchema>;

export class Agent {
  private readonly options: AgentOptions;
  private readonly logger: Logger;
  private readonly stateDir: string;
  private readonly instances = new Map<string, Instance>();
  /** partition -> id of the instance it was acquired for. */
  private readonly leases = new Map<number, string>();
  private readonly reclaims = new Map<number, Promise<void>>();
  /** Children spawned by child_process and not yet exited: libuv reaps those, not the reaper. */
  private readonly childPids = new Set<number>();
  private readonly events = new EventEmitter();
  private readonly reclaimSeconds = new Histogram(RECLAIM_BUCKETS_SECONDS);
  private readonly counters = {
    pagesMigrated: 0,
    reclaimed: 0,
    reclaimFailures: 0,
    instancesStarted: 0,
    instancesExited: 0,
    orphansReaped: 0,
  };
  private readonly startedAtMs = Date.now();
  private readonly disposers: Array<() => void> = [];
  private shuttingDown: Promise<void> | undefined;
  private eventStreamFailed = false;

  constructor(options: AgentOptions) {
    this.options = options;
    this.logger = options.logger;
    this.stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
    this.events.setMaxListeners(0);
  }

  /** Binding needs both a partition source and the launcher that binds before exec. */
  get bindsInstances(): boolean {
    return this.options.partitions !== null && this.options.launcher !== null;
  }

  async start(): Promise<void> {
    const { partitions, reaper } = this.options;
    await this.options.cgroups.prepare();
    // Records hold each instance's full argv: the agent's user's only, also in a directory
    // that an earlier version made 0755.
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    await chmod(this.stateDir, 0o700);
    if (reaper) {
      reaper.setChildSubreaper();
      const onChild = () => this.reapOrphans(reaper);
      process.on('SIGCHLD', onChild);
      this.disposers.push(() => process.off('SIGCHLD', onChild));
    }
    if (partitions) {
      await partitions.init();
      this.followPartitionEvents(partitions);
    }
    if (partitions && !this.options.launcher) {
      this.logger.warn('HotMem is available but hotmem-exec is not: instances will run unbound');
    }
    await this.adoptSurvivors();
    await this.removeLeftovers();
    await this.reclaimUnused();
    this.logger.info(
      { hotmem: partitions !== null, binding: this.bindsInstances ? 'bound' : 'unbound' },
      'agent started',
    );
  }

  async createInstance(request: CreateInstanceRequest): Promise<Instance> {
    if (this.shuttingDown)
      throw new AgentError('HOTMEM_SHUTTING_DOWN', 'the agent is shutting down');
    const id = `i-${randomBytes(6).toString('hex')}`;
    const cleanup = new CleanupStack();
    let partition: number | null = null;
    if (this.bindsInstances && this.options.partitions) {
      partition = (await this.acquirePartition(request.memoryBytes)).partition;
      const leased = partition;
      this.leases.set(leased, id);
      cleanup.push('release partition bookkeeping', () => {
        this.leases.delete(leased);
      });
    }
    const record: InstanceRecord = {
      id,
      pid: null,
      command: request.command,
      memoryBytes: request.memoryBytes,
      cpuWeight: request.cpuWeight ?? null,
      partition,
      port: request.port ?? null,
      startedAt: new Date().toISOString(),
    };
    let instance: Instance;
    try {
      if (this.shuttingDown) {
        throw new AgentError('HOTMEM_SHUTTING_DOWN', 'the agent is shutting down');
      }
      await this.writeRecord(record);
      cleanup.push('remove state record', () => this.removeRecord(id));
      instance = await Instance.start(
        {
          id,
          command: request.command,
          memoryBytes: request.memoryBytes,
          partition,
          ...(request.env && { env: request.env }),
          ...(request.cwd && { cwd: request.cwd }),
          ...(request.cpuWeight !== undefined && { cpuWeight: request.cpuWeight }),
          ...(request.port !== undefined && { port: request.port }),
        },
        this.instanceEnvironment(),
        cleanup,
      );
    } catch (error) {
      await cleanup.unwind(this.logger);
      // Acquired but never bound: no release will ever be reported for it.
      if (partition !== null) void this.reclaimPartition(partition);
      if (error instanceof SpawnError) throw new AgentError('HOTMEM_SPAWN_FAILED', error.message);
      throw error;
    }
    this.register(instance);
    await this.recordPid(record, instance);
    this.counters.instancesStarted += 1;
    this.emit({ type: 'instance-started', instance: instance.summary() });
    return instance;
  }

  listInstances(): InstanceSummary[] {
    return [...this.instances.values()].map((instance) => instance.summary());
  }

  getInstance(id: string): Instance {
    const instance = instanceIdSchema.safeParse(id).success ? this.instances.get(id) : undefined;
    if (!instance) throw new AgentError('HOTMEM_INSTANCE_NOT_FOUND', `no instance '${id}'`);
    return instance;
  }

  /**
   * Relays one invocation to the instance's port. A starting instance is waited for (its cold
   * start is part of the invocation), within the same timeout.
   */
  async invoke(id: string, request: InvokeRequest): Promise<InvocationResult> {
    const instance = this.getInstance(id);
    const { endpoint } = instance;
    if (!endpoint) {
      throw new AgentError('HOTMEM_NO_PORT', `instance '${id}' was started without a port`);
    }
    const timeoutMs = request.timeoutMs ?? DEFAULT_INVOKE_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const notRunning = () =>
      new AgentError('HOTMEM_INSTANCE_NOT_RUNNING', `instance '${id}' is ${instance.state}`);
    if (instance.state !== 'running') throw notRunning();
    const timer = new AbortController();
    const waited = await Promise.race([
      endpoint.ready.then(() => 'ready' as const),
      instance.exited.then(() => 'exited' as const),
      sleep(timeoutMs, 'timeout' as const, { signal: timer.signal }).catch(
        () => 'timeout' as const,
      ),
    ]).finally(() => timer.abort());
    if (waited === 'exited') throw notRunning();
    if (waited === 'timeout') {
      throw new AgentError(
        'HOTMEM_INVOKE_TIMEOUT',
        `instance '${id}': port ${endpoint.port} did not accept connections in ${timeoutMs} ms`,
      );
    }
    try {
      return await endpoint.invoke(request.payload, Math.max(1, deadline - Date.now()));
    } catch (error) {
      if (!(error instanceof InvocationError)) throw error;
      if (error.reason === 'timeout')
        throw new AgentError('HOTMEM_INVOKE_TIMEOUT', `instance '${id}': ${error.message}`);
      if (instance.state !== 'running') throw notRunning();
      throw new AgentError('HOTMEM_INSTANCE_UNREACHABLE', `instance '${id}': ${error.message}`);
    }
  }

  async stopInstance(id: string, graceMs?: number): Promise<InstanceSummary> {
    const instance = this.getInstance(id);
    await instance.stop(graceMs ?? this.options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS);
    return instance.summary();
  }

  async partitions(): Promise<AgentPartition[]> {
    const { partitions } = await this.requirePartitions().status();
    return partitions.map((info) => ({ ...info, instance: this.leases.get(info.id) ?? null }));
  }

  /** From one status() of the manager: one listing of the memory blocks per call. */
  async memory(): Promise<MemorySummary> {
    return summarizeStatus(await this.requirePartitions().status());
  }

  health(): AgentHealth {
    return {
      status: this.shuttingDown ? 'shutting-down' : this.eventStreamFailed ? 'degraded' : 'ok',
      hotmem: this.options.partitions !== null,
      binding: this.bindsInstances ? 'bound' : 'unbound',
      instancesRunning: this.runningInstances().length,
      uptimeSeconds: Math.round((Date.now() - this.startedAtMs) / 1000),
    };
  }

  async metrics(): Promise<string> {
    const families: MetricFamily[] = [
      {
        name: 'hotmem_reclaim_duration_seconds',
        help: 'Time from asking the kernel to reclaim a partition until its blocks were offline.',
        type: 'histogram',
        histogram: this.reclaimSeconds,
      },
      counter('hotmem_reclaims_total', 'Partitions reclaimed.', this.counters.reclaimed),
      counter(
        'hotmem_reclaim_failures_total',
        'Reclaims that failed.',
        this.counters.reclaimFailures,
      ),
      counter(
        'hotmem_pages_migrated_total',
        'Pages migrated by reclaims (0 when partitions work).',
        this.counters.pagesMigrated,
      ),
      counter(
        'hotmem_instances_started_total',
        'Instances started.',
        this.counters.instancesStarted,
      ),
      counter(
        'hotmem_instances_exited_total',
        'Instances that exited.',
        this.counters.instancesExited,
      ),
      counter(
        'hotmem_orphans_reaped_total',
        'Orphaned processes reaped as subreaper.',
        this.counters.orphansReaped,
      ),
      {
        name: 'hotmem_instances_running',
        help: 'Instances whose main process is alive.',
        type: 'gauge',
        samples: [{ value: this.runningInstances().length }],
      },
    ];
    if (this.options.partitions) {
      const memory = await this.memory();
      families.push(
        {
          name: 'hotmem_partitions',
          help: 'Partitions by state.',
          type: 'gauge',
          samples: PARTITION_STATES.map((state) => ({
            labels: { state },
            value: memory.partitions[state],
          })),
        },
        gauge(
          'hotmem_plugged_bytes',
          'Hot-plugged bytes: in partitions or spare.',
          memory.plugged.bytes,
        ),
        gauge('hotmem_spare_bytes', 'Plugged bytes in no partition yet.', memory.spare.bytes),
        gauge(
          'hotmem_bound_bytes',
          'Bytes in partitions bound to an instance.',
          memory.bound.bytes,
        ),
        gauge(
          'hotmem_free_bytes',
          'Bytes in populated partitions bound to nothing.',
          memory.free.bytes,
        ),
      );
    }
    return renderMetrics(families);
  }

  /** Calls listener for every event from now on; returns the unsubscribe function. */
  subscribe(listener: (event: AgentEvent) => void): () => void {
    this.events.on('event', listener);
    return () => this.events.off('event', listener);
  }

  /**
   * Stops taking work, stops running instances newest first, reclaims every partition left
   * populated and unbound, and detaches from signals and the partition source. Idempotent.
   */
  shutdown(): Promise<void> {
    this.shuttingDown ??= this.runShutdown();
    return this.shuttingDown;
  }

  private async runShutdown(): Promise<void> {
    const grace = this.options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
    this.logger.info({ instances: this.runningInstances().length }, 'shutting down');
    // Newest first; again until none is left, for one that was being started meanwhile.
    for (
      let running = this.runningInstances();
      running.length > 0;
      running = this.runningInstances()
    ) {
      for (const instance of running.reverse()) await instance.stop(grace);
    }
    await this.reclaimUnused();
    await Promise.all(this.reclaims.values());
    for (const dispose of this.disposers.splice(0)) dispose();
    this.logger.info('agent stopped');
  }

  private followPartitionEvents(partitions: PartitionManagerApi): void {
    const onReleased = ({ partition }: { partition: number }) => {
      this.emit({ type: 'partition-released', partition });
      void this.reclaimPartition(partition);
    };
    const onOverflow = () => {
      this.logger.warn('kernel dropped events: reclaiming every unused partition');
      void this.reclaimUnused();
    };
    const onStreamError = ({ error }: { error: Error }) => {
      this.eventStreamFailed = true;
      this.logger.error({ err: error }, 'kernel event stream failed: releases go unseen');
    };
    partitions.on('released', onReleased);
    partitions.on('overflow', onOverflow);
    partitions.on('streamError', onStreamError);
    this.disposers.push(() => {
      partitions.off('released', onReleased);
      partitions.off('overflow', onOverflow);
      partitions.off('streamError', onStreamError);
    });
  }

  /**
   * Reclaims every populated partition no running instance holds: left free by instances that
   * ended while no agent was watching, or by those just stopped at shutdown.
   */
  private async reclaimUnused(): Promise<void> {
    const { partitions } = this.options;
    if (!partitions) return;
    const held = new Set(
      this.runningInstances()
        .map((instance) => instance.partition)
        .filter((partition) => partition !== null),
    );
    const unused = (await partitions.status()).partitions.filter(
      (info) => info.state === 'free' && !held.has(info.id),
    );
    await Promise.all(unused.map((info) => this.reclaimPartition(info.id)));
  }

  /**
   * A partition populated with at least `bytes`, for an instance or a binding; the caller binds
   * it, or gives it back with reclaimPartition() if it cannot.
   */
  async acquirePartition(bytes: number): Promise<Acquired> {
    try {
      return await this.requirePartitions().acquire(bytes, {
        timeoutMs: this.options.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS,
        spill: this.options.spill ?? false,
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (
        code === 'ERR_PARTITION_TIMEOUT' ||
        code === 'ERR_NO_MEMORY' ||
        code === 'ERR_NO_PARTITION'
      ) {
        throw new AgentError('HOTMEM_NO_PARTITION', (error as Error).message, { cause: error });
      }
      throw error;
    }
  }

  /**
   * One reclaim per partition at a time, counted and reported as an event, never thrown: the
   * only path by which partitions are reclaimed.
   */
  reclaimPartition(partition: number): Promise<void> {
    const source = this.options.partitions;
    if (!source) return Promise.resolve();
    const pending = this.reclaims.get(partition);
    if (pending) return pending;
    const started = process.hrtime.bigint();
    const run = source
      .reclaim(partition)
      .then((report) => {
        this.reclaimSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
        this.counters.reclaimed += 1;
        this.counters.pagesMigrated += report.pagesMigrated;
        const serialized = { ...report, durationNs: Number(report.durationNs) };
        this.logger.info({ report: serialized }, 'partition reclaimed');
        this.emit({ type: 'partition-reclaimed', partition, report: serialized });
      })
      .catch((error: unknown) => {
        this.counters.reclaimFailures += 1;
        this.logger.error({ err: error, partition }, 'reclaim failed');
        this.emit({
          type: 'partition-reclaim-failed',
          partition,
          error: String((error as Error)?.message ?? error),
        });
      })
      .finally(() => this.reclaims.delete(partition));
    this.reclaims.set(partition, run);
    return run;
  }

  private instanceEnvironment(): InstanceEnvironment {
    return {
      cgroups: this.options.cgroups,
      launcher: this.bindsInstances ? this.options.launcher : null,
      relay: this.options.outputRelay,
      pidfds: this.options.pidfds,
      logger: this.logger,
      outputDir: this.stateDir,
      logOutput: this.options.logOutput ?? false,
      onSpawn: (child: ChildProcess) => {
        const { pid } = child;
        if (pid === undefined) return;
        this.childPids.add(pid);
        child.once('exit', () => this.childPids.delete(pid));
      },
    };
  }

  private register(instance: Instance): void {
    this.instances.set(instance.id, instance);
    void instance.endpoint?.ready.then(() =>
      this.emit({ type: 'instance-ready', instance: instance.summary() }),
    );
    instance.onExit(() => {
      this.counters.instancesExited += 1;
      this.emit({ type: 'instance-exited', instance: instance.summary() });
      this.pruneExited();
    });
  }

  private pruneExited(): void {
    const limit = this.options.retainExited ?? DEFAULT_RETAIN_EXITED;
    const exited = [...this.instances.values()].filter((instance) => instance.state === 'exited');
    for (const instance of exited.slice(0, Math.max(0, exited.length - limit))) {
      this.instances.delete(instance.id);
    }
  }

  private runningInstances(): Instance[] {
    return [...this.instances.values()].filter((instance) => instance.state !== 'exited');
  }

  private reapOrphans(reaper: Reaper): void {
    try {
      for (const orphan of reaper.reapOrphans([...this.childPids])) {
        this.counters.orphansReaped += 1;
        this.logger.debug({ orphan }, 'reaped orphan');
      }
    } catch (error) {
      this.logger.error({ err: error }, 'reaping orphans failed');
    }
  }

  /**
   * After a restart: every group under <cgroupRoot>/hotmem that looks like ours becomes an
   * instance again, watched through the pid its cgroup.procs lists; groups with no live process
   * are reported as exited and cleaned up.
   */
  private async adoptSurvivors(): Promise<void> {
    for (const id of await this.options.cgroups.list()) {
      if (!instanceIdSchema.safeParse(id).success) {
        this.logger.warn({ cgroup: id }, 'leaving a group that is not an instance id alone');
        continue;
      }
      const record = await this.readRecord(id);
      const group = this.options.cgroups.open(id);
      const alive = (await group.pids()).filter(pidExists);
      const recorded = record?.pid ?? null;
      const pid = recorded !== null && alive.includes(recorded) ? recorded : (alive[0] ?? null);
      const cleanup = new CleanupStack();
      const partition = record?.partition ?? null;
      if (partition !== null) {
        this.leases.set(partition, id);
        cleanup.push('release partition bookkeeping', () => {
          this.leases.delete(partition);
        });
      }
      cleanup.push('remove state record', () => this.removeRecord(id));
      const instance = Instance.adopt(
        {
          id,
          pid,
          command: record?.command ?? [],
          memoryBytes: record?.memoryBytes ?? (await group.memoryMax()) ?? 0,
          partition,
          ...(record?.cpuWeight != null && { cpuWeight: record.cpuWeight }),
          ...(record?.port != null && { port: record.port }),
          ...(record && { startedAt: record.startedAt }),
        },
        this.instanceEnvironment(),
        cleanup,
      );
      this.register(instance);
    }
  }

  /**
   * State of instances that no longer exist, left by an agent killed while cleaning one up: a
   * record or output files with no instance group.
   */
  private async removeLeftovers(): Promise<void> {
    for (const entry of await readdir(this.stateDir)) {
      const id = entry.replace(/\.json$/, '');
      if (!instanceIdSchema.safeParse(id).success || this.instances.has(id)) continue;
      this.logger.info({ instance: id, entry }, 'removing the state of an instance that is gone');
      await rm(path.join(this.stateDir, entry), { recursive: true, force: true });
    }
  }

  private recordPath(id: string): string {
    return path.join(this.stateDir, `${id}.json`);
  }

  private async writeRecord(record: InstanceRecord): Promise<void> {
    await writeFile(this.recordPath(record.id), `${JSON.stringify(record)}\n`, { mode: 0o600 });
  }

  private removeRecord(id: string): Promise<void> {
    return rm(this.recordPath(id), { force: true });
  }

  /**
   * Adds the pid to the record once the process exists. The instance may exit (and its cleanup
   * remove the record) meanwhile; then the rewritten record is removed again.
   */
  private async recordPid(record: InstanceRecord, instance: Instance): Promise<void> {
    const exited = (): boolean => instance.state === 'exited';
    if (exited()) return;
    await this.writeRecord({ ...record, pid: instance.pid });
    if (exited()) await this.removeRecord(record.id);
  }

  private async readRecord(id: string): Promise<InstanceRecord | undefined> {
    try {
      return instanceRecordSchema.parse(JSON.parse(await readFile(this.recordPath(id), 'utf8')));
    } catch (error) {
      this.logger.warn({ err: error, instance: id }, 'no usable state record; adopting without it');
      return undefined;
    }
  }

  private requirePartitions(): PartitionManagerApi {
    if (!this.options.partitions) {
      throw new AgentError(
        'HOTMEM_UNAVAILABLE',
        'this kernel has no HotMem partitions (/dev/hotmem)',
      );
    }
    return this.options.partitions;
  }

  private emit(body: AgentEventBody): void {
    this.events.emit('event', { time: new Date().toISOString(), ...body } as AgentEvent);
  }
}

/** The manager's status as /v1/memory reports it: spare is its offline blocks. */
export function summarizeStatus(status: ManagerStatus): MemorySummary {
  return summarizeMemory(status.partitions, {
    blocks: status.offlineBytes / status.blockSize,
    bytes: status.offlineBytes,
  });
}

export function summarizeMemory(
  views: Array<Pick<PartitionInfo, 'state' | 'nrBlocks' | 'presentBytes'>>,
  spare: BlockCount,
): MemorySummary {
  const summary: MemorySummary = {
    plugged: { ...spare },
    spare: { ...spare },
    bound: { blocks: 0, bytes: 0 },
    free: { blocks: 0, bytes: 0 },
    partitions: { empty: 0, free: 0, bound: 0, reclaiming: 0 },
  };
  for (const view of views) {
    summary.partitions[view.state] += 1;
    summary.plugged.blocks += view.nrBlocks;
    summary.plugged.bytes += view.presentBytes;
    if (view.state === 'bound' || view.state === 'free') {
      summary[view.state].blocks += view.nrBlocks;
      summary[view.state].bytes += view.presentBytes;
    }
  }
  return summary;
}

const counter = (name: string, help: string, value: number): MetricFamily => ({
  name,
  help,
  type: 'counter',
  samples: [{ value }],
});

const gauge = (name: string, help: string, value: number): MetricFamily => ({
  name,
  help,
  type: 'gauge',
  samples: [{ value }],
});
