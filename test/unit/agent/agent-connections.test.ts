// Connections as clients really behave: they hang up mid-request, send half a request and stall,
// or connect and never authenticate. None of it may cost the agent more than a bounded time,
// nor show up in its log as an internal error.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { capturingLogger, errorBody, exchange, type Harness, startHarness } from './harness.js';

let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

function connect(to: string | { host: string; port: number }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = typeof to === 'string' ? net.connect(to) : net.connect(to.port, to.host);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

async function waitUntil(condition: () => boolean, what: string, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('clients that hang up', () => {
  it('logs a client gone mid-body at debug as a disconnect, not as an internal error', async () => {
    const { logger, records } = capturingLogger();
    harness = await startHarness({ logger });
    const socket = await connect(harness.socketPath);
    socket.write(
      'POST /v1/instances HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"command":',
    );
    // Time for the agent to start reading the body; if it has not, the test still passes.
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.destroy();
    // Logged last, once the agent is done with the request.
    await waitUntil(
      () => records.some((record) => record.msg === 'request' && record.url === '/v1/instances'),
      'the request to be done with',
    );
    const disconnects = records.filter((record) => record.msg === 'client disconnected');
    expect(disconnects).toContainEqual(
      expect.objectContaining({ level: 20, method: 'POST', url: '/v1/instances' }),
    );
    for (const disconnect of disconnects) {
      expect(disconnect).toMatchObject({ level: 20 });
      expect(disconnect).not.toHaveProperty('err');
    }
    expect(records.filter((record) => (record.level as number) >= 50)).toEqual([]);
  });
});

describe('unauthenticated TCP clients', () => {
  const tcp = { host: '127.0.0.1', port: 0, token: 'a-token-of-16-chars' };
  const address = () => ({
    host: '127.0.0.1',
    port: Number(harness?.server.address.split(':').pop()),
  });

  it('answers 408 and closes a connection whose headers do not arrive in time', async () => {
    harness = await startHarness({
      endpoint: tcp,
      limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 },
    });
    const answer = await exchange(address(), 'GET /v1/health HTTP/1.1\r\nhost: agent\r\n');
    expect(answer.closed, answer.raw).toBe(true);
    expect(answer.status).toBe(408);
    expect(errorBody(answer).code).toBe('HOTMEM_REQUEST_TIMEOUT');
  });

  it('closes a connection that sends nothing', async () => {
    harness = await startHarness({
      endpoint: tcp,
      limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 },
    });
    const answer = await exchange(address(), '');
    expect(answer.closed).toBe(true);
  });

  it('answers 401 without reading the body, and closes', async () => {
    harness = await startHarness({ endpoint: tcp });
    const answer = await exchange(
      address(),
      'POST /v1/instances HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: 200000\r\n\r\n{',
    );
    expect(answer.status).toBe(401);
    expect(errorBody(answer).code).toBe('HOTMEM_UNAUTHORIZED');
    expect(answer.closed).toBe(true);
  });

  it('closes connections over the cap at once', async () => {
    harness = await startHarness({ endpoint: tcp, limits: { maxConnections: 2 } });
    const held = [await connect(address()), await connect(address())];
    const answer = await exchange(
      address(),
      `GET /v1/health HTTP/1.1\r\nhost: agent\r\nauthorization: Bearer ${tcp.token}\r\n\r\n`,
    );
    expect(answer).toMatchObject({ closed: true, status: 0 });
    for (const socket of held) socket.destroy();
    // Once the agent has seen them go (soon, not at once), there is room again.
    await expect
      .poll(() => harness?.client.health().catch(() => undefined), { timeout: 5_000 })
      .toMatchObject({ status: 'ok' });
  });
});

describe('shutdown', () => {
  it('closes half-sent requests after a short grace instead of waiting for them', async () => {
    harness = await startHarness({ limits: { shutdownGraceMs: 200 } });
    const halfHeaders = await connect(harness.socketPath);
    halfHeaders.write('POST /v1/instances HTTP/1.1\r\nhost: agent\r\n');
    const halfBody = await connect(harness.socketPath);
    halfBody.write(
      'POST /v1/instances HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{',
    );
    const idle = await connect(harness.socketPath);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closing = harness.server.close().then(() => 'closed' as const);
    const outcome = await Promise.race([
      closing,
      new Promise((resolve) => setTimeout(resolve, 5_000, 'still open')),
    ]);
    expect(outcome).toBe('closed');
    await waitUntil(
      () => [halfHeaders, halfBody, idle].every((socket) => socket.closed),
      'the clients see their connections closed',
    );
  });
});

describe('connection floods', () => {
  it('warns about refused connections without a log line for each', async () => {
    const { logger, records } = capturingLogger();
    harness = await startHarness({ logger, limits: { maxConnections: 1 } });
    const held = await connect(harness.socketPath);
    const refused = await Promise.all(
      Array.from({ length: 50 }, () => exchange(harness?.socketPath as string, '', 2_000)),
    );
    expect(refused.every((answer) => answer.closed)).toBe(true);
    held.destroy();
    const warnings = records.filter((record) => record.level === 40);
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings.length).toBeLessThanOrEqual(2);
  });
});
