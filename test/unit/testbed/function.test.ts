// The replay's guest function, run here on the host's node: cold start, invocations, bad input.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../fixtures/free-port.js';

const FUNCTION = fileURLToPath(
  new URL('../../../scripts/testbed/guest/function.mjs', import.meta.url),
);
const children: ChildProcess[] = [];

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

function run(env: Record<string, string>) {
  const child = spawn(process.execPath, [FUNCTION], { env: { ...process.env, ...env } });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
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

describe('guest function', () => {
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
    expect(bad).toEqual({ status: 400, body: { ok: false, error: 'durationMs: 0–600000' } });
    expect((await post(port, 'not json')).status).toBe(400);
    expect((await post(port, '{}')).status).toBe(200);
  });

  it('refuses to start without a valid PORT or FOOTPRINT_MIB', async () => {
    const noPort = run({ PORT: '' });
    expect(await noPort.exited).toBe(2);
    expect(noPort.stderr()).toMatch(/PORT must be a TCP port/);
    const badFootprint = run({ PORT: String(await freePort()), FOOTPRINT_MIB: 'lots' });
    expect(await badFootprint.exited).toBe(2);
    expect(badFootprint.stderr()).toMatch(/FOOTPRINT_MIB must be a number of MiB, not 'lots'/);
  });
});
