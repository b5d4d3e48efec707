// The controller against a fake VM (fake-vm.ts) whose device, agent and instances refuse what
// the real ones refuse: a start before the memory is plugged, an unplug of memory still in use,
// an invocation to an instance that is not running.
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { AgentClient } from '../../../lib/agent/client.js';
import {
  Controller,
  type ControllerConfigInput,
  type Invocation,
} from '../../../lib/host/controller/controller.js';
import type { AgentApi } from '../../../lib/host/controller/ports.js';
import { HotplugMemoryError } from '../../../lib/host/vmm/hotplug-memory.js';
import { FakeVm, type FakeVmOptions, GiB, MiB } from './fake-vm.js';

async function setup(
  mode: 'hotmem' | 'stock',
  config: Partial<ControllerConfigInput> = {},
  vmOptions: Partial<FakeVmOptions> = {},
) {
  const vm = new FakeVm({ mode: mode === 'hotmem' ? 'bound' : 'unbound', ...vmOptions });
  const controller = new Controller(
    {
      hotplug: vm.hotplug,
      agent: vm.agent,
      invoker: vm.invoker,
      instanceCommand: (name) => ({ command: ['/usr/bin/node', `/srv/${name}.mjs`] }),
      clock: vm.clock,
    },
    { mode, budgetBytes: 2 * GiB, keepAliveMs: 1_000, retryDelayMs: 100, ...config },
  );
  await controller.start();
  return { vm, controller };
}

const call = (functionName: string, memoryMiB: number, durationMs: number): Invocation => ({
  functionName,
  memoryBytes: memoryMiB * MiB,
  durationMs,
});

describe('Controller scale-up and the warm pool', () => {
  it('plugs the instance size before starting it, then serves the invocation cold', async () => {
    const { vm, controller } = await setup('hotmem');
    const done = controller.submit(call('thumb', 200, 100));
    await vm.clock.advance(500);
    const record = await done;
    expect(record).toMatchObject({ start: 'cold', queueWaitMs: 0, serviceMs: 100, error: null });
    expect(record.coldStartMs).toBeGreaterThanOrEqual(20); // two 128 MiB blocks, 10 ms each
    // The plug is part of the cold start; the agent's start is the rest.
    expect(record.plugWaitMs).toBeGreaterThanOrEqual(20);
    expect(record.plugWaitMs).toBeLessThanOrEqual(record.coldStartMs);
    expect(vm.log).toEqual(['resize 256M', 'start i-1', 'invoke i-1']);
    expect(vm.partitions.get(0)).toBe(256 * MiB);
    expect(controller.heldBytes).toBe(256 * MiB);
  });

  it('reuses an idle instance of the function within its keep-alive', async () => {
    const { vm, controller } = await setup('hotmem');
    const first = controller.submit(call('thumb', 200, 100));
    await vm.clock.advance(500);
    await first;
    const second = controller.submit(call('thumb', 200, 100));
    await vm.clock.advance(200);
    expect(await second).toMatchObject({ start: 'warm', queueWaitMs: 0, coldStartMs: 0 });
    expect(vm.log).toEqual(['resize 256M', 'start i-1', 'invoke i-1', 'invoke i-1']);
  });

  it('scales an instance down once its keep-alive expires, not before', async () => {
    const { vm, controller } = await setup('hotmem', { keepAliveMs: 1_000 });
    const done = controller.submit(call('thumb', 200, 100));
    await vm.clock.advance(200);
    const { completionMs } = await done;
    await vm.clock.advance(completionMs + 999 - vm.clock.now());
    expect(vm.log).not.toContain('exited i-1');
    await vm.clock.advance(500);
    expect(vm.log.slice(3)).toEqual(['exited i-1', 'reclaimed p0', 'resize 0M']);
    expect(controller.metrics.scaleDowns).toEqual([
      expect.objectContaining({
        instanceId: 'i-1',
        reason: 'keep-alive',
        outcome: 'unplugged',
        stopMs: 20,
        reclaimMs: 30,
        errors: [],
      }),
    ]);
    expect(controller.metrics.scaleDowns[0]?.unplugMs).toBeGreaterThanOrEqual(20);
    expect([vm.requested, vm.plugged, controller.heldBytes]).toEqual([0, 0, 0]);
  });

  it('scales idle instances down on close(), leaving no keep-alive timer behind', async () => {
    const { vm, controller } = await setup('hotmem', { keepAliveMs: 60_000 });
    const done = controller.submit(call('thumb', 200, 100));
    await vm.clock.advance(200);
    await done;
    const closed = controller.close();
    await vm.clock.advance(200);
    await closed;
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      reason: 'closing',
      outcome: 'unplugged',
    });
    expect(vm.requested).toBe(0);
    expect(vm.clock.pendingTimers).toBe(0);
  });

  it('gives a queued invocation an instance of its function as soon as one is idle', async () => {
    const { vm, controller } = await setup('hotmem', { budgetBytes: 256 * MiB });
    const first = controller.submit(call('thumb', 256, 100));
    const second = controller.submit(call('thumb', 256, 100));
    await vm.clock.advance(400);
    const [a, b] = await Promise.all([first, second]);
    expect(b.start).toBe('warm');
    expect(b.queueWaitMs).toBe(a.completionMs - a.arrivalMs);
    expect(vm.resizes).toEqual([256 * MiB]);
  });
});

describe('Controller memory budget', () => {
  it('never requests more than the budget and starts queued invocations in arrival order', async () => {
    // 640 MiB: a and b take 512; c (256) waits; d (128) would fit but must not overtake c.
    const { vm, controller } = await setup('hotmem', {
      budgetBytes: 640 * MiB,
      keepAliveMs: 100,
    });
    const a = controller.submit(call('a', 256, 1_000));
    const b = controller.submit(call('b', 256, 5_000));
    const c = controller.submit(call('c', 256, 10));
    const d = controller.submit(call('d', 128, 10));
    await vm.clock.advance(10_000);
    const [ra, rb, rc, rd] = await Promise.all([a, b, c, d]);
    for (const record of [ra, rb, rc, rd]) expect(record.error).toBeNull();
    expect([ra.queueWaitMs, rb.queueWaitMs]).toEqual([0, 0]);
    // c waited for a's memory to be unplugged: a's run, then (a evicted for c as soon as it was
    // idle) its stop, reclaim and unplug.
    expect(rc.queueWaitMs).toBeGreaterThan(1_000);
    expect(rd.queueWaitMs).toBeGreaterThanOrEqual(rc.queueWaitMs);
    expect(Math.max(...vm.resizes)).toBeLessThanOrEqual(640 * MiB);
    for (const sample of controller.metrics.memory) {
      expect(sample.requestedBytes).toBeLessThanOrEqual(640 * MiB);
    }
  });

  it('names the field of an invalid invocation', async () => {
    const { controller } = await setup('hotmem');
    expect(() => controller.submit({ ...call('thumb', 128, 10), durationMs: -1 })).toThrow(
      /^invocation: durationMs: /,
    );
  });

  it('refuses an invocation larger than the budget at once', async () => {
    const { controller } = await setup('hotmem', { budgetBytes: 256 * MiB });
    const record = await controller.submit(call('big', 300, 10));
    expect(record.error).toMatch(/more than the budget/);
    expect(record.serviceMs).toBeNull();
  });

  it('refuses in hotmem mode an instance larger than one plug step', async () => {
    const { vm, controller } = await setup('hotmem', { budgetBytes: 4 * GiB });
    const record = await controller.submit(call('big', 1025, 10));
    expect(record.error).toBe(`needs ${1152 * MiB} bytes, more than one plug step`);
    expect(vm.resizes).toEqual([]);
  });

  it('plugs in steps of at most 1 GiB, each taken by an instance before the next', async () => {
    const { vm, controller } = await setup('hotmem', { budgetBytes: 3 * GiB, keepAliveMs: 60_000 });
    const done = ['a', 'b', 'c'].map((name) => controller.submit(call(name, 1024, 10)));
    await vm.clock.advance(2_000);
    for (const record of await Promise.all(done)) expect(record.error).toBeNull();
    expect(vm.resizes).toEqual([GiB, 2 * GiB, 3 * GiB]);
  });
});

describe('Controller scale-down ordering and failures', () => {
  async function oneIdleInstance(
    mode: 'hotmem' | 'stock',
    config: Partial<ControllerConfigInput> = {},
    vmOptions: Partial<FakeVmOptions> = {},
  ) {
    const context = await setup(mode, { keepAliveMs: 100, ...config }, vmOptions);
    const done = context.controller.submit(call('thumb', 256, 10));
    await context.vm.clock.advance(50);
    expect((await done).error).toBeNull();
    return context;
  }

  it('unplugs only after the partition-reclaimed event, however late it comes', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem', {}, { reclaimDelayMs: 2_000 });
    await vm.clock.advance(1_000); // keep-alive expired, instance exited, reclaim pending
    expect(vm.log).toContain('exited i-1');
    expect(vm.requested).toBe(256 * MiB);
    await vm.clock.advance(2_000);
    const order = vm.log.slice(3);
    expect(order).toEqual(['exited i-1', 'reclaimed p0', 'resize 0M']);
    // The host's wait, and the guest kernel's time in the reclaim, from the event's report.
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      reclaimMs: 2_000,
      reclaimKernelMs: 1,
    });
  });

  it('reports a reclaim that does not come in time, keeps its memory, resumes when it comes', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem', {
      reclaimTimeoutMs: 1_000,
      budgetBytes: 256 * MiB,
    });
    vm.reclaim = 'silent';
    await vm.clock.advance(2_000);
    const [scaleDown] = controller.metrics.scaleDowns;
    expect(scaleDown?.outcome).toBe('stranded');
    expect(scaleDown?.errors).toEqual([
      'no partition-reclaimed event for partition 0 of i-1 in 1000 ms',
    ]);
    expect([vm.requested, controller.heldBytes]).toEqual([256 * MiB, 256 * MiB]);
    // Its memory is still held: another function has to wait.
    const waiting = controller.submit(call('other', 256, 10));
    await vm.clock.advance(1_000);
    expect(vm.log).not.toContain('start i-2');
    vm.reclaimNow(0);
    await vm.clock.advance(1_000);
    expect(scaleDown?.outcome).toBe('unplugged');
    const record = await waiting;
    expect(record).toMatchObject({ start: 'cold', error: null });
    const reclaimed = vm.log.indexOf('reclaimed p0');
    expect(vm.log.slice(reclaimed, reclaimed + 4)).toEqual([
      'reclaimed p0',
      'resize 0M',
      'resize 256M',
      'start i-2',
    ]);
  });

  it('closes with a scale-down stranded by a missing reclaim, without waiting for it', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem', {
      keepAliveMs: 60_000,
      reclaimTimeoutMs: 1_000,
    });
    vm.reclaim = 'silent';
    let closed = false;
    void controller.close().then(() => {
      closed = true;
    });
    await vm.clock.advance(2_000);
    expect(closed).toBe(true);
    expect(controller.metrics.scaleDowns[0]?.outcome).toBe('stranded');
    expect(controller.heldBytes).toBe(256 * MiB);
  });

  it('strands a scale-down whose reclaim failed: nothing unplugged, memory still held', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem');
    vm.reclaim = 'fail';
    await vm.clock.advance(5_000);
    const [scaleDown] = controller.metrics.scaleDowns;
    expect(scaleDown).toMatchObject({ outcome: 'stranded', unplugMs: null });
    expect(scaleDown?.errors).toEqual(['partition 0 reclaim failed: EBUSY']);
    expect(vm.resizes).toEqual([256 * MiB]);
    expect(controller.heldBytes).toBe(256 * MiB);
  });

  it('subscribes again when the event stream ends, and still sees reclaims', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem', { keepAliveMs: 1_000 });
    vm.endEventStreams();
    await vm.clock.advance(100); // retryDelayMs
    expect(vm.subscriptions).toBe(2);
    await vm.clock.advance(2_000);
    expect(controller.metrics.scaleDowns[0]).toMatchObject({ outcome: 'unplugged', errors: [] });
    expect(vm.requested).toBe(0);
  });

  it('retries a failed stop and then completes the scale-down', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem');
    vm.failStops = 1;
    await vm.clock.advance(2_000);
    const [scaleDown] = controller.metrics.scaleDowns;
    expect(scaleDown).toMatchObject({
      outcome: 'unplugged',
      errors: ['stop attempt 1: stop failed'],
    });
    expect(scaleDown?.stopMs).toBe(100 + 20); // retry delay, then the exit
    expect([vm.requested, controller.heldBytes]).toEqual([0, 0]);
  });

  it('strands a scale-down whose stop keeps failing: the instance runs, its memory stays', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem', { stopAttempts: 3 });
    vm.failStops = 3;
    await vm.clock.advance(5_000);
    const [scaleDown] = controller.metrics.scaleDowns;
    expect(scaleDown?.outcome).toBe('stranded');
    expect(scaleDown?.errors.at(-1)).toMatch(/stopping i-1 failed 3 times: stop failed/);
    expect(vm.instances.get('i-1')?.state).toBe('running');
    expect([vm.requested, controller.heldBytes]).toEqual([256 * MiB, 256 * MiB]);
  });

  it('retries an unplug the VMM refused, holding the memory against the budget until done', async () => {
    const { vm, controller } = await oneIdleInstance('hotmem', { budgetBytes: 256 * MiB });
    vm.failResizes = {
      count: 1,
      error: new HotplugMemoryError('ERR_DEVICE_NOT_ACTIVE', 'not active', { requestedBytes: 0 }),
    };
    const waiting = controller.submit(call('other', 256, 10));
    await vm.clock.advance(5_000);
    const [scaleDown] = controller.metrics.scaleDowns;
    expect(scaleDown?.outcome).toBe('unplugged');
    expect(scaleDown?.unplugMs).toBeGreaterThanOrEqual(100);
    const record = await waiting;
    expect(record.error).toBeNull();
    // The waiting invocation started only once the unplug had completed.
    expect(vm.log.slice(3, 9)).toEqual([
      'exited i-1',
      'reclaimed p0',
      'resize 0M',
      'resize 256M',
      'start i-2',
      'invoke i-2',
    ]);
  });

  it('finishes a plug whose resize timed out by reading the size on retry', async () => {
    const { vm, controller } = await setup('hotmem', { resizeTimeoutMs: 15 });
    const done = controller.submit(call('thumb', 256, 10));
    await vm.clock.advance(500);
    expect((await done).error).toBeNull();
    expect(vm.resizes).toEqual([256 * MiB]);
  });

  it('records a failed invocation and keeps its instance for the next one', async () => {
    const { vm, controller } = await setup('hotmem');
    vm.failInvokes = 1;
    const failed = controller.submit(call('thumb', 256, 100));
    await vm.clock.advance(200);
    expect(await failed).toMatchObject({
      start: 'cold',
      serviceMs: 50,
      error: 'invoke: i-1 answered 502',
    });
    const next = controller.submit(call('thumb', 256, 100));
    await vm.clock.advance(200);
    expect(await next).toMatchObject({ start: 'warm', error: null });
    expect(vm.log.filter((line) => line.startsWith('start'))).toEqual(['start i-1']);
  });

  it('scales down an idle instance that exited on its own, and starts afresh', async () => {
    const { vm, controller } = await setup('hotmem', { keepAliveMs: 60_000 });
    const first = controller.submit(call('thumb', 256, 10));
    await vm.clock.advance(100);
    await first;
    vm.crash('i-1');
    await vm.clock.advance(200);
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      instanceId: 'i-1',
      reason: 'exited',
      outcome: 'unplugged',
    });
    expect(vm.log.slice(3)).toEqual(['crashed i-1', 'reclaimed p0', 'resize 0M']);
    const next = controller.submit(call('thumb', 256, 10));
    await vm.clock.advance(200);
    expect(await next).toMatchObject({ start: 'cold', error: null });
  });

  it('does not return an instance that died during its invocation to the pool', async () => {
    const { vm, controller } = await setup('stock', { keepAliveMs: 60_000 });
    const failed = controller.submit(call('thumb', 256, 100));
    await vm.clock.advance(50);
    vm.crash('i-1');
    await vm.clock.advance(200);
    expect((await failed).error).toBe('invoke: i-1 exited');
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      instanceId: 'i-1',
      outcome: 'unplugged',
    });
    expect([vm.requested, controller.heldBytes]).toEqual([0, 0]);
  });

  it('gives the memory back when the agent refuses to start the instance', async () => {
    const { vm, controller } = await setup('hotmem');
    vm.failCreates = 1;
    const done = controller.submit(call('thumb', 256, 10));
    await vm.clock.advance(500);
    const record = await done;
    expect(record.error).toBe('scale-up failed: command.0: spawn ENOENT');
    expect(record.start).toBe('cold');
    expect(vm.resizes).toEqual([256 * MiB, 0]);
    expect(controller.heldBytes).toBe(0);
  });
});

/** Serves each invocation in turn, leaving its instance idle; the first is the least recent. */
async function idleInstances(
  mode: 'hotmem' | 'stock',
  invocations: Invocation[],
  config: Partial<ControllerConfigInput> = {},
  vmOptions: Partial<FakeVmOptions> = {},
) {
  const context = await setup(
    mode,
    { budgetBytes: 512 * MiB, keepAliveMs: 60_000, ...config },
    vmOptions,
  );
  for (const invocation of invocations) {
    const done = context.controller.submit(invocation);
    await context.vm.clock.advance(invocation.durationMs + 100);
    expect((await done).error).toBeNull();
  }
  return context;
}

describe('Controller eviction of idle instances when the queue waits for memory', () => {
  it('evicts the least recently used idle instance of another function; the queued one starts cold', async () => {
    const { vm, controller } = await idleInstances('hotmem', [
      call('a', 256, 10),
      call('b', 256, 10),
    ]);
    const waiting = controller.submit(call('c', 256, 10));
    await vm.clock.advance(500);
    expect(vm.log.slice(6)).toEqual([
      'exited i-1',
      'reclaimed p0',
      'resize 256M',
      'resize 512M',
      'start i-3',
      'invoke i-3',
    ]);
    const record = await waiting;
    expect(record).toMatchObject({ start: 'cold', error: null });
    // Stop (20 ms), reclaim (30 ms), unplug (two blocks): not b's 60 s keep-alive.
    expect(record.queueWaitMs).toBeLessThan(200);
    expect(controller.metrics.scaleDowns).toEqual([
      expect.objectContaining({ instanceId: 'i-1', reason: 'evicted', outcome: 'unplugged' }),
    ]);
    expect(vm.instances.get('i-2')?.state).toBe('running');
  });

  it('evicts a too small idle instance of the queued invocation’s own function', async () => {
    const { vm, controller } = await idleInstances('hotmem', [call('a', 128, 10)], {
      budgetBytes: 256 * MiB,
    });
    const waiting = controller.submit(call('a', 256, 10));
    await vm.clock.advance(500);
    expect(controller.metrics.scaleDowns).toEqual([
      expect.objectContaining({ instanceId: 'i-1', reason: 'evicted', outcome: 'unplugged' }),
    ]);
    expect(await waiting).toMatchObject({ start: 'cold', error: null });
  });

  it('evicts nothing while all idle memory could not make room, then least recent first', async () => {
    const { vm, controller } = await idleInstances('hotmem', [call('b', 128, 10)]);
    const busy = controller.submit(call('a', 256, 2_000));
    await vm.clock.advance(100);
    // 384 MiB held, 384 needed: b's 128 idle MiB would not make room.
    const waiting = controller.submit(call('c', 384, 10));
    await vm.clock.advance(1_000);
    expect(controller.metrics.scaleDowns).toEqual([]);
    expect(vm.instances.get('i-1')?.state).toBe('running');
    // a's invocation returns: a and b together make room; b, idle longer, goes first.
    await vm.clock.advance(1_500);
    expect((await busy).error).toBeNull();
    expect(controller.metrics.scaleDowns.map((s) => [s.instanceId, s.reason])).toEqual([
      ['i-1', 'evicted'],
      ['i-2', 'evicted'],
    ]);
    expect(await waiting).toMatchObject({ start: 'cold', error: null });
  });

  it('does not evict twice for one need (memory being freed counts); a new head is a new need', async () => {
    const { vm, controller } = await idleInstances('hotmem', [
      call('a', 256, 10),
      call('b', 256, 10),
    ]);
    const c = controller.submit(call('c', 256, 2_000));
    // A second queued invocation while a stops, and another while a's memory is being unplugged.
    const d = controller.submit(call('d', 256, 10));
    await vm.clock.advance(55);
    expect(vm.log.at(-1)).toBe('resize 256M');
    expect(vm.plugged).toBe(512 * MiB);
    const e = controller.submit(call('e', 256, 10));
    expect(controller.metrics.scaleDowns.map((s) => s.instanceId)).toEqual(['i-1']);
    // Once c has a's memory, d heads the queue: a new need, met by evicting b (c is busy). Then
    // e's need is met by d's instance, idle once d returned.
    await vm.clock.advance(500);
    expect(controller.metrics.scaleDowns.map((s) => [s.instanceId, s.reason])).toEqual([
      ['i-1', 'evicted'],
      ['i-2', 'evicted'],
      ['i-4', 'evicted'],
    ]);
    await vm.clock.advance(2_000);
    for (const record of await Promise.all([c, d, e])) {
      expect(record).toMatchObject({ start: 'cold', error: null });
    }
  });

  it('never evicts a busy instance: the queued invocation waits until it is idle', async () => {
    const { vm, controller } = await setup('hotmem', {
      budgetBytes: 256 * MiB,
      keepAliveMs: 60_000,
    });
    const busy = controller.submit(call('a', 256, 2_000));
    await vm.clock.advance(100);
    const waiting = controller.submit(call('b', 256, 10));
    await vm.clock.advance(1_500);
    expect(controller.metrics.scaleDowns).toEqual([]);
    await vm.clock.advance(1_000);
    const served = await busy;
    expect(served).toMatchObject({ serviceMs: 2_000, error: null });
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      instanceId: 'i-1',
      reason: 'evicted',
      startedMs: served.completionMs,
    });
    expect(await waiting).toMatchObject({ start: 'cold', error: null });
  });

  it('with evictIdle false, waits for the idle instance’s keep-alive to expire', async () => {
    const { vm, controller } = await idleInstances('hotmem', [call('a', 256, 10)], {
      budgetBytes: 256 * MiB,
      keepAliveMs: 1_000,
      evictIdle: false,
    });
    const waiting = controller.submit(call('b', 256, 10));
    await vm.clock.advance(500);
    expect(vm.log).not.toContain('exited i-1');
    await vm.clock.advance(1_000);
    expect(controller.metrics.scaleDowns[0]).toMatchObject({ reason: 'keep-alive' });
    const record = await waiting;
    expect(record).toMatchObject({ start: 'cold', error: null });
    expect(record.queueWaitMs).toBeGreaterThan(800);
  });

  for (const [mode, order] of [
    ['hotmem', ['exited i-1', 'reclaimed p0', 'resize 0M', 'resize 256M', 'start i-2']],
    ['stock', ['exited i-1', 'resize 0M', 'resize 256M', 'start i-2']],
  ] as const) {
    it(`${mode}: an eviction is a scale-down, in the scale-down's order`, async () => {
      const { vm, controller } = await idleInstances(
        mode,
        [call('a', 256, 10)],
        {
          budgetBytes: 256 * MiB,
        },
        { reclaimDelayMs: 2_000 },
      );
      const waiting = controller.submit(call('b', 256, 10));
      await vm.clock.advance(1_000);
      // hotmem: the instance exited, its partition not yet reclaimed: nothing unplugged yet.
      if (mode === 'hotmem') expect(vm.requested).toBe(256 * MiB);
      await vm.clock.advance(2_000);
      expect(vm.log.slice(3, 3 + order.length)).toEqual(order);
      expect(await waiting).toMatchObject({ start: 'cold', error: null });
      expect(controller.metrics.scaleDowns[0]).toMatchObject({
        reason: 'evicted',
        outcome: 'unplugged',
        reclaimMs: mode === 'hotmem' ? 2_000 : null,
      });
    });
  }

  it('strands an eviction whose stop keeps failing, and evicts the next idle instance instead', async () => {
    const { vm, controller } = await idleInstances(
      'hotmem',
      [call('a', 256, 10), call('b', 256, 10)],
      {
        stopAttempts: 3,
      },
    );
    vm.failStops = 3;
    const waiting = controller.submit(call('c', 256, 10));
    await vm.clock.advance(1_000);
    const [stranded, next] = controller.metrics.scaleDowns;
    expect(stranded).toMatchObject({ instanceId: 'i-1', reason: 'evicted', outcome: 'stranded' });
    expect(stranded?.errors.at(-1)).toMatch(/stopping i-1 failed 3 times: stop failed/);
    expect(next).toMatchObject({ instanceId: 'i-2', reason: 'evicted', outcome: 'unplugged' });
    expect(await waiting).toMatchObject({ start: 'cold', error: null });
    // a still runs and its memory stays held, as after a failed keep-alive scale-down.
    expect(vm.instances.get('i-1')?.state).toBe('running');
    expect(controller.heldBytes).toBe(512 * MiB);
  });
});

describe('Controller with reclamation disabled (giveBackMemory: false)', () => {
  for (const mode of ['hotmem', 'stock'] as const) {
    it(`${mode}: stops idle instances but keeps their memory plugged for the next scale-up`, async () => {
      const { vm, controller } = await setup(mode, { keepAliveMs: 1_000, giveBackMemory: false });
      const first = controller.submit(call('thumb', 200, 100));
      await vm.clock.advance(300);
      await first;
      await vm.clock.advance(2_000);
      expect(vm.log).toContain('exited i-1');
      expect(controller.metrics.scaleDowns[0]).toMatchObject({ outcome: 'unplugged', errors: [] });
      expect([vm.requested, vm.plugged, controller.heldBytes]).toEqual([256 * MiB, 256 * MiB, 0]);
      // Another function, same size: started on the memory still plugged, with no resize.
      const second = controller.submit(call('resize', 150, 100));
      await vm.clock.advance(300);
      expect(await second).toMatchObject({ start: 'cold', error: null });
      expect(vm.log.filter((line) => line.startsWith('resize'))).toEqual(['resize 256M']);
      // Growth beyond what was ever plugged still plugs, within the budget.
      const third = controller.submit(call('thumb', 200, 100));
      await vm.clock.advance(300);
      expect(await third).toMatchObject({ start: 'cold', error: null });
      expect(vm.requested).toBe(512 * MiB);
    });
  }
});

describe('Controller stock mode', () => {
  it('lowers the requested size right after the instance exited, with no reclaim to wait for', async () => {
    const { vm, controller } = await setup('stock', { keepAliveMs: 100 });
    const done = controller.submit(call('thumb', 256, 10));
    await vm.clock.advance(1_000);
    expect((await done).error).toBeNull();
    expect(vm.log).toEqual(['resize 256M', 'start i-1', 'invoke i-1', 'exited i-1', 'resize 0M']);
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      outcome: 'unplugged',
      reclaimMs: null,
      reclaimKernelMs: null,
    });
  });

  it('sees the same traffic as hotmem mode: same starts, same plugs', async () => {
    const traffic = [
      call('a', 256, 300),
      call('a', 256, 300),
      call('b', 512, 50),
      call('a', 256, 10),
    ];
    const runs = [];
    for (const mode of ['hotmem', 'stock'] as const) {
      const { vm, controller } = await setup(mode, { budgetBytes: GiB, keepAliveMs: 200 });
      const done = traffic.map((invocation) => controller.submit(invocation));
      await vm.clock.advance(5_000);
      const records = await Promise.all(done);
      runs.push({ starts: records.map((r) => [r.start, r.error]), resizes: vm.resizes });
    }
    expect(runs[1]).toEqual(runs[0]);
  });
});

describe('Controller stock mode, blocks onlined to ZONE_NORMAL: unplugs virtio-mem retries late', () => {
  /**
   * Stock mode on a guest that onlines plugged blocks to ZONE_NORMAL; each invocation served in
   * turn leaves its instance idle (the first is the least recent). Unplugs are reported late
   * after 10 s; resizes are waited for up to 120 s, as in the replay.
   */
  function kernelGuest(invocations: Invocation[], config: Partial<ControllerConfigInput>) {
    return idleInstances(
      'stock',
      invocations,
      { unplugTimeoutMs: 10_000, resizeTimeoutMs: 120_000, ...config },
      { onlining: 'kernel' },
    );
  }

  it('strands an unplug not done in unplugTimeoutMs, holding what is still plugged, and completes it when the retry timer gets it out', async () => {
    const { vm, controller } = await kernelGuest([call('a', 256, 10)], { keepAliveMs: 1_000 });
    const free = vm.pinOnExit('i-1', 4 * MiB);
    await vm.clock.advance(1_100); // keep-alive: stopped, unplug requested, 4 MiB stay
    const [scaleDown] = controller.metrics.scaleDowns;
    expect(scaleDown).toMatchObject({ outcome: 'in-progress', unplugLate: false });
    expect(vm.plugged).toBe(4 * MiB);
    expect(controller.heldBytes).toBe(256 * MiB); // the device was last seen at 256 MiB
    await vm.clock.advance(10_000);
    expect(scaleDown).toMatchObject({ outcome: 'stranded', unplugLate: true, unplugMs: null });
    expect(scaleDown?.errors).toEqual([
      `unplug not done in 10000 ms: the device holds ${4 * MiB} bytes, the target is 0`,
    ]);
    // Read back: only what the device still holds counts against the budget.
    expect(controller.heldBytes).toBe(4 * MiB);
    // Freed, but nothing wakes the guest driver: its retry timer, 50 s after it gave up, does.
    free();
    await vm.clock.advance(30_000);
    expect(scaleDown?.outcome).toBe('stranded');
    await vm.clock.advance(10_000);
    expect(scaleDown).toMatchObject({ outcome: 'unplugged', unplugLate: true });
    expect(scaleDown?.unplugMs).toBeGreaterThanOrEqual(50_000);
    expect(vm.retryTimerFired).toBe(1);
    expect(controller.heldBytes).toBe(0);
    // The request was sent once: sending it again would have woken the guest before its timer.
    expect(vm.resizes).toEqual([256 * MiB, 0]);
  });

  it('plugs for a scale-up the budget has room for at once, not behind a stalled unplug', async () => {
    const { vm, controller } = await kernelGuest([call('a', 256, 10)], { keepAliveMs: 1_000 });
    vm.pinOnExit('i-1', 4 * MiB);
    await vm.clock.advance(2_000);
    expect(vm.waitingForRetryTimer).toBe(true);
    // 256 MiB held for a's unplug, 256 for b: the budget has room.
    const b = controller.submit(call('b', 256, 10));
    await vm.clock.advance(500);
    const record = await b;
    expect(record).toMatchObject({ start: 'cold', queueWaitMs: 0, error: null });
    expect(record.coldStartMs).toBeLessThan(100);
    expect(vm.resizes).toEqual([256 * MiB, 0, 256 * MiB]);
    // b took the memory still plugged: a's unplug merged into b's plug.
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      outcome: 'unplugged',
      unplugLate: false,
    });
    expect([vm.plugged, controller.heldBytes]).toEqual([256 * MiB, 256 * MiB]);
  });

  it('does not count a late unplug as memory on its way back: evicts other idle memory, and loses no invocation', async () => {
    const { vm, controller } = await kernelGuest([call('a', 256, 10), call('b', 256, 10)], {});
    vm.pinOnExit('i-1', 4 * MiB);
    const c = controller.submit(call('c', 256, 10));
    await vm.clock.advance(5_000);
    // a evicted for c; its unplug stalls 4 MiB short, so c waits; b is not evicted yet.
    expect(controller.metrics.scaleDowns.map((s) => [s.instanceId, s.outcome])).toEqual([
      ['i-1', 'in-progress'],
    ]);
    // a's unplug late: b, idle, is evicted for c; once b's unplug is late too, only the 4 MiB
    // still plugged count and c starts.
    await vm.clock.advance(30_000);
    const record = await c;
    expect(record).toMatchObject({ start: 'cold', error: null });
    expect(record.queueWaitMs).toBeGreaterThan(10_000);
    expect(record.queueWaitMs).toBeLessThan(30_000);
    expect(
      controller.metrics.scaleDowns.map((s) => [s.instanceId, s.reason, s.unplugLate]),
    ).toEqual([
      ['i-1', 'evicted', true],
      ['i-2', 'evicted', true],
    ]);
    expect(Math.max(...vm.resizes)).toBeLessThanOrEqual(512 * MiB);
    for (const sample of controller.metrics.memory) {
      expect(sample.requestedBytes).toBeLessThanOrEqual(512 * MiB);
      expect(sample.pluggedBytes).toBeLessThanOrEqual(512 * MiB);
    }
    expect([vm.plugged, controller.heldBytes]).toEqual([256 * MiB, 256 * MiB]);
  });

  it('closes without waiting for an unplug the guest never finishes: stranded, still held', async () => {
    const { vm, controller } = await kernelGuest([call('a', 256, 10)], {});
    vm.pinOnExit('i-1', 4 * MiB);
    let closed = false;
    void controller.close().then(() => {
      closed = true;
    });
    await vm.clock.advance(9_000);
    expect(closed).toBe(false);
    await vm.clock.advance(2_000);
    expect(closed).toBe(true);
    expect(controller.metrics.scaleDowns[0]).toMatchObject({
      reason: 'closing',
      outcome: 'stranded',
      unplugLate: true,
    });
    expect(controller.heldBytes).toBe(4 * MiB);
    // Closed: nothing polls or asks again; only the guest's own retry timer is left.
    await vm.clock.advance(1_000_000);
    expect(vm.resizes).toEqual([256 * MiB, 0]);
    expect(vm.clock.pendingTimers).toBe(1);
  });
});

describe('Controller configuration', () => {
  it('can take AgentClient as its AgentApi', () => {
    expectTypeOf<AgentClient>().toExtend<AgentApi>();
  });

  it('refuses invocations before start()', () => {
    const vm = new FakeVm({ mode: 'bound' });
    const controller = new Controller(
      { ...vm, instanceCommand: () => ({ command: ['x'] }) },
      { mode: 'hotmem', budgetBytes: GiB, keepAliveMs: 0 },
    );
    expect(() => controller.submit(call('thumb', 128, 10))).toThrow(
      'Controller.start() has not been called',
    );
  });

  it('names the field that is wrong', () => {
    const vm = new FakeVm({ mode: 'bound' });
    const deps = {
      hotplug: vm.hotplug,
      agent: vm.agent,
      invoker: vm.invoker,
      instanceCommand: () => ({ command: ['x'] }),
    };
    expect(
      () => new Controller(deps, { mode: 'hotmem', budgetBytes: 100 * MiB, keepAliveMs: 0 }),
    ).toThrow('controller config: budgetBytes: must be a multiple of memoryBlockBytes');
  });

  it('refuses an agent whose binding does not match the mode', async () => {
    for (const [mode, binding] of [
      ['hotmem', 'unbound'],
      ['stock', 'bound'],
    ] as const) {
      const vm = new FakeVm({ mode: binding });
      const controller = new Controller(
        { ...vm, instanceCommand: () => ({ command: ['x'] }) },
        { mode, budgetBytes: GiB, keepAliveMs: 0 },
      );
      await expect(controller.start()).rejects.toThrow(
        `${mode} mode needs an agent in ${binding === 'bound' ? 'unbound' : 'bound'} mode, not ${binding}`,
      );
    }
  });

  it('refuses a budget larger than the device region', async () => {
    await expect(setup('hotmem', { budgetBytes: 16 * GiB })).rejects.toThrow(
      /budgetBytes 17179869184 exceeds the device region/,
    );
  });
});
