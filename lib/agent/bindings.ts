/**
 * Processes the agent did not start, each bound to a partition of its own: an OCI runtime's
 * containers, attached by `hotmem oci-hook` after the container's process exists and before it
 * runs user code. The kernel keeps the binding across execve and into forked children; this
 * module names bindings, persists them for a restarted agent, and answers once a binding's
 * partition is reclaimed. Reclaiming stays the Agent's: it reclaims every partition the kernel
 * reports released, and this module follows its events.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { isErrnoError } from '../errors.js';
import type { Agent, AgentEvent, SerializedReclaimReport } from './agent.js';
import { AgentError } from './errors.js';
import { bindingNameSchema, type CreateBindingRequest } from './schemas.js';

const DEFAULT_RELEASE_TIMEOUT_MS = 10_000;
/** Bindings whose partition is gone stay listed until this many newer ones are gone too. */
const DEFAULT_RETAIN_SETTLED = 256;
/**
 * How long a bind may wait for its partition. The kernel refuses a partition that is being
 * reclaimed, unplugged or offlined with EBUSY, as it refuses a process bound elsewhere; a bind
 * that waits sleeps through the former instead, so that EBUSY means only the latter, and
 * ETIMEDOUT that the partition lost its memory meanwhile.
 */
const BIND_WAIT_MS = 2_000;
/**
 * Partitions a binding tries: one whose memory virtio-mem took while it was populated but not yet
 * bound (ETIMEDOUT) is given back and another one acquired, as often as this.
 */
const BIND_ATTEMPTS = 3;

/** The kernel calls binding needs; production passes the addon's. */
export interface ProcessBinder {
  /** pidfd_open(2): pins the process, so that a recycled pid cannot be bound by mistake. */
  pidfdOpen(pid: number): number;
  /** HOTMEM_IOC_BIND of the process behind pidfd, waiting up to waitMs for the partition. */
  bind(pidfd: number, partition: number, waitMs: number): Promise<void>;
  closeFd(fd: number): void;
}

export interface BindingsOptions {
  /** Owns the partitions: acquires, reclaims and lists them; without HotMem, HOTMEM_UNAVAILABLE. */
  agent: Agent;
  /** null: no native addon to open pidfds and bind with; binding answers HOTMEM_UNAVAILABLE. */
  binder: ProcessBinder | null;
  logger: Logger;
  /** One record `<name>.json` per binding, read back by a restarted agent. */
  stateDir: string;
  /** How long a release waits for the kernel to report the partition released and reclaimed. */
  releaseTimeoutMs?: number;
  retainSettled?: number;
}

export type BindingState = 'binding' | 'bound' | 'reclaimed' | 'reclaim-failed';

export interface BindingSummary {
  name: string;
  pid: number;
  /** null while a partition is being acquired. */
  partition: number | null;
  /** What was asked for; the partition holds whole memory blocks, at least this much. */
  memoryBytes: number;
  boundAt: string;
  state: BindingState;
}

export interface ReleasedBinding {
  name: string;
  pid: number;
  partition: number;
  /** null when the partition was reclaimed while no agent was watching. */
  reclaim: SerializedReclaimReport | null;
}

const bindingRecordSchema = z.object({
  name: bindingNameSchema,
  pid: z.number().int().positive(),
  partition: z.number().int().nonnegative(),
  memoryBytes: z.number().int().positive(),
  boundAt: z.string(),
});

type BindingRecord = z.infer<typeof bindingRecordSchema>;

type Outcome = { report: SerializedReclaimReport | null } | { error: string };

interface Binding {
  name: string;
  pid: number;
  memoryBytes: number;
  partition: number | null;
  boundAt: string;
  /** Settles once the process is bound, or rejects (and the binding is forgotten). */
  ready: Promise<void>;
  outcome?: Outcome;
  /** Resolves once outcome is set. */
  settled: Promise<void>;
  settle(outcome: Outcome): void;
}

export class Bindings {
  private readonly options: BindingsOptions;
  private readonly logger: Logger;
  private readonly bindings = new Map<string, Binding>();
  private unsubscribe: (() => void) | undefined;

  constructor(options: BindingsOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'bindings' });
  }

  /**
   * Call after Agent.start(): adopts the bindings a previous agent recorded. One whose partition
   * is still bound is watched again; one whose partition is empty was reclaimed meanwhile (by
   * the agent's start, which reclaims every partition left free).
   */
  async start(): Promise<void> {
    this.unsubscribe = this.options.agent.subscribe((event) => this.onAgentEvent(event));
    const entries = await readdir(this.options.stateDir).catch((error: unknown) => {
      if (isErrnoError(error, 'ENOENT')) return [];
      throw error;
    });
    if (entries.length === 0) return;
    const views = this.options.agent.health().hotmem ? await this.options.agent.partitions() : [];
    const records: BindingRecord[] = [];
    for (const entry of entries) {
      const record = await this.readRecord(entry);
      if (record) records.push(record);
    }
    // Listed in the order they were made, as before the restart.
    records.sort((a, b) => a.boundAt.localeCompare(b.boundAt));
    for (const record of records) {
      const binding = newBinding(record, Promise.resolve());
      const state = views.find((view) => view.id === record.partition)?.state;
      if (state === 'empty' || state === undefined) binding.settle({ report: null });
      else if (state === 'free')
        binding.settle({ error: 'released while no agent was watching, and not reclaimed' });
      this.bindings.set(record.name, binding);
      this.logger.info({ binding: record, partitionState: state }, 'adopted a binding');
    }
  }

  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  list(): BindingSummary[] {
    return [...this.bindings.values()].map(summarize);
  }

  /**
   * Binds the process to a new partition of at least memoryBytes. Asking again with the same
   * name and pid answers the existing binding (an OCI runtime may run the hook at two stages);
   * the same name with another pid is a conflict.
   */
  async bind(
    request: CreateBindingRequest,
  ): Promise<{ binding: BindingSummary; created: boolean }> {
    if (this.options.agent.health().status === 'shutting-down') {
      throw new AgentError('HOTMEM_SHUTTING_DOWN', 'the agent is shutting down');
    }
    const { agent, binder } = this.options;
    const hotmem = agent.health().hotmem;
    if (!hotmem || !binder) {
      throw new AgentError(
        'HOTMEM_UNAVAILABLE',
        hotmem
          ? 'this agent has no native addon to bind processes with'
          : 'this kernel has no HotMem partitions (/dev/hotmem)',
      );
    }
    const existing = this.bindings.get(request.name);
    if (existing) {
      if (existing.pid !== request.pid) {
        throw new AgentError(
          'HOTMEM_BINDING_EXISTS',
          `'${request.name}' is bound to pid ${existing.pid}, not ${request.pid}: release it first`,
        );
      }
      await existing.ready;
      return { binding: summarize(existing), created: false };
    }
    const binding = newBinding({ ...request, partition: null, boundAt: new Date().toISOString() });
    binding.ready = this.attach(binding, binder);
    this.bindings.set(request.name, binding);
    try {
      await binding.ready;
    } catch (error) {
      this.bindings.delete(request.name);
      throw error;
    }
    this.logger.info({ binding: summarize(binding) }, 'process bound');
    this.pruneSettled();
    return { binding: summarize(binding), created: true };
  }

  /**
   * Forgets the binding once its partition is reclaimed, waiting up to releaseTimeoutMs for the
   * kernel to report it released (the container's processes gone) and the agent to reclaim it.
   * Still bound after that: HOTMEM_BINDING_BUSY, and the binding stays for another try.
   */
  async release(name: string): Promise<ReleasedBinding> {
    const binding = this.bindings.get(name);
    if (!binding) throw new AgentError('HOTMEM_BINDING_NOT_FOUND', `no binding '${name}'`);
    // A bind still in flight: wait for it; if it fails, there is nothing to release.
    await binding.ready.catch(() => undefined);
    if (this.bindings.get(name) !== binding || binding.partition === null) {
      throw new AgentError('HOTMEM_BINDING_NOT_FOUND', `no binding '${name}'`);
    }
    const timeoutMs = this.options.releaseTimeoutMs ?? DEFAULT_RELEASE_TIMEOUT_MS;
    if (!binding.outcome) await settledWithin(binding.settled, timeoutMs);
    const { outcome, partition } = binding;
    if (!outcome) {
      const view = (await this.options.agent.partitions()).find(
        (candidate) => candidate.id === partition,
      );
      const holders = view?.boundMms ? ` with ${view.boundMms} process(es) bound` : '';
      throw new AgentError(
        'HOTMEM_BINDING_BUSY',
        `partition ${partition} of '${name}' is still ${view?.state ?? 'unknown'}${holders} after ${timeoutMs} ms; the binding is kept, release it again once they have exited`,
      );
    }
    await this.forget(binding);
    if ('error' in outcome) {
      throw new AgentError(
        'HOTMEM_RECLAIM_FAILED',
        `partition ${partition} of '${name}' was released but not reclaimed: ${outcome.error}`,
      );
    }
    return { name, pid: binding.pid, partition, reclaim: outcome.report };
  }

  /**
   * pidfd first (the process must exist), then the partition, the record, and the bind; a
   * partition that lost its memory before the bind took is given back and another one tried.
   */
  private async attach(binding: Binding, binder: ProcessBinder): Promise<void> {
    let pidfd: number;
    try {
      pidfd = binder.pidfdOpen(binding.pid);
    } catch (error) {
      throw processError(error, binding.pid);
    }
    try {
      for (let attempt = 1; ; attempt++) {
        const lease = await this.options.agent.acquirePartition(binding.memoryBytes);
        binding.partition = lease.partition;
        // Recorded before the bind: an agent killed right after it still adopts the binding.
        await this.writeRecord(binding);
        try {
          await binder.bind(pidfd, lease.partition, BIND_WAIT_MS);
          return;
        } catch (error) {
          binding.partition = null;
          await this.removeRecord(binding.name);
          // Acquired but never bound: the kernel will never report it released.
          void this.options.agent.reclaimPartition(lease.partition);
          if (!isErrnoError(error, 'ETIMEDOUT') || attempt === BIND_ATTEMPTS)
            throw bindError(error, binding.pid, lease.partition);
          this.logger.warn(
            { binding: binding.name, partition: lease.partition, attempt },
            'partition lost its memory before the bind took; acquiring another',
          );
        }
      }
    } finally {
      binder.closeFd(pidfd);
    }
  }

  /** The agent reclaimed (or failed to reclaim) a partition: settles the binding holding it. */
  private onAgentEvent(event: AgentEvent): void {
    if (event.type !== 'partition-reclaimed' && event.type !== 'partition-reclaim-failed') return;
    const binding = [...this.bindings.values()].find(
      (candidate) => candidate.partition === event.partition && !candidate.outcome,
    );
    if (!binding) return;
    binding.settle(
      event.type === 'partition-reclaimed' ? { report: event.report } : { error: event.error },
    );
    this.logger.info({ binding: summarize(binding) }, 'bound partition reclaimed');
  }

  private async forget(binding: Binding): Promise<void> {
    this.bindings.delete(binding.name);
    await this.removeRecord(binding.name);
  }

  /** Bindings nobody released (no poststop ran) must not pile up: the oldest settled go. */
  private pruneSettled(): void {
    const limit = this.options.retainSettled ?? DEFAULT_RETAIN_SETTLED;
    const settled = [...this.bindings.values()].filter((binding) => binding.outcome);
    for (const binding of settled.slice(0, Math.max(0, settled.length - limit))) {
      void this.forget(binding);
    }
  }

  private recordPath(name: string): string {
    return path.join(this.options.stateDir, `${name}.json`);
  }

  private async writeRecord(binding: Binding): Promise<void> {
    const record: BindingRecord = bindingRecordSchema.parse({ ...binding });
    // Made with the first binding: an agent that binds nothing leaves no trace.
    await mkdir(this.options.stateDir, { recursive: true, mode: 0o700 });
    await writeFile(this.recordPath(binding.name), `${JSON.stringify(record)}\n`, {
      mode: 0o600,
    });
  }

  private removeRecord(name: string): Promise<void> {
    return rm(this.recordPath(name), { force: true });
  }

  /** A record, or undefined (logged, and removed) for anything that is not one. */
  private async readRecord(entry: string): Promise<BindingRecord | undefined> {
    const file = path.join(this.options.stateDir, entry);
    try {
      const record = bindingRecordSchema.parse(JSON.parse(await readFile(file, 'utf8')));
      if (`${record.name}.json` !== entry) throw new Error(`names binding '${record.name}'`);
      return record;
    } catch (error) {
      this.logger.warn({ err: error, file }, 'removing an unusable binding record');
      await rm(file, { recursive: true, force: true });
      return undefined;
    }
  }
}

function newBinding(
  fields: Omit<Binding, 'ready' | 'settled' | 'settle' | 'outcome'>,
  ready: Promise<void> = Promise.resolve(),
): Binding {
  let resolve: () => void = () => undefined;
  const settled = new Promise<void>((done) => {
    resolve = done;
  });
  const binding: Binding = {
    ...fields,
    ready,
    settled,
    settle(outcome) {
      binding.outcome ??= outcome;
      resolve();
    },
  };
  return binding;
}

function summarize(binding: Binding): BindingSummary {
  const { outcome } = binding;
  return {
    name: binding.name,
    pid: binding.pid,
    partition: binding.partition,
    memoryBytes: binding.memoryBytes,
    boundAt: binding.boundAt,
    state: !outcome
      ? binding.partition === null
        ? 'binding'
        : 'bound'
      : 'error' in outcome
        ? 'reclaim-failed'
        : 'reclaimed',
  };
}

function settledWithin(settled: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([settled, timeout]).finally(() => clearTimeout(timer));
}

/** The kernel's answers about the process, as the API's codes; anything else stays internal. */
function processError(error: unknown, pid: number): unknown {
  const code = (error as { code?: unknown }).code;
  if (code === 'ESRCH') {
    return new AgentError('HOTMEM_PROCESS_NOT_FOUND', `no process ${pid}: it has exited`, {
      cause: error,
    });
  }
  if (code === 'EBUSY') {
    return new AgentError(
      'HOTMEM_ALREADY_BOUND',
      `process ${pid} is bound to another partition already (an instance's, or another binding's)`,
      { cause: error },
    );
  }
  return error;
}

/** A failed HOTMEM_IOC_BIND, as the agent answers it. */
function bindError(error: unknown, pid: number, partition: number): unknown {
  if (isErrnoError(error, 'ETIMEDOUT')) {
    return new AgentError(
      'HOTMEM_NO_PARTITION',
      `partition ${partition} did not take the bind of process ${pid} within ${BIND_WAIT_MS} ms: it was reclaimed, unplugged or offlined meanwhile, as were the ${BIND_ATTEMPTS - 1} acquired before it`,
      { cause: error },
    );
  }
  return processError(error, pid);
}
