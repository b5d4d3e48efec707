// Requests no client library would send: every rejection is a 4xx with the documented body
// {error: {code, message}} naming what was wrong, never a 500 and never Node's bare answer.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { errorBody, exchange, type Harness, startHarness } from './harness.js';

const MiB = 2 ** 20;
let harness: Harness;

beforeEach(async () => {
  harness = await startHarness();
});

afterEach(async () => {
  await harness.close();
});

const get = (target: string) =>
  `GET ${target} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n`;

function post(target: string, body: unknown): string {
  const text = JSON.stringify(body);
  return `POST ${target} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`;
}

describe('malformed request targets', () => {
  it.each([
    ['//', /^request target: /],
    ['/v1/instances/%', /^request target: malformed percent-encoding/],
    ['/v1/instances/%E0%A4%A', /^request target: malformed percent-encoding/],
    ['http://agent:70000/v1/health', /^request target: /],
  ])('answers %s with 400 naming the request target', async (target, message) => {
    const answer = await exchange(harness.socketPath, get(target));
    expect(answer.status, answer.raw).toBe(400);
    expect(errorBody(answer)).toMatchObject({
      code: 'HOTMEM_INVALID_REQUEST',
      message: expect.stringMatching(message),
    });
  });
});

describe('commands that fail to start synchronously', () => {
  it.each([
    ['a cwd that is a file', { cwd: '/etc/passwd' }, /^cwd: '\/etc\/passwd' is not a directory/],
    [
      'a cwd that does not exist',
      { cwd: '/nonexistent/dir' },
      /^cwd: '\/nonexistent\/dir' does not exist/,
    ],
    [
      'a program name over NAME_MAX',
      { command: ['a'.repeat(4000)] },
      /^command\.0: cannot start 'a{64}…': .*ENAMETOOLONG/,
    ],
  ])('answers %s with 422 naming the field', async (_, fields, message) => {
    const answer = await exchange(
      harness.socketPath,
      post('/v1/instances', { command: ['true'], memoryBytes: 8 * MiB, ...fields }),
    );
    expect(answer.status, answer.raw).toBe(422);
    expect(errorBody(answer)).toMatchObject({
      code: 'HOTMEM_SPAWN_FAILED',
      message: expect.stringMatching(message),
    });
    expect(harness.agent.listInstances()).toEqual([]);
  });
});

describe('requests the HTTP parser rejects', () => {
  it.each([
    [
      'an unknown method',
      'FOO /v1/health HTTP/1.1\r\nhost: agent\r\n\r\n',
      400,
      'HOTMEM_MALFORMED_REQUEST',
    ],
    [
      'a target without /',
      'GET v1/health HTTP/1.1\r\nhost: agent\r\n\r\n',
      400,
      'HOTMEM_MALFORMED_REQUEST',
    ],
    [
      'not HTTP at all',
      '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n',
      400,
      'HOTMEM_MALFORMED_REQUEST',
    ],
    [
      'a 17 KB header',
      `GET /v1/health HTTP/1.1\r\nhost: agent\r\nx-big: ${'a'.repeat(17 * 1024)}\r\n\r\n`,
      431,
      'HOTMEM_HEADERS_TOO_LARGE',
    ],
    [
      'an expectation other than 100-continue',
      'GET /v1/health HTTP/1.1\r\nhost: agent\r\nexpect: teapot\r\n\r\n',
      417,
      'HOTMEM_EXPECTATION_FAILED',
    ],
  ])('answers %s with the documented error body and closes', async (_, request, status, code) => {
    const answer = await exchange(harness.socketPath, request);
    expect(answer.status, answer.raw).toBe(status);
    expect(answer.headers['content-type']).toMatch(/^application\/json/);
    expect(errorBody(answer).code).toBe(code);
    expect(answer.closed).toBe(true);
  });

  it('sends 100 Continue only for a request it goes on to read', async () => {
    const body = JSON.stringify({ command: [], memoryBytes: 8 * MiB });
    const headers = (target: string) =>
      `POST ${target} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\nexpect: 100-continue\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
    const read = await exchange(harness.socketPath, headers('/v1/instances') + body);
    expect(read.raw).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 400 /);
    expect(errorBody(read).message).toMatch(/command: at least the program/);
    const unread = await exchange(harness.socketPath, headers('/v1/nothing'));
    expect(unread.raw).toMatch(/^HTTP\/1\.1 404 /);
    expect(errorBody(unread).code).toBe('HOTMEM_NOT_FOUND');
  });
});
