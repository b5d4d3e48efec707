/**
 * The Invoker of a real VM: each invocation goes through the agent's API
 * (POST /v1/instances/:id/invoke), which relays it to the instance's port in the guest.
 * The payload is what scripts/testbed/guest/function.mjs takes: `{durationMs, memoryMiB}`.
 */
import type { AgentClient } from '../../agent/client.js';
import type { Invoker } from './ports.js';

const MiB = 2 ** 20;

export class AgentInvoker implements Invoker {
  /**
   * @param startupMs time allowed on top of an invocation's duration: the instance's own
   *   start (node under TCG takes seconds) and the relay.
   */
  constructor(
    private readonly agent: Pick<AgentClient, 'invoke'>,
    private readonly startupMs = 60_000,
  ) {}

  async invoke(
    target: { instanceId: string; functionName: string },
    request: { durationMs: number; memoryBytes: number },
  ): Promise<void> {
    const result = await this.agent.invoke(target.instanceId, {
      payload: { durationMs: request.durationMs, memoryMiB: request.memoryBytes / MiB },
      timeoutMs: Math.ceil(request.durationMs + this.startupMs),
    });
    if (result.status !== 200) {
      throw new Error(
        `${target.functionName} (${target.instanceId}) answered ${result.status}: ${result.body.slice(0, 200)}`,
      );
    }
  }
}
