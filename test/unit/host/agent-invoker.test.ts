// The real Invoker against a real agent (unit harness): the function's payload, its failure
// reported as the invocation's, and the agent's timeout covering the duration.
import { afterEach, describe, expect, it } from 'vitest';
import { AgentInvoker } from '../../../lib/host/controller/agent-invoker.js';
import { type Harness, startHarness } from '../agent/harness.js';
import { freePort } from '../fixtures/free-port.js';

const MiB = 2 ** 20;
let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

describe('AgentInvoker', () => {
  it('sends the duration and memory as the function expects them', async () => {
    const calls: unknown[] = [];
    const invoker = new AgentInvoker(
      {
        invoke: async (id, request) => {
          calls.push({ id, request });
          return { status: 200, contentType: null, body: '{}', durationMs: 1 };
        },
      },
      5_000,
    );
    await invoker.invoke(
      { instanceId: 'i-0123456789ab', functionName: 'fn-0001' },
      { durationMs: 250.5, memoryBytes: 256 * MiB },
    );
    expect(calls).toEqual([
      {
        id: 'i-0123456789ab',
        request: { payload: { durationMs: 250.5, memoryMiB: 256 }, timeoutMs: 5_251 },
      },
    ]);
  });

  it("fails the invocation with the function's status and body", async () => {
    harness = await startHarness();
    const port = await freePort();
    const { id } = await harness.client.createInstance({
      command: [
        process.execPath,
        '-e',
        `require('node:http').createServer((q, s) => { s.writeHead(503); s.end('overloaded'); }).listen(${port}, '127.0.0.1')`,
      ],
      memoryBytes: 64 * MiB,
      port,
    });
    const invoker = new AgentInvoker(harness.client, 10_000);
    await expect(
      invoker.invoke(
        { instanceId: id, functionName: 'fn-0002' },
        { durationMs: 0, memoryBytes: MiB },
      ),
    ).rejects.toThrow(`fn-0002 (${id}) answered 503: overloaded`);
  });
});
