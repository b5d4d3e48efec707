/**
 * What the controller needs of the world outside it: the in-guest agent, a way to send one
 * invocation to an instance, and time. Each is narrow so that tests can hold every rule a real
 * implementation has, and so that the controller stays the one owner of the pool and the budget.
 */
import type { AgentEvent, AgentHealth } from '../../agent/agent.js';
import type { CreateInstanceRequest } from '../../agent/schemas.js';
import type { SubscriberDropped } from '../../agent/server.js';

/** The agent's API as the controller uses it (docs/agent-api.md); AgentClient implements it. */
export interface AgentApi {
  /** GET /v1/health: says whether instances are bound to partitions. */
  health(): Promise<AgentHealth>;
  /** POST /v1/instances: resolves once the instance runs, bound to `partition` (null unbound). */
  createInstance(
    request: CreateInstanceRequest,
  ): Promise<{ id: string; pid: number; partition: number | null }>;
  /** POST /v1/instances/:id/stop: resolves once the instance has exited and been cleaned up. */
  stopInstance(id: string, options: { graceMs: number }): Promise<unknown>;
  /** GET /v1/events: resolves once subscribed, so no later event is missed. */
  events(): Promise<AsyncIterable<AgentEvent | SubscriberDropped>>;
}

/** Sends one invocation to a running instance and resolves when its answer has arrived. */
export interface Invoker {
  invoke(
    target: { instanceId: string; functionName: string },
    request: { durationMs: number; memoryBytes: number },
  ): Promise<void>;
}

/** Time as the controller sees it, in milliseconds; tests drive it by hand. */
export interface Clock {
  now(): number;
  /** Calls `callback` once after `ms`; the returned function cancels it. */
  setTimeout(callback: () => void, ms: number): () => void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(callback, ms) {
    const timer = setTimeout(callback, ms);
    return () => clearTimeout(timer);
  },
};
