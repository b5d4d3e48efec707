// Host side of the test bed's channel into the guest: talks to guest/server.mjs over the port
// QEMU forwards to 127.0.0.1.
import { request } from 'node:http';

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  durationMs?: number;
}

export class GuestCommandError extends Error {
  override readonly name = 'GuestCommandError';
}

export class GuestClient {
  constructor(private readonly port: number) {}

  private call<T>(path: string, body: unknown, timeoutMs: number): Promise<T> {
    const payload = JSON.stringify(body ?? {});
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: this.port,
          method: path === '/health' ? 'GET' : 'POST',
          path,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(payload),
          },
          timeout: timeoutMs,
        },
        (res) => {
          let raw = '';
          res.setEncoding('utf8');
          res.on('data', (d) => {
            raw += d;
          });
          res.on('end', () => {
            try {
              const parsed = JSON.parse(raw) as T & { error?: { message: string } };
              if (res.statusCode !== 200) {
                reject(new GuestCommandError(`guest ${path}: ${parsed.error?.message ?? raw}`));
              } else {
                resolve(parsed);
              }
            } catch {
              reject(
                new GuestCommandError(
                  `guest ${path}: HTTP ${res.statusCode}, unparsable body '${raw}'`,
                ),
              );
            }
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new GuestCommandError(`guest ${path}: no reply within ${timeoutMs} ms`)),
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Polls /health with growing pauses until the server answers or the deadline passes. */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 50;
    for (;;) {
      try {
        await this.call('/health', undefined, 2000);
        return;
      } catch (err) {
        if (Date.now() + delay > deadline) {
          throw new GuestCommandError(
            `guest server not reachable within ${timeoutMs} ms: ${(err as Error).message}`,
          );
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /** Runs argv to completion in the guest. */
  run(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    return this.call('/run', { argv, timeoutMs, input: opts.input }, timeoutMs + 5000);
  }

  /** Runs argv and fails unless it exits 0; resolves with its stdout. */
  async check(argv: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(argv, opts);
    if (r.code !== 0) {
      throw new GuestCommandError(
        `guest: '${argv.join(' ')}' exited ${r.code ?? r.signal}: ${r.stderr.trim()}`,
      );
    }
    return r.stdout;
  }

  /** Starts argv in the background; with waitFor, resolves once its stdout shows that text. */
  async spawn(
    argv: string[],
    opts: { waitFor?: string; timeoutMs?: number } = {},
  ): Promise<number> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const { pid } = await this.call<{ pid: number }>(
      '/spawn',
      { argv, ...opts, timeoutMs },
      timeoutMs + 5000,
    );
    return pid;
  }

  signal(pid: number, signal = 'SIGTERM'): Promise<void> {
    return this.call('/signal', { pid, signal }, 10_000);
  }

  wait(pid: number, timeoutMs = 60_000): Promise<RunResult> {
    return this.call('/wait', { pid, timeoutMs }, timeoutMs + 5000);
  }

  async read(path: string): Promise<string> {
    return (await this.call<{ data: string }>('/read', { path }, 30_000)).data;
  }

  write(path: string, data: string): Promise<void> {
    return this.call('/write', { path, data }, 120_000);
  }

  /** HOTMEM_IOC_RECLAIM of a free partition, run inside the guest server's own process. */
  reclaim(partition: number): Promise<{
    blocks: number;
    bytes: number;
    durationNs: number;
    elapsedNs: number;
    pagesMigrated: number;
  }> {
    return this.call('/hotmem/reclaim', { partition }, 120_000);
  }

  /** Ends the guest server, and with it the guest's /init command. */
  shutdown(code = 0): Promise<void> {
    return this.call('/shutdown', { code }, 10_000);
  }
}
