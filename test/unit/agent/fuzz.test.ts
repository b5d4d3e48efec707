// A bounded fuzz run against a real agent (fixed seed, so a failure replays): malformed HTTP,
// bodies that stretch the schema, slow clients and floods. Whatever comes in, the agent must not
// crash, must not answer a client's error with a 5xx, must answer every rejection with the
// documented {error: {code, message}}, must give back its memory and descriptors, and must serve
// a valid request afterwards.
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_ERRORS } from '../../../lib/agent/errors.js';
import { seededRandom } from '../../../lib/seeded-random.js';
import { collectEvents, exchange, type Harness, type RawAnswer, startHarness } from './harness.js';

const SEED = 0x5eed_2026;
const MiB = 2 ** 20;
let harness: Harness;
let baseline: { rss: number; fds: number };

const rand = seededRandom(SEED);
const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;
const openFds = () => readdirSync('/proc/self/fd').length;

/** Runs at most `width` of the tasks at a time. */
async function inBatches<T>(tasks: Array<() => Promise<T>>, width: number): Promise<T[]> {
  const results: T[] = [];
  for (let start = 0; start < tasks.length; start += width) {
    results.push(...(await Promise.all(tasks.slice(start, start + width).map((task) => task()))));
  }
  return results;
}

/** No 5xx; any error answer has the documented body, with a registered code and its status. */
function expectWellFormed(answer: RawAnswer, sent: string | Buffer): void {
  const context = `sent ${JSON.stringify(String(sent).slice(0, 300))}, got ${JSON.stringify(answer.raw.slice(0, 300))}`;
  expect(answer.status, context).toBeLessThan(500);
  if (answer.status < 400) return;
  let body: { error: { code: keyof typeof AGENT_ERRORS; message: string } };
  try {
    body = JSON.parse(answer.body);
  } catch {
    throw new Error(`not the documented error body: ${context}`);
  }
  expect(body, context).toEqual({
    error: { code: expect.any(String), message: expect.any(String) },
  });
  expect(AGENT_ERRORS[body.error.code]?.status, context).toBe(answer.status);
}

beforeAll(async () => {
  harness = await startHarness({
    limits: { headersTimeoutMs: 300, requestTimeoutMs: 600, shutdownGraceMs: 200 },
  });
  // Warm up (JIT, first spawn) before the baseline.
  await harness.client.health();
  global.gc?.();
  baseline = { rss: process.memoryUsage().rss, fds: openFds() };
});

afterAll(async () => {
  await harness.close();
});

const VALID_REQUESTS = [
  'GET /v1/health HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n',
  'GET /v1/instances HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n',
  'GET /metrics HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n',
  'POST /v1/instances/i-000000000000/stop HTTP/1.1\r\nhost: agent\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{"graceMs": 10}',
  'POST /v1/instances HTTP/1.1\r\nhost: agent\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 43\r\n\r\n{"command":["true"],"memoryBytes":8388608}',
];

const NASTY = [
  '\0',
  '\r\n',
  '\r',
  '\n\n',
  '%',
  '%E0%A4%A',
  '//',
  ' ',
  ':',
  '\u00ff',
  'Transfer-Encoding: chunked\r\n',
  'Content-Length: -1\r\n',
  'Content-Length: 99999999999\r\n',
  'Expect: 100-continue\r\n',
  'Expect: nonsense\r\n',
  'x'.repeat(20_000),
  '{"command":[',
  '\u2028',
];

function mutate(request: string): string {
  const bytes = [...request];
  const edits = 1 + Math.floor(rand() * 4);
  for (let edit = 0; edit < edits; edit += 1) {
    const at = Math.floor(rand() * (bytes.length + 1));
    switch (pick(['flip', 'delete', 'insert', 'truncate', 'duplicate'] as const)) {
      case 'flip':
        bytes[at] = String.fromCharCode(Math.floor(rand() * 256));
        break;
      case 'delete':
        bytes.splice(at, 1 + Math.floor(rand() * 8));
        break;
      case 'insert':
        bytes.splice(at, 0, pick(NASTY));
        break;
      case 'truncate':
        bytes.length = at;
        break;
      case 'duplicate':
        bytes.splice(at, 0, ...bytes.slice(at, at + Math.floor(rand() * 64)));
        break;
    }
  }
  return bytes.join('');
}

describe(`agent fuzz (seed ${SEED.toString(16)})`, () => {
  it('answers mutated and random HTTP without 5xx, always with the documented error body', async () => {
    const requests = [
      ...Array.from({ length: 240 }, () => mutate(pick(VALID_REQUESTS))),
      ...Array.from({ length: 20 }, () =>
        Buffer.from(
          Array.from({ length: 1 + Math.floor(rand() * 512) }, () => Math.floor(rand() * 256)),
        ),
      ),
    ];
    const answers = await inBatches(
      requests.map((request) => async () => ({
        request,
        answer: await exchange(harness.socketPath, request, 1_500),
      })),
      20,
    );
    for (const { request, answer } of answers) expectWellFormed(answer, request);
    // Most were answered at all (the rest waited for bytes that never came, then timed out).
    expect(answers.filter(({ answer }) => answer.status > 0).length).toBeGreaterThan(
      requests.length / 2,
    );
  });

  it('rejects bodies that stretch the schema with 4xx, naming the field', async () => {
    const values = [
      null,
      true,
      0,
      -1,
      1.5,
      2 ** 60,
      Number.MAX_SAFE_INTEGER,
      '',
      'zz-fuzz-no-such-program',
      '/',
      '/nonexistent',
      '/etc/passwd',
      'relative/dir',
      'a\u0000b',
      'x'.repeat(5_000),
      [],
      ['zz-fuzz-no-such-program'],
      [''],
      Array(300).fill('zz'),
      {},
      { 'BAD NAME': 'x' },
      { OK: 'a\u0000b' },
      { __proto__: { polluted: true } },
    ];
    const fields = ['command', 'env', 'cwd', 'memoryBytes', 'cpuWeight', 'shell', 'graceMs'];
    const bodies = Array.from({ length: 150 }, () => {
      const body: Record<string, unknown> = {
        command: ['zz-fuzz-no-such-program'],
        memoryBytes: 8 * MiB,
      };
      for (let field = 0; field < 1 + Math.floor(rand() * 3); field += 1)
        body[pick(fields)] = pick(values);
      if (rand() < 0.2) delete body[pick(fields)];
      return body;
    });
    for (const body of bodies) {
      const text = JSON.stringify(body);
      const target = rand() < 0.8 ? '/v1/instances' : '/v1/instances/i-000000000000/stop';
      const request = `POST ${target} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`;
      const answer = await exchange(harness.socketPath, request);
      expectWellFormed(answer, request);
      expect(answer.status, text).toBeGreaterThanOrEqual(400);
      const { code, message } = JSON.parse(answer.body).error as { code: string; message: string };
      if (code === 'HOTMEM_INVALID_REQUEST' || code === 'HOTMEM_SPAWN_FAILED') {
        expect(message, text).toMatch(/^[^:]+: /);
      }
    }
  });

  it('serves others while slow clients trickle requests in', async () => {
    const slow = Array.from({ length: 10 }, () => net.connect(harness.socketPath));
    const request = VALID_REQUESTS[0] as string;
    let sent = 0;
    const trickle = setInterval(() => {
      for (const socket of slow) if (!socket.destroyed) socket.write(request.slice(sent, sent + 1));
      sent += 1;
    }, 20);
    try {
      for (let round = 0; round < 10; round += 1) {
        await expect(harness.client.health()).resolves.toMatchObject({ status: 'ok' });
      }
    } finally {
      clearInterval(trickle);
      for (const socket of slow) socket.destroy();
    }
  });

  it('survives floods of connections, requests and bodies', async () => {
    // More connections than the cap at once: the excess is closed, the rest answered.
    const held = await Promise.all(
      Array.from(
        { length: 160 },
        () =>
          new Promise<net.Socket>((resolve) => {
            const socket = net.connect(harness.socketPath, () => resolve(socket));
            socket.on('error', () => resolve(socket));
          }),
      ),
    );
    for (const socket of held) socket.destroy();
    const answers = await Promise.all(
      Array.from({ length: 300 }, () =>
        exchange(harness.socketPath, VALID_REQUESTS[0] as string, 3_000),
      ),
    );
    for (const answer of answers) {
      if (answer.status !== 0) expect(answer.status).toBe(200);
    }
    expect(answers.filter((answer) => answer.status === 200).length).toBeGreaterThan(100);
    const huge = Buffer.alloc(8 * MiB, 'x');
    const big = await exchange(
      harness.socketPath,
      Buffer.concat([
        Buffer.from(
          `POST /v1/instances HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: ${huge.length}\r\n\r\n`,
        ),
        huge,
      ]),
    );
    expect(big.status).toBe(413);
    expect(big.closed).toBe(true);
  });

  it('gives back memory and descriptors, and serves a valid request afterwards', async () => {
    await expect.poll(openFds, { timeout: 5_000 }).toBeLessThanOrEqual(baseline.fds + 5);
    global.gc?.();
    expect(process.memoryUsage().rss - baseline.rss).toBeLessThan(100 * MiB);
    const events = await harness.client.events();
    const created = await harness.client.createInstance({
      command: ['sh', '-c', 'echo still-fine'],
      memoryBytes: 8 * MiB,
    });
    await collectEvents(events, (event) => event.type === 'instance-exited');
    await events.return(undefined);
    const detail = (await harness.client.json('GET', `/v1/instances/${created.id}`)) as {
      output: { stdout: string };
    };
    expect(detail.output.stdout).toBe('still-fine\n');
  });
});
