/**
 * One HTTP/1.1 request over a VMM's API unix socket. Cloud Hypervisor (`--api-socket`) and
 * Firecracker (`--api-sock`) both serve their REST API this way; each client judges the status
 * and the body itself, since the two shape their errors differently.
 */
import http from 'node:http';

/** Answers larger than this are not API answers; stop reading rather than buffer them. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** What a VMM API client is made with; checked once by unixSocketClientOptions. */
export interface UnixSocketClientOptions {
  socketPath: string;
  /** Applies to every call: connect, request and the whole response body. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5_000;

/** The options with the default timeout filled in; throws naming the field that is wrong. */
export function unixSocketClientOptions(
  options: UnixSocketClientOptions,
): Required<UnixSocketClientOptions> {
  if (!options.socketPath) throw new TypeError('socketPath: the API socket path is required');
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`timeoutMs: expected a positive integer, got ${String(timeoutMs)}`);
  }
  return { socketPath: options.socketPath, timeoutMs };
}

export interface UnixHttpRequest {
  socketPath: string;
  method: 'GET' | 'PUT' | 'PATCH';
  path: string;
  /** Serialised as the JSON body. */
  payload?: unknown;
  /** Applies to the whole exchange: connect, request and the complete response body. */
  timeoutMs: number;
  /** The error the request fails with when timeoutMs passes. */
  timeoutError: () => Error;
}

export interface UnixHttpResponse {
  status: number;
  body: string;
}

export function unixHttpRequest(options: UnixHttpRequest): Promise<UnixHttpResponse> {
  const { socketPath, method, path, payload, timeoutMs } = options;
  const data = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload));
  return new Promise((resolve, reject) => {
    const request = http.request({
      socketPath,
      method,
      path,
      headers: {
        host: 'localhost',
        accept: 'application/json',
        ...(data && { 'content-type': 'application/json', 'content-length': data.length }),
      },
    });
    const timer = setTimeout(() => request.destroy(options.timeoutError()), timeoutMs);
    const settle = (error: Error | undefined, value?: UnixHttpResponse) => {
      clearTimeout(timer);
      if (error) reject(error);
      else if (value) resolve(value);
    };
    request.on('error', (error) => settle(error));
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      let received = 0;
      response.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > MAX_RESPONSE_BYTES) {
          request.destroy(
            new Error(`${method} ${path}: response larger than ${MAX_RESPONSE_BYTES} bytes`),
          );
          return;
        }
        chunks.push(chunk);
      });
      response.on('error', (error) => settle(error));
      response.on('end', () => {
        settle(undefined, {
          status: response.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
        });
      });
    });
    request.end(data);
  });
}
