// Invocations relayed by the agent to an instance's port: the cold start waited for, the
// function's own answer relayed whatever its status, and every way the instance can fail the
// relay answered with the agent's error body.
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../../lib/agent/agent.js';
import { AgentRequestError } from '../../../lib/agent/client.js';
import { freePort } from '../fixtures/free-port.js';
import { collectEvents, type Harness, startHarness } from './harness.js';

const MiB = 2 ** 20;
let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

/**
 * A function as a FaaS runtime would start it: listens on PORT after DELAY_MS (its cold
 * start), answers POST / with what the payload asks for.
 */
const FUNCTION = `
const http = require('node:http');
setTimeout(() => {
  http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const ask = JSON.parse(body || 'null') ?? {};
      const answer = () => {
        res.writeHead(ask.status ?? 200, { 'content-type': 'application/json' });
        res.end(ask.bytes ? 'x'.repeat(ask.bytes) : JSON.stringify({ echo: ask }));
      };
      if (ask.exit) process.exit(3);
      setTimeout(answer, ask.sleepMs ?? 0);
    });
  }).listen(Number(process.env.PORT), '127.0.0.1');
}, Number(process.env.DELAY_MS ?? 0));
`;

async function startFunction(delayMs: number, port?: number) {
  const h = harness as Harness;
  const listenOn = port ?? (await freePort());
  const created = await h.client.createInstance({
    command: [process.execPath, '-e', FUNCTION],
    env: { PORT: String(listenOn), DELAY_MS: String(delayMs) },
    memoryBytes: 64 * MiB,
    port: listenOn,
  });
  return { ...created, port: listenOn };
}

async function rejection(promise: Promise<unknown>): Promise<AgentRequestError> {
  const error = await promise.then(
    () => new Error('expected a rejection'),
    (caught: unknown) => caught,
  );
  if (!(error instanceof AgentRequestError)) throw error;
  return error;
}

describe('agent invoke', () => {
  it('waits for a cold start, relays the answer and reports the instance ready', async () => {
    harness = await startHarness();
    const events = await harness.client.events();
    const { id, port } = await startFunction(400);
    const result = await harness.client.invoke(id, { payload: { n: 1 } });
    expect(result).toMatchObject({
      status: 200,
      contentType: 'application/json',
      body: JSON.stringify({ echo: { n: 1 } }),
    });
    expect(result.durationMs).toBeGreaterThan(0);
    const seen = await collectEvents<AgentEvent | { type: string }>(
      events,
      (event) => event.type === 'instance-ready',
    );
    const ready = seen.at(-1) as Extract<AgentEvent, { type: 'instance-ready' }>;
    expect(ready.instance).toMatchObject({ id, port });
    const summary = harness.agent.getInstance(id).summary();
    expect(summary.port).toBe(port);
    // Ready no sooner than the function listened: its 400 ms cold start.
    expect(
      Date.parse(summary.readyAt as string) - Date.parse(summary.startedAt),
    ).toBeGreaterThanOrEqual(350);
  });

  it("relays a function's failure as its status, not as an agent error", async () => {
    harness = await startHarness();
    const { id } = await startFunction(0);
    const result = await harness.client.invoke(id, { payload: { status: 500 } });
    expect(result.status).toBe(500);
  });

  it('answers 409 for an instance without a port, and for one that exits before it listens', async () => {
    harness = await startHarness();
    const portless = await harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 64 * MiB,
    });
    const noPort = await rejection(harness.client.invoke(portless.id));
    expect([noPort.status, noPort.code]).toEqual([409, 'HOTMEM_NO_PORT']);

    const port = await freePort();
    const dying = await harness.client.createInstance({
      command: ['sh', '-c', 'sleep 0.3; exit 1'],
      memoryBytes: 64 * MiB,
      port,
    });
    const started = Date.now();
    const gone = await rejection(harness.client.invoke(dying.id, { timeoutMs: 20_000 }));
    expect([gone.status, gone.code]).toEqual([409, 'HOTMEM_INSTANCE_NOT_RUNNING']);
    // Answered when it exited, not when the 20 s ran out.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('answers 504 when the port never opens or the function does not answer in time', async () => {
    harness = await startHarness();
    const silent = await harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 64 * MiB,
      port: await freePort(),
    });
    const neverReady = await rejection(harness.client.invoke(silent.id, { timeoutMs: 300 }));
    expect([neverReady.status, neverReady.code]).toEqual([504, 'HOTMEM_INVOKE_TIMEOUT']);
    expect(neverReady.message).toMatch(/did not accept connections in 300 ms/);

    const { id } = await startFunction(0);
    await harness.client.invoke(id);
    const slow = await rejection(
      harness.client.invoke(id, { payload: { sleepMs: 5_000 }, timeoutMs: 300 }),
    );
    expect([slow.status, slow.code]).toEqual([504, 'HOTMEM_INVOKE_TIMEOUT']);
  });

  it('answers 502 for an answer over 1 MiB and for an instance that dies mid-invocation', async () => {
    harness = await startHarness();
    const { id } = await startFunction(0);
    const huge = await rejection(harness.client.invoke(id, { payload: { bytes: 2 * MiB } }));
    expect([huge.status, huge.code]).toEqual([502, 'HOTMEM_INSTANCE_UNREACHABLE']);
    expect(huge.message).toMatch(/exceeds 1048576 bytes/);
    // The instance is still fine after a refused answer.
    expect((await harness.client.invoke(id, { payload: { n: 2 } })).status).toBe(200);

    const crash = await rejection(harness.client.invoke(id, { payload: { exit: true } }));
    expect(crash.status).toBeGreaterThanOrEqual(409);
    expect(['HOTMEM_INSTANCE_UNREACHABLE', 'HOTMEM_INSTANCE_NOT_RUNNING']).toContain(crash.code);
  });

  it('refuses a bad port and unknown invoke fields, naming them', async () => {
    harness = await startHarness();
    const badPort = await rejection(
      harness.client.createInstance({
        command: ['true'],
        memoryBytes: 64 * MiB,
        port: 70_000,
      }),
    );
    expect([badPort.status, badPort.code]).toEqual([400, 'HOTMEM_INVALID_REQUEST']);
    expect(badPort.message).toMatch(/^port: /);
    const { id } = await startFunction(0);
    const unknown = await rejection(
      harness.client.json('POST', `/v1/instances/${id}/invoke`, { payload: 1, retries: 3 }),
    );
    expect([unknown.status, unknown.code]).toEqual([400, 'HOTMEM_INVALID_REQUEST']);
    expect(unknown.message).toMatch(/retries/);
    const missing = await rejection(harness.client.invoke('i-000000000000'));
    expect([missing.status, missing.code]).toEqual([404, 'HOTMEM_INSTANCE_NOT_FOUND']);
  });
});

describe('agent invoke across a restart', () => {
  it('relays to an instance the next agent adopted, on the port its record kept', async () => {
    harness = await startHarness();
    const tree = {
      dir: harness.dir,
      cgroupRoot: harness.cgroupRoot,
      stateDir: harness.stateDir,
    };
    const { id, port, pid } = await startFunction(0);
    await harness.client.invoke(id);
    // An agent that ends without stopping its instances, as after kill -9.
    await harness.server.close();
    const next = await startHarness({ tree });
    try {
      const adopted = next.agent.getInstance(id).summary();
      expect(adopted).toMatchObject({ adopted: true, port, pid });
      expect((await next.client.invoke(id, { payload: { after: 'restart' } })).body).toBe(
        JSON.stringify({ echo: { after: 'restart' } }),
      );
    } finally {
      process.kill(pid, 'SIGKILL');
      await next.close();
    }
  });
});
