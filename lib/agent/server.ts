/**
 * The agent's HTTP/JSON API on node:http: a unix socket by default, or TCP with a bearer token.
 * Routes, body limits and the error mapping live here; behaviour lives in Agent.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { lstat, mkdir, unlink } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type stream from 'node:stream';
import type { Logger } from 'pino';
import { isErrnoError } from '../errors.js';
import type { Agent } from './agent.js';
import type { Bindings } from './bindings.js';
import { AgentError, toAgentError } from './errors.js';
import {
  bindingNameSchema,
  createBindingSchema,
  createInstanceSchema,
  invokeSchema,
  LIMITS,
  parseRequest,
  stopInstanceSchema,
} from './schemas.js';

export const DEFAULT_SOCKET_PATH = '/run/hotmem/agent.sock';

/** The last record of an event stream the agent ended because its reader fell behind. */
export interface SubscriberDropped {
  type: 'subscriber-dropped';
  time: string;
  reason: string;
}

export type Endpoint = { socketPath: string } | { host: string; port: number; token: string };

/** What one client may cost the agent (documented in docs/agent-api.md). */
export interface ServerLimits {
  /** The request line and headers must have arrived by then, or 408 and the connection closes. */
  headersTimeoutMs: number;
  /** The whole request, body included. */
  requestTimeoutMs: number;
  /** Connections at once, event streams included; more are closed unanswered as they come. */
  maxConnections: number;
  /** How long close() lets requests in flight finish before it closes every connection. */
  shutdownGraceMs: number;
  /** Unsent bytes an event subscriber may fall behind by before it is dropped. */
  eventBacklogBytes: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  maxConnections: 128,
  shutdownGraceMs: 2_000,
  eventBacklogBytes: 1024 * 1024,
};

/** While connections are refused over the cap, at most one warning per this interval. */
const REFUSAL_WARNING_INTERVAL_MS = 10_000;

/** How long a dropped event subscriber has to read its backlog before the connection is cut. */
const DROPPED_SUBSCRIBER_LINGER_MS = 5_000;

export interface AgentServerOptions {
  agent: Agent;
  bindings: Bindings;
  logger: Logger;
  endpoint: Endpoint;
  limits?: Partial<ServerLimits>;
}

interface RouteContext {
  request: http.IncomingMessage;
  response: http.ServerResponse;
  params: string[];
}

type Method = 'GET' | 'POST' | 'DELETE';

interface Route {
  pattern: RegExp;
  methods: Partial<Record<Method, (context: RouteContext) => Promise<void>>>;
}

export class AgentServer {
  private readonly server: http.Server;
  private readonly agent: Agent;
  private readonly bindings: Bindings;
  private readonly logger: Logger;
  private readonly endpoint: Endpoint;
  private readonly routes: Route[];
  private readonly streams = new Set<http.ServerResponse>();
  private readonly limits: ServerLimits;
  /** Connections refused over the cap since the last warning, while warnings are held back. */
  private refusedConnections = 0;
  private refusalWarningsHeld = false;

  private constructor(options: AgentServerOptions) {
    this.agent = options.agent;
    this.bindings = options.bindings;
    this.logger = options.logger;
    this.endpoint = options.endpoint;
    this.limits = { ...DEFAULT_SERVER_LIMITS, ...options.limits };
    this.routes = this.buildRoutes();
    this.server = http.createServer(
      {
        headersTimeout: this.limits.headersTimeoutMs,
        requestTimeout: this.limits.requestTimeoutMs,
        // How often both timeouts are checked (Node's default, 30 s, would let them run over).
        connectionsCheckingInterval: Math.min(1_000, this.limits.headersTimeoutMs / 2),
      },
      (request, response) => {
        void this.handle(request, response);
      },
    );
    this.server.maxConnections = this.limits.maxConnections;
    this.server.on('drop', () => this.onConnectionRefused());
    // With this listener Node leaves `Expect: 100-continue` to readJson(), which sends the 100
    // only once the request is authorized and routed: no body is asked for that goes unread.
    this.server.on('checkContinue', (request, response) => {
      void this.handle(request, response);
    });
    this.server.on('checkExpectation', (request, response) => {
      const error = new AgentError(
        'HOTMEM_EXPECTATION_FAILED',
        `expect: only 100-continue is supported, not '${shorten(String(request.headers.expect))}'`,
      );
      response.shouldKeepAlive = false;
      sendJson(response, error.statusCode, error.toBody());
    });
    this.server.on('clientError', (error: ParserError, socket) =>
      this.onClientError(error, socket),
    );
  }

  static async listen(options: AgentServerOptions): Promise<AgentServer> {
    const server = new AgentServer(options);
    await server.start();
    return server;
  }

  /** The socket path, or host:port with the port actually bound. */
  get address(): string {
    if ('socketPath' in this.endpoint) return this.endpoint.socketPath;
    const bound = this.server.address() as net.AddressInfo;
    return `${this.endpoint.host}:${bound.port}`;
  }

  /**
   * Stops accepting connections, ends event streams, lets requests in flight finish for
   * shutdownGraceMs, then closes every connection left (half-sent requests, stalled readers).
   */
  async close(): Promise<void> {
    for (const stream of this.streams) stream.end();
    this.streams.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const grace = setTimeout(() => {
      this.logger.info('closing the connections left after the shutdown grace');
      this.server.closeAllConnections();
    }, this.limits.shutdownGraceMs);
    await closed;
    clearTimeout(grace);
    if ('socketPath' in this.endpoint) await unlink(this.endpoint.socketPath).catch(() => {});
  }

  private async start(): Promise<void> {
    if ('socketPath' in this.endpoint) {
      const { socketPath } = this.endpoint;
      await ensurePrivateDirectory(path.dirname(socketPath));
      await removeStaleSocket(socketPath);
      // Whoever can connect can start processes as root: the socket is the owner's only from
      // the moment bind() creates it. The umask is process-wide, so it is narrowed just for the
      // bind, which listen() does synchronously.
      const umask = process.umask(0o177);
      try {
        await this.listenOn({ path: socketPath });
      } finally {
        process.umask(umask);
      }
    } else {
      if (this.endpoint.token.length === 0)
        throw new Error('a TCP listener needs a non-empty token');
      await this.listenOn({ port: this.endpoint.port, host: this.endpoint.host });
    }
    this.logger.info({ address: this.address }, 'agent API listening');
  }

  /** Binds before it returns (the caller's umask applies to the socket); resolves once listening. */
  private listenOn(options: net.ListenOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(options, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  private buildRoutes(): Route[] {
    const { agent, bindings } = this;
    return [
      {
        pattern: /^\/v1\/health$/,
        methods: { GET: async ({ response }) => sendJson(response, 200, agent.health()) },
      },
      {
        pattern: /^\/v1\/instances$/,
        methods: {
          GET: async ({ response }) =>
            sendJson(response, 200, { instances: agent.listInstances() }),
          POST: async ({ request, response }) => {
            const body = parseRequest(
              createInstanceSchema,
              await readJson(request, response),
              'body',
            );
            const instance = await agent.createInstance(body);
            response.setHeader('location', `/v1/instances/${instance.id}`);
            sendJson(response, 201, {
              id: instance.id,
              pid: instance.pid,
              partition: instance.partition,
            });
          },
        },
      },
      {
        pattern: /^\/v1\/instances\/([^/]+)$/,
        methods: {
          GET: async ({ response, params }) => {
            const instance = agent.getInstance(params[0] as string);
            sendJson(response, 200, {
              ...instance.summary(),
              output: {
                stdout: instance.stdout?.toString() ?? null,
                stderr: instance.stderr?.toString() ?? null,
              },
            });
          },
        },
      },
      {
        pattern: /^\/v1\/instances\/([^/]+)\/stop$/,
        methods: {
          POST: async ({ request, response, params }) => {
            const body = parseRequest(
              stopInstanceSchema,
              (await readJson(request, response)) ?? {},
              'body',
            );
            sendJson(response, 200, await agent.stopInstance(params[0] as string, body.graceMs));
          },
        },
      },
      {
        pattern: /^\/v1\/instances\/([^/]+)\/invoke$/,
        methods: {
          POST: async ({ request, response, params }) => {
            const body = parseRequest(
              invokeSchema,
              (await readJson(request, response)) ?? {},
              'body',
            );
            sendJson(response, 200, await agent.invoke(params[0] as string, body));
          },
        },
      },
      {
        pattern: /^\/v1\/bindings$/,
        methods: {
          GET: async ({ response }) => sendJson(response, 200, { bindings: bindings.list() }),
          POST: async ({ request, response }) => {
            const body = parseRequest(
              createBindingSchema,
              await readJson(request, response),
              'body',
            );
            const { binding, created } = await bindings.bind(body);
            response.setHeader('location', `/v1/bindings/${binding.name}`);
            sendJson(response, created ? 201 : 200, binding);
          },
        },
      },
      {
        pattern: /^\/v1\/bindings\/([^/]+)$/,
        methods: {
          DELETE: async ({ response, params }) => {
            const name = parseRequest(bindingNameSchema, params[0], 'name');
            sendJson(response, 200, await bindings.release(name));
          },
        },
      },
      {
        pattern: /^\/v1\/partitions$/,
        methods: {
          GET: async ({ response }) =>
            sendJson(response, 200, { partitions: await agent.partitions() }),
        },
      },
      {
        pattern: /^\/v1\/memory$/,
        methods: { GET: async ({ response }) => sendJson(response, 200, await agent.memory()) },
      },
      {
        pattern: /^\/v1\/events$/,
        methods: { GET: async ({ request, response }) => this.streamEvents(request, response) },
      },
      {
        pattern: /^\/metrics$/,
        methods: {
          GET: async ({ response }) => {
            const text = await agent.metrics();
            response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
            response.end(text);
          },
        },
      },
    ];
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse) {
    const started = process.hrtime.bigint();
    try {
      this.authorize(request);
      const pathname = requestPath(request.url ?? '');
      const route = this.routes.find((candidate) => candidate.pattern.test(pathname));
      if (!route) throw new AgentError('HOTMEM_NOT_FOUND', `no route ${pathname}`);
      const handler = route.methods[request.method as Method];
      if (!handler) {
        response.setHeader('allow', Object.keys(route.methods).join(', '));
        throw new AgentError(
          'HOTMEM_METHOD_NOT_ALLOWED',
          `${request.method} is not allowed on ${pathname}`,
        );
      }
      const params = (route.pattern.exec(pathname) ?? []).slice(1).map(decodePathSegment);
      await handler({ request, response, params });
    } catch (caught) {
      if (isDisconnect(caught)) {
        this.logger.debug(
          { method: request.method, url: request.url, code: caught.code },
          'client disconnected',
        );
        response.destroy();
        return;
      }
      const error = toAgentError(caught);
      if (error.code === 'HOTMEM_INTERNAL') {
        this.logger.error(
          { err: caught, method: request.method, url: request.url },
          'request failed',
        );
      }
      if (response.headersSent) {
        response.destroy();
      } else {
        // A body refused unread (unauthorized, too large, no route) is not read to find the next
        // request: the connection closes after the answer.
        if (!request.complete) response.shouldKeepAlive = false;
        sendJson(response, error.statusCode, error.toBody());
      }
    } finally {
      this.logger.debug(
        {
          method: request.method,
          url: request.url,
          status: response.statusCode,
          ms: Number(process.hrtime.bigint() - started) / 1e6,
        },
        'request',
      );
    }
  }

  /**
   * A flood of connections must not become a flood of log lines: the first refusal is logged,
   * the ones in the next REFUSAL_WARNING_INTERVAL_MS are counted and logged as one.
   */
  private onConnectionRefused(): void {
    const limit = this.limits.maxConnections;
    if (this.refusalWarningsHeld) {
      this.refusedConnections += 1;
      return;
    }
    this.logger.warn({ limit }, 'connection refused: too many connections');
    this.refusalWarningsHeld = true;
    setTimeout(() => {
      if (this.refusedConnections > 0) {
        this.logger.warn(
          { limit, refused: this.refusedConnections, seconds: REFUSAL_WARNING_INTERVAL_MS / 1000 },
          'more connections refused: too many connections',
        );
      }
      this.refusedConnections = 0;
      this.refusalWarningsHeld = false;
    }, REFUSAL_WARNING_INTERVAL_MS).unref();
  }

  /**
   * What Node's parser rejects never reaches handle(): answered here with the documented body,
   * then the connection is closed (the parser cannot resume after an error).
   */
  private onClientError(error: ParserError, socket: stream.Duplex): void {
    if (isDisconnect(error) || !socket.writable) {
      this.logger.debug({ code: error.code }, 'client disconnected');
      socket.destroy();
      return;
    }
    const answer = parserErrorAnswer(error);
    const text = `${JSON.stringify(answer.toBody())}\n`;
    socket.end(
      `HTTP/1.1 ${answer.statusCode} ${http.STATUS_CODES[answer.statusCode]}\r\n` +
        'content-type: application/json; charset=utf-8\r\n' +
        `content-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
    );
    this.logger.debug({ err: error, code: answer.code }, 'malformed request');
  }

  private authorize(request: http.IncomingMessage): void {
    if ('socketPath' in this.endpoint) return;
    const header = request.headers.authorization ?? '';
    const presented = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
    // Hashing makes the lengths equal, as timingSafeEqual requires, without leaking the length.
    const digest = (text: string) => createHash('sha256').update(text).digest();
    if (!presented || !timingSafeEqual(digest(presented), digest(this.endpoint.token))) {
      throw new AgentError('HOTMEM_UNAUTHORIZED', 'missing or wrong bearer token');
    }
  }

  /** NDJSON: one event per line, from the moment of the request, until either side closes. */
  private async streamEvents(request: http.IncomingMessage, response: http.ServerResponse) {
    response.writeHead(200, {
      'content-type': 'application/x-ndjson',
      'cache-control': 'no-store',
    });
    response.flushHeaders();
    this.streams.add(response);
    const unsubscribe = this.agent.subscribe((event) => {
      // Unsent bytes, in the response and the socket: what this subscriber has not read yet.
      if (response.writableLength <= this.limits.eventBacklogBytes) {
        response.write(`${JSON.stringify(event)}\n`);
        return;
      }
      unsubscribe();
      const reason = `fell behind by more than ${this.limits.eventBacklogBytes} bytes`;
      this.logger.warn({ unsent: response.writableLength }, `event subscriber dropped: ${reason}`);
      const last: SubscriberDropped = {
        type: 'subscriber-dropped',
        time: new Date().toISOString(),
        reason,
      };
      response.end(`${JSON.stringify(last)}\n`);
      // One that reads again soon gets the rest and that record; one that never does is cut off.
      setTimeout(() => response.destroy(), DROPPED_SUBSCRIBER_LINGER_MS).unref();
    });
    await new Promise<void>((resolve) => {
      const done = () => {
        unsubscribe();
        this.streams.delete(response);
        resolve();
      };
      request.once('close', done);
      response.once('close', done);
    });
  }
}

/**
 * The path of an origin-form request target (`/v1/instances?…`). Other forms (absolute URLs,
 * `//host…`, `*`) name no route of the agent; parsing them as URLs could only fail later.
 */
function requestPath(target: string): string {
  if (!target.startsWith('/') || target.startsWith('//')) {
    throw invalidTarget(`'${shorten(target)}' is not a path starting with a single /`);
  }
  return target.replace(/[?#].*$/s, '');
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw invalidTarget(`malformed percent-encoding in '${shorten(segment)}'`);
  }
}

const invalidTarget = (problem: string) =>
  new AgentError('HOTMEM_INVALID_REQUEST', `request target: ${problem}`);

const shorten = (text: string) => (text.length > 64 ? `${text.slice(0, 64)}…` : text);

function sendJson(response: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

/** The parsed JSON body, or undefined for an empty one. */
async function readJson(
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<unknown> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > LIMITS.bodyBytes) throw bodyTooLarge();
  if (/^100-continue$/i.test(request.headers.expect ?? '')) response.writeContinue();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > LIMITS.bodyBytes) throw bodyTooLarge();
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new AgentError(
      'HOTMEM_UNSUPPORTED_MEDIA_TYPE',
      `expected application/json, got '${type || 'none'}'`,
    );
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new AgentError('HOTMEM_INVALID_JSON', `body is not JSON: ${(error as Error).message}`);
  }
}

/**
 * The client went away: a reset, a write to a closed connection, or a request cut off before
 * its end (llhttp's HPE_INVALID_EOF_STATE). Nothing went wrong in the agent.
 */
const DISCONNECT_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'HPE_INVALID_EOF_STATE',
]);

function isDisconnect(error: unknown): error is Error & { code: string } {
  return DISCONNECT_CODES.has((error as { code?: unknown } | undefined)?.code as string);
}

/** What Node's HTTP parser reports: an llhttp code (HPE_…) and its reason, or a Node code. */
type ParserError = Error & { code?: string; reason?: string };

function parserErrorAnswer(error: ParserError): AgentError {
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return new AgentError('HOTMEM_REQUEST_TIMEOUT', 'the request did not arrive in time');
  }
  if (error.code === 'HPE_HEADER_OVERFLOW') {
    return new AgentError('HOTMEM_HEADERS_TOO_LARGE', 'the request headers exceed 16 KiB');
  }
  return new AgentError(
    'HOTMEM_MALFORMED_REQUEST',
    `not valid HTTP/1.1: ${error.reason ?? error.message} (${error.code ?? 'unknown'})`,
  );
}

const bodyTooLarge = () =>
  new AgentError('HOTMEM_BODY_TOO_LARGE', `the body exceeds ${LIMITS.bodyBytes} bytes`);

/**
 * The socket's directory: made 0700 when missing; an existing one must be the agent's user's and
 * writable by nobody else, or someone else could replace the socket with their own.
 */
async function ensurePrivateDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await lstat(dir);
  const uid = process.getuid?.() ?? info.uid;
  if (!info.isDirectory()) throw new Error(`${dir}: the socket directory is not a directory`);
  if (info.uid !== uid) {
    throw new Error(
      `${dir}: the socket directory is owned by uid ${info.uid}, not by the agent (uid ${uid})`,
    );
  }
  if ((info.mode & 0o022) !== 0) {
    throw new Error(
      `${dir}: the socket directory is writable by group or others (mode ${(info.mode & 0o7777).toString(8)})`,
    );
  }
}

/** A socket file nobody listens on (left by a killed agent) is removed; a live one is an error. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`another agent is listening on ${socketPath}`);
  try {
    await unlink(socketPath);
  } catch (error) {
    if (!isErrnoError(error, 'ENOENT')) throw error;
  }
}
