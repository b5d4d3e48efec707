/**
 * Every error the agent API answers with: one registry of codes, each with its HTTP status and
 * what it means (fastify lib/errors.js style). The body is always {error: {code, message}}.
 * docs/agent-api.md documents each code; a unit test keeps the two in step.
 */

export const AGENT_ERRORS = {
  HOTMEM_INVALID_REQUEST: { status: 400, meaning: 'the body or a parameter failed validation' },
  HOTMEM_INVALID_JSON: { status: 400, meaning: 'the body is not valid JSON' },
  HOTMEM_MALFORMED_REQUEST: { status: 400, meaning: 'the request is not valid HTTP/1.1' },
  HOTMEM_UNAUTHORIZED: { status: 401, meaning: 'TCP listener: missing or wrong bearer token' },
  HOTMEM_NOT_FOUND: { status: 404, meaning: 'no such route' },
  HOTMEM_INSTANCE_NOT_FOUND: { status: 404, meaning: 'no instance with that id' },
  HOTMEM_BINDING_NOT_FOUND: { status: 404, meaning: 'no binding with that name' },
  HOTMEM_METHOD_NOT_ALLOWED: { status: 405, meaning: 'the route exists, not with this method' },
  HOTMEM_REQUEST_TIMEOUT: { status: 408, meaning: 'the request did not arrive in time' },
  HOTMEM_NO_PORT: { status: 409, meaning: 'invoke: the instance was started without a port' },
  HOTMEM_INSTANCE_NOT_RUNNING: {
    status: 409,
    meaning: 'invoke: the instance has exited or is stopping',
  },
  HOTMEM_BINDING_EXISTS: { status: 409, meaning: 'the name is bound to another process' },
  HOTMEM_ALREADY_BOUND: { status: 409, meaning: 'the process is bound to a partition already' },
  HOTMEM_BINDING_BUSY: { status: 409, meaning: 'the partition was not released in time' },
  HOTMEM_BODY_TOO_LARGE: { status: 413, meaning: 'the body exceeds the size limit' },
  HOTMEM_UNSUPPORTED_MEDIA_TYPE: { status: 415, meaning: 'a body that is not application/json' },
  HOTMEM_EXPECTATION_FAILED: { status: 417, meaning: 'an Expect header other than 100-continue' },
  HOTMEM_PROCESS_NOT_FOUND: { status: 422, meaning: 'no process with that pid (it exited)' },
  HOTMEM_SPAWN_FAILED: { status: 422, meaning: 'the command could not be started (e.g. ENOENT)' },
  HOTMEM_HEADERS_TOO_LARGE: { status: 431, meaning: 'the request headers exceed 16 KiB' },
  HOTMEM_NO_PARTITION: {
    status: 503,
    meaning: 'no partition could be populated in time, or one lost its memory before a bind took',
  },
  HOTMEM_UNAVAILABLE: { status: 503, meaning: 'HotMem is not available in this kernel' },
  HOTMEM_SHUTTING_DOWN: { status: 503, meaning: 'the agent is stopping and takes no new work' },
  HOTMEM_INSTANCE_UNREACHABLE: {
    status: 502,
    meaning: 'invoke: the connection to the instance failed or its answer exceeds 1 MiB',
  },
  HOTMEM_INVOKE_TIMEOUT: {
    status: 504,
    meaning: 'invoke: the instance was not ready, or did not answer, within timeoutMs',
  },
  HOTMEM_RECLAIM_FAILED: { status: 500, meaning: 'released, but its reclaim failed' },
  HOTMEM_INTERNAL: { status: 500, meaning: 'an unexpected failure; the agent log has details' },
} as const satisfies Record<string, { status: number; meaning: string }>;

export type AgentErrorCode = keyof typeof AGENT_ERRORS;

export class AgentError extends Error {
  readonly code: AgentErrorCode;
  readonly statusCode: number;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AgentError';
    this.code = code;
    this.statusCode = AGENT_ERRORS[code].status;
  }

  toBody(): { error: { code: AgentErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Anything thrown that is not an AgentError becomes HOTMEM_INTERNAL; its text is not leaked. */
export function toAgentError(error: unknown): AgentError {
  if (error instanceof AgentError) return error;
  return new AgentError('HOTMEM_INTERNAL', 'internal error', { cause: error });
}
