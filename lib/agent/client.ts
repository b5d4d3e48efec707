/**
 * A small client for the agent API, used by the CLI's --agent mode and by tests.
 */
import http from 'node:http';
import type { InvocationResult } from '../instance/http-endpoint.js';
import type { InstanceSummary } from '../instance/instance.js';
import type { AgentEvent, AgentHealth, AgentPartition, MemorySummary } from './agent.js';
import type { BindingSummary, ReleasedBinding } from './bindings.js';
import {
  type CreateBindingRequest,
  type CreateInstanceRequest,
  DEFAULT_INVOKE_TIMEOUT_MS,
  type InvokeRequest,
  type StopInstanceRequest,
} from './schemas.js';
import type { Endpoint, SubscriberDropped } from './server.js';

const DEFAULT_TIMEOUT_MS = 30_000;
const INVOKE_MARGIN_MS = 5_000;
/** What the agent waits before SIGKILL when a stop names no grace (docs/agent-api.md). */
const AGENT_DEFAULT_GRACE_MS = 5_000;

/** A non-2xx answer; code and message come from the agent's {error: {code, message}}. */
export class AgentRequestError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'AgentRequestError';
    this.status = status;
    this.code = code;
  }
}

export class AgentClient {
  private readonly endpoint: Endpoint;
  private readonly timeoutMs: number;

  constructor(endpoint: Endpoint, options: { timeoutMs?: number } = {}) {
    this.endpoint = endpoint;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  health(): Promise<AgentHealth> {
    return this.json('GET', '/v1/health') as Promise<AgentHealth>;
  }

  async partitions(): Promise<AgentPartition[]> {
    return ((await this.json('GET', '/v1/partitions')) as { partitions: never }).partitions;
  }

  memory(): Promise<MemorySummary> {
    return this.json('GET', '/v1/memory') as Promise<MemorySummary>;
  }

  createInstance(
    request: CreateInstanceRequest,
  ): Promise<{ id: string; pid: number; partition: number | null }> {
    return this.json('POST', '/v1/instances', request) as Promise<never>;
  }

  /** Binds an existing process to a new partition (the same name and pid again: the same). */
  createBinding(request: CreateBindingRequest): Promise<BindingSummary> {
    return this.json('POST', '/v1/bindings', request) as Promise<never>;
  }

  async bindings(): Promise<BindingSummary[]> {
    return ((await this.json('GET', '/v1/bindings')) as { bindings: never }).bindings;
  }

  /** Answers once the binding's partition is reclaimed. */
  releaseBinding(name: string): Promise<ReleasedBinding> {
    return this.json('DELETE', `/v1/bindings/${encodeURIComponent(name)}`) as Promise<never>;
  }

  /**
   * Stops an instance; resolves with its summary once it has exited and been cleaned up. The
   * agent answers after the grace it was given (its own default when none), so this waits for
   * the grace on top of the usual timeout.
   */
  stopInstance(id: string, request: StopInstanceRequest = {}): Promise<InstanceSummary> {
    const path = `/v1/instances/${encodeURIComponent(id)}/stop`;
    const timeoutMs = (request.graceMs ?? AGENT_DEFAULT_GRACE_MS) + this.timeoutMs;
    return this.json('POST', path, request, timeoutMs) as Promise<never>;
  }

  /** Relays one invocation to the instance's port; the agent's timeout is `timeoutMs`. */
  invoke(id: string, request: InvokeRequest = {}): Promise<InvocationResult> {
    // The agent answers by then: give it its timeout and a margin, not ours.
    const timeoutMs = (request.timeoutMs ?? DEFAULT_INVOKE_TIMEOUT_MS) + INVOKE_MARGIN_MS;
    const path = `/v1/instances/${encodeURIComponent(id)}/invoke`;
    return this.json('POST', path, request, timeoutMs) as Promise<never>;
  }

  /** Sends one request; resolves with the parsed JSON (or text) body of a 2xx answer. */
  async json(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body?: unknown,
    timeoutMs: number | null = this.timeoutMs,
  ): Promise<unknown> {
    const response = await this.send(method, path, body, timeoutMs);
    const text = await readAll(response);
    const type = response.headers['content-type'] ?? '';
    const parsed: unknown = type.startsWith('application/json') ? JSON.parse(text) : text;
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return parsed;
    const error = (parsed as { error?: { code?: string; message?: string } }).error;
    throw new AgentRequestError(
      status,
      error?.code ?? 'UNKNOWN',
      error?.message ?? `${method} ${path} -> ${status}`,
    );
  }

  /**
   * Subscribes to the event stream: resolves once the agent accepted the subscription, so no
   * event after that point is missed. Leaving the loop closes the connection. A reader that
   * falls behind gets a last SubscriberDropped record, then the stream ends.
   */
  async events(): Promise<AsyncGenerator<AgentEvent | SubscriberDropped>> {
    const response = await this.send('GET', '/v1/events', undefined, null);
    if (response.statusCode !== 200) {
      throw new AgentRequestError(response.statusCode ?? 0, 'UNKNOWN', await readAll(response));
    }
    return ndjson(response);
  }

  private send(
    method: string,
    path: string,
    body: unknown,
    timeoutMs: number | null,
  ): Promise<http.IncomingMessage> {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const target =
      'socketPath' in this.endpoint
        ? { socketPath: this.endpoint.socketPath }
        : { host: this.endpoint.host, port: this.endpoint.port };
    const headers: http.OutgoingHttpHeaders = {
      ...(data && { 'content-type': 'application/json', 'content-length': data.length }),
      ...('token' in this.endpoint && { authorization: `Bearer ${this.endpoint.token}` }),
    };
    return new Promise((resolve, reject) => {
      const request = http.request({ ...target, method, path, headers }, resolve);
      request.on('error', reject);
      if (timeoutMs !== null) {
        request.setTimeout(timeoutMs, () => {
          request.destroy(
            new Error(`${method} ${path}: no answer from the agent in ${timeoutMs} ms`),
          );
        });
      }
      request.end(data);
    });
  }
}

async function readAll(stream: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function* ndjson(
  response: http.IncomingMessage,
): AsyncGenerator<AgentEvent | SubscriberDropped> {
  let pending = '';
  try {
    for await (const chunk of response) {
      const lines = (pending + (chunk as Buffer).toString('utf8')).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line) yield JSON.parse(line) as AgentEvent | SubscriberDropped;
    }
  } finally {
    response.destroy();
  }
}
