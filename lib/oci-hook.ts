/**
 * `hotmem oci-hook <stage>`: an OCI runtime hook (runtime-spec, config.md "POSIX-platform
 * Hooks") that gives a container a HotMem partition of its own, through the running agent so
 * that one component owns partitions.
 *
 * - createRuntime or prestart: the container's process exists and has not run user code: it is
 *   bound (POST /v1/bindings) to a partition sized from the bundle's
 *   linux.resources.memory.limit, or from the dev.hotmem.memory-bytes annotation.
 * - poststop: the binding is released (DELETE /v1/bindings/<id>), answered once the partition
 *   is reclaimed.
 *
 * The runtime writes the container's state to stdin; a non-zero exit fails the container
 * operation, and the runtime reports this hook's stderr.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { AgentClient, AgentRequestError } from './agent/client.js';
import { LIMITS } from './agent/schemas.js';

/** An explicit partition size in bytes, for a container with no memory limit or a larger one. */
export const MEMORY_ANNOTATION = 'dev.hotmem.memory-bytes';

export const OCI_HOOK_STAGES = ['createRuntime', 'prestart', 'poststop'] as const;
export type OciHookStage = (typeof OCI_HOOK_STAGES)[number];

/** When no agent answers, or the agent has no HotMem: fail the container, or run it unbound. */
export type IfUnavailable = 'fail' | 'unbound';

const MAX_STATE_BYTES = 1024 * 1024;
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** The runtime's state (runtime.md "State"); runtimes may add fields, so it is not strict. */
const stateSchema = z.object({
  ociVersion: z.string().max(64),
  id: z.string().min(1).max(1024),
  status: z.string().max(64),
  pid: z.number().int().nonnegative().optional(),
  bundle: z.string().min(1).max(LIMITS.pathChars),
  annotations: z.record(z.string(), z.string()).optional(),
});

/** What the hook reads of the bundle's config.json. */
const configSchema = z.object({
  annotations: z.record(z.string(), z.string()).optional(),
  linux: z
    .object({
      resources: z
        .object({
          memory: z.object({ limit: z.number().int().optional() }).optional(),
        })
        .optional(),
    })
    .optional(),
});

type ContainerState = z.infer<typeof stateSchema>;

/** Fails the container operation with exitCode; the message is what the runtime reports. */
export class OciHookError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'OciHookError';
    this.exitCode = exitCode;
  }
}

export interface OciHookOptions {
  stage: OciHookStage;
  /** The state JSON the runtime wrote to stdin. */
  state: string;
  socketPath: string;
  ifUnavailable: IfUnavailable;
  /** Where the hook says why a container runs unbound. */
  warn: (line: string) => void;
}

export type OciHookOutcome =
  | { action: 'bound'; partition: number; memoryBytes: number }
  | { action: 'released'; partition: number; pagesMigrated: number | null }
  | { action: 'unbound'; reason: string }
  | { action: 'nothing-bound' };

export async function runOciHook(options: OciHookOptions): Promise<OciHookOutcome> {
  const state = parseState(options.state);
  const client = new AgentClient({ socketPath: options.socketPath });
  const unbound = (reason: string): OciHookOutcome => {
    if (options.ifUnavailable === 'fail') {
      throw new OciHookError(
        `container ${state.id}: ${reason} (--if-unavailable unbound would run it unbound)`,
        3,
      );
    }
    options.warn(`container ${state.id} runs unbound: ${reason}`);
    return { action: 'unbound', reason };
  };
  if (options.stage === 'poststop') {
    try {
      const released = await client.releaseBinding(state.id);
      return {
        action: 'released',
        partition: released.partition,
        pagesMigrated: released.reclaim?.pagesMigrated ?? null,
      };
    } catch (error) {
      // The container ran unbound, or its bind failed: nothing to give back.
      if (error instanceof AgentRequestError && error.code === 'HOTMEM_BINDING_NOT_FOUND') {
        return { action: 'nothing-bound' };
      }
      const reason = unavailability(error, options.socketPath);
      if (reason) return unbound(reason);
      throw agentFailure(error, state.id, 'release');
    }
  }
  if (!state.pid) {
    throw new OciHookError(
      `container ${state.id}: the state has no pid (status '${state.status}'); run this hook at createRuntime or prestart`,
    );
  }
  const memoryBytes = await partitionSize(state);
  if (memoryBytes === null) {
    // Not a HotMem container, whatever --if-unavailable says: there is no size to reserve.
    const reason = `no ${MEMORY_ANNOTATION} annotation and no linux.resources.memory.limit to size a partition from`;
    options.warn(`container ${state.id} runs unbound: ${reason}`);
    return { action: 'unbound', reason };
  }
  try {
    const binding = await client.createBinding({ name: state.id, pid: state.pid, memoryBytes });
    return { action: 'bound', partition: binding.partition as number, memoryBytes };
  } catch (error) {
    const reason = unavailability(error, options.socketPath);
    if (reason) return unbound(reason);
    throw agentFailure(error, state.id, 'bind');
  }
}

function parseState(text: string): ContainerState {
  if (Buffer.byteLength(text) > MAX_STATE_BYTES) {
    throw new OciHookError(`the state on stdin exceeds ${MAX_STATE_BYTES} bytes`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new OciHookError(
      `the state on stdin is not JSON (${(error as Error).message}); is this running as an OCI hook?`,
    );
  }
  const parsed = stateSchema.safeParse(json);
  if (!parsed.success) {
    throw new OciHookError(`the state on stdin is not an OCI state: ${issues(parsed.error)}`);
  }
  return parsed.data;
}

/**
 * The annotation (state first, then config.json) wins over the memory limit; null when neither
 * gives a size (no limit, or -1: unlimited). A size the agent could not serve fails the hook.
 */
async function partitionSize(state: ContainerState): Promise<number | null> {
  const config = await readConfig(state.bundle);
  const annotation =
    state.annotations?.[MEMORY_ANNOTATION] ?? config.annotations?.[MEMORY_ANNOTATION];
  let bytes: number;
  let source: string;
  if (annotation !== undefined) {
    if (!/^\d{1,16}$/.test(annotation)) {
      throw new OciHookError(
        `container ${state.id}: annotation ${MEMORY_ANNOTATION}='${annotation.slice(0, 64)}' is not a number of bytes`,
      );
    }
    bytes = Number(annotation);
    source = `annotation ${MEMORY_ANNOTATION}`;
  } else {
    const limit = config.linux?.resources?.memory?.limit;
    if (limit === undefined || limit < 0) return null;
    bytes = limit;
    source = 'linux.resources.memory.limit';
  }
  if (bytes < LIMITS.memoryBytesMin || bytes > LIMITS.memoryBytesMax) {
    throw new OciHookError(
      `container ${state.id}: ${source} is ${bytes} bytes; a partition holds 4 MiB (${LIMITS.memoryBytesMin}) to 1 TiB (${LIMITS.memoryBytesMax})`,
    );
  }
  return bytes;
}

async function readConfig(bundle: string): Promise<z.infer<typeof configSchema>> {
  const file = path.join(bundle, 'config.json');
  try {
    const { size } = await stat(file);
    if (size > MAX_CONFIG_BYTES) throw new Error(`larger than ${MAX_CONFIG_BYTES} bytes`);
    const parsed = configSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    if (!parsed.success) throw new Error(issues(parsed.error));
    return parsed.data;
  } catch (error) {
    throw new OciHookError(`${file}: ${(error as Error).message}`);
  }
}

/** Why the agent cannot bind anything, when that is the failure: absent, or no HotMem. */
function unavailability(error: unknown, socketPath: string): string | undefined {
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOENT' || code === 'ECONNREFUSED') {
    return `no HotMem agent listening on ${socketPath} (${code})`;
  }
  if (
    error instanceof AgentRequestError &&
    (error.code === 'HOTMEM_UNAVAILABLE' || error.code === 'HOTMEM_SHUTTING_DOWN')
  ) {
    return `the agent cannot bind: ${error.message}`;
  }
  return undefined;
}

function agentFailure(error: unknown, id: string, what: 'bind' | 'release'): OciHookError {
  const detail =
    error instanceof AgentRequestError
      ? `${error.code}: ${error.message}`
      : (error as Error).message;
  return new OciHookError(`container ${id}: ${what} failed: ${detail}`);
}

const issues = (error: z.ZodError) =>
  error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.join('.') || 'state'}: ${issue.message}`)
    .join('; ');
