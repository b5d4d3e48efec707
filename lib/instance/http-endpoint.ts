/**
 * The HTTP port an instance serves invocations on, inside the guest: when it starts accepting
 * connections (readiness, the end of a cold start) and one invocation relayed to it. The host
 * reaches instances only through the agent's API, so the agent relays invocations here.
 */
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** How often a starting instance's port is tried: often during a cold start, then seldom. */
const READY_PROBE_INTERVAL_MS = 20;
const READY_PROBE_SLOW_AFTER_MS = 10_000;
const READY_PROBE_SLOW_INTERVAL_MS = 500;
/** Invocation answers larger than this are refused rather than buffered. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

export interface InvocationResult {
  /** The instance's HTTP status. */
  status: number;
  contentType: string | null;
  body: string;
  /** From sending the request to the end of the answer. */
  durationMs: number;
}

/** The instance could not be reached or answered with something that cannot be relayed. */
export class InvocationError extends Error {
  constructor(
    readonly reason: 'unreachable' | 'timeout' | 'too-large',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'InvocationError';
  }
}

export class HttpEndpoint {
  readonly port: number;
  /** Settles when the port first accepts a connection; never rejects. */
  readonly ready: Promise<void>;
  private readyTime: string | null = null;
  private readonly probing = new AbortController();

  constructor(
    port: number,
    private readonly host = '127.0.0.1',
  ) {
    this.port = port;
    this.ready = this.probe();
  }

  /** ISO time the port first accepted a connection; null while it has not. */
  get readyAt(): string | null {
    return this.readyTime;
  }

  /** Stops waiting for readiness (the instance is gone); `ready` then never settles. */
  close(): void {
    this.probing.abort();
  }

  private async probe(): Promise<void> {
    const { signal } = this.probing;
    const started = Date.now();
    while (!signal.aborted) {
      if (await this.accepts()) {
        this.readyTime = new Date().toISOString();
        return;
      }
      const interval =
        Date.now() - started < READY_PROBE_SLOW_AFTER_MS
          ? READY_PROBE_INTERVAL_MS
          : READY_PROBE_SLOW_INTERVAL_MS;
      await sleep(interval, undefined, { signal }).catch(() => {});
    }
    await new Promise(() => {});
  }

  private accepts(): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = net.connect({ port: this.port, host: this.host });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
  }

  /** POSTs `payload` as JSON to `/` and returns the answer, whatever its status. */
  invoke(payload: unknown, timeoutMs: number): Promise<InvocationResult> {
    const body = Buffer.from(JSON.stringify(payload ?? null));
    const started = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
      const request = http.request(
        {
          host: this.host,
          port: this.port,
          method: 'POST',
          path: '/',
          headers: { 'content-type': 'application/json', 'content-length': body.length },
          agent: false,
        },
        (response) => {
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              request.destroy(
                new InvocationError(
                  'too-large',
                  `port ${this.port}: the answer exceeds ${MAX_RESPONSE_BYTES} bytes`,
                ),
              );
              return;
            }
            chunks.push(chunk);
          });
          response.on('end', () =>
            resolve({
              status: response.statusCode ?? 0,
              contentType: response.headers['content-type'] ?? null,
              body: Buffer.concat(chunks).toString('utf8'),
              durationMs: Number(process.hrtime.bigint() - started) / 1e6,
            }),
          );
          response.on('error', (error) => reject(this.failure(error)));
        },
      );
      request.setTimeout(timeoutMs, () =>
        request.destroy(
          new InvocationError('timeout', `port ${this.port}: no answer in ${timeoutMs} ms`),
        ),
      );
      request.on('error', (error) => reject(this.failure(error)));
      request.end(body);
    });
  }

  private failure(error: Error): InvocationError {
    if (error instanceof InvocationError) return error;
    const code = (error as NodeJS.ErrnoException).code ?? error.message;
    return new InvocationError('unreachable', `port ${this.port}: ${code}`, { cause: error });
  }
}
