// The replay's guest functions, run here on the host: function.mjs on node, function.c built
// as the initramfs builds it. One protocol, so one set of tests for both: cold start,
// invocations, bad input.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { guestBinary } from '../../../scripts/testbed/initramfs.js';
import { freePort } from '../fixtures/free-port.js';

const guest = (file: string) =>
  fileURLToPath(new URL(`../../../scripts/testbed/guest/${file}`, import.meta.url));
const nativeFunction = guestBinary('function');
const children: ChildProcess[] = [];

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

describe.each([
  { name: 'function.mjs', argv: [process.execPath, guest('function.mjs')] },
  { name: 'function.c', argv: [nativeFunction] },
])('guest $name', ({ argv }) => {
  function run(env: Record<string, string>) {
    const child = spawn(argv[0] as string, argv.slice(1), { env: { ...process.env, ...env } });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    // 'close', not 'exit': by then stderr has been read to its end.
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const ready = async () => {
      while (!stdout.includes('function ready')) {
        if (child.exitCode !== null) throw new Error(`function exited: ${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    return { exited, ready, stderr: () => stderr };
  }

  async function post(port: number, body: string) {
    const response = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  it('holds its footprint, computes for the asked time and answers', async () => {
    const port = await freePort();
    const fn = run({ PORT: String(port), FOOTPRINT_MIB: '16' });
    await fn.ready();
    const answer = await post(port, JSON.stringify({ durationMs: 80, memoryMiB: 8 }));
    expect(answer.status).toBe(200);
    expect(answer.body.ok).toBe(true);
    expect(answer.body.computeMs).toBeGreaterThanOrEqual(80);
  });

  it('answers 400 naming the field for a bad invocation, and keeps serving', async () => {
    const port = await freePort();
    const fn = run({ PORT: String(port), FOOTPRINT_MIB: '1' });
    await fn.ready();
    const bad = await post(port, JSON.stringify({ durationMs: -5 }));
    expect(bad).toEqual({ status: 400, body: { ok: false, error: 'durationMs: 0-600000' } });
    expect((await post(port, 'not json')).status).toBe(400);
    expect((await post(port, '{}')).status).toBe(200);
  });

  it('refuses to start without a valid PORT or FOOTPRINT_MIB', async () => {
    const noPort = run({ PORT: '' });
    expect(await noPort.exited).toBe(2);
    expect(noPort.stderr()).toMatch(/PORT must be a TCP port/);
    const badFootprint = run({ PORT: String(await freePort()), FOOTPRINT_MIB: 'lots' });
    expect(await badFootprint.exited).toBe(2);
    expect(badFootprint.stderr()).toMatch(/FOOTPRINT_MIB must be .*, not 'lots'/);
  });
});
