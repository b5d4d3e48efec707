// The in-guest agent on the patched 6.12 kernel: the host plugs memory over QMP, starts an
// instance through the agent's API, the instance's memory lands in its partition, it exits, the
// partition is reclaimed with zero migrations and the events arrive; then the agent is killed
// with -9 mid-flight, restarted, adopts the running instance, which wrote output all along, and
// still reclaims its partition.
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUEST_FUNCTION, GUEST_MEMHOG, GUEST_PACKAGE } from '../../scripts/testbed/initramfs.js';
import {
  bootGuest,
  buildHotMemKernel,
  type Guest,
  hotMemKernels,
  kernelSuiteTitle,
  resizeMeasured,
  vmstatSnapshot,
} from '../../scripts/testbed/testbed.js';
import { GiB, MiB } from '../../scripts/testbed/vm.js';

const AGENT_PORT = 7071;
const TOKEN = 'e2e-token-0123456789abcdef';

interface AgentEvent {
  type: string;
  partition?: number;
  instance?: { id: string; exit: unknown };
  report?: { blocks: number; bytes: number; pagesMigrated: number };
}

class AgentClient {
  readonly events: AgentEvent[] = [];

  constructor(private readonly port: number) {}

  call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: this.port,
          method,
          path,
          timeout: 120_000,
          headers: {
            authorization: `Bearer ${TOKEN}`,
            ...(payload ? { 'content-type': 'application/json' } : {}),
          },
        },
        (res) => {
          let raw = '';
          res.setEncoding('utf8').on('data', (d: string) => {
            raw += d;
          });
          res.on('end', () => {
            const json = res.headers['content-type']?.startsWith('application/json');
            resolve({ status: res.statusCode ?? 0, body: (json ? JSON.parse(raw) : raw) as T });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`agent ${method} ${path}: no answer`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Follows GET /v1/events into this.events until the agent goes away. */
  follow(): void {
    const req = request({
      host: '127.0.0.1',
      port: this.port,
      path: '/v1/events',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    req.on('response', (res) => {
      let buf = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) this.events.push(JSON.parse(line) as AgentEvent);
        }
      });
    });
    req.on('error', () => undefined);
    req.end();
  }

  /** Polls until `check` returns a value, with growing pauses, up to timeoutMs. */
  async until<T>(
    what: string,
    check: () => Promise<T | undefined> | T | undefined,
    timeoutMs = 60_000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let delay = 50;
    for (;;) {
      const value = await Promise.resolve(check()).catch(() => undefined);
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1000);
    }
  }
}

// Not on the debug build: the partition suite covers the kernel side there.
for (const kernel of hotMemKernels().filter((k) => !k.debug)) {
  describe.skipIf(kernel.unavailable !== undefined)(
    kernelSuiteTitle('hotmem agent in the guest', kernel),
    () => {
      let g: Guest;
      let agent: AgentClient;
      let agentPid: number;

      const startAgent = async (...flags: string[]) => {
        agentPid = await g.guest.spawn([
          '/usr/bin/node',
          `${GUEST_PACKAGE}/dist/lib/cli.js`,
          'agent',
          '--listen',
          `0.0.0.0:${AGENT_PORT}`,
          '--token-file',
          '/run/agent-token',
          ...flags,
        ]);
        await agent.until('agent health', async () => {
          const r = await agent.call<{ binding: string }>('GET', '/v1/health');
          return r.status === 200 ? r.body : undefined;
        });
        agent.follow();
      };

      const stdout = async (id: string) =>
        (await agent.call<{ output: { stdout: string | null } }>('GET', `/v1/instances/${id}`)).body
          .output.stdout ?? '';

      /** Waits until the instance's memhog has faulted in all of its memory. */
      const instanceReady = (id: string) =>
        agent.until(`instance ${id} ready`, async () =>
          (await stdout(id)).includes('memhog ready') ? true : undefined,
        );

      /** The numbers of the "tick N" lines in the instance's kept stdout. */
      const ticks = async (id: string) =>
        [...(await stdout(id)).matchAll(/tick (\d+)/g)].map((match) => Number(match[1]));

      beforeAll(async () => {
        const serverPort = 7070;
        g = await bootGuest(await buildHotMemKernel(kernel), {
          hotplugRegion: 2 * GiB,
          guestPorts: [serverPort, AGENT_PORT],
        });
        agent = new AgentClient(g.vm.hostPorts.get(AGENT_PORT) as number);
        await g.guest.write('/run/agent-token', TOKEN);
        // The agent refuses a token file others can read.
        await g.guest.check([
          '/usr/bin/node',
          '-e',
          "require('node:fs').chmodSync('/run/agent-token', 0o600)",
        ]);
        await g.vm.virtioMem.resize(1 * GiB, { timeoutMs: 60_000 });
        await startAgent();
      });

      afterAll(async () => {
        await g?.stop();
        if (g) expect(g.vm.kernelProblems()).toEqual([]);
      });

      it('runs an instance in its own partition and reclaims it on exit with zero migrations', async () => {
        expect((await agent.call<{ binding: string }>('GET', '/v1/health')).body.binding).toBe(
          'bound',
        );
        const moved = await vmstatSnapshot(g.guest);
        const started = await agent.call<{ id: string; pid: number; partition: number }>(
          'POST',
          '/v1/instances',
          {
            command: [GUEST_MEMHOG, '200'],
            memoryBytes: 256 * MiB,
          },
        );
        expect(started.status).toBe(201);
        const { id, partition } = started.body;
        expect(partition).toEqual(expect.any(Number));

        await instanceReady(id);
        const parts = (
          await agent.call<{
            partitions: { id: number; state: string; presentBytes: number; freeBytes: number }[];
          }>('GET', '/v1/partitions')
        ).body.partitions;
        const mine = parts.find((p) => p.id === partition);
        expect(mine?.state).toBe('bound');
        expect((mine?.presentBytes ?? 0) - (mine?.freeBytes ?? 0)).toBeGreaterThanOrEqual(
          200 * MiB,
        );

        expect(
          (await agent.call('POST', `/v1/instances/${id}/stop`, { graceMs: 1000 })).status,
        ).toBe(200);
        const reclaimed = await agent.until('partition-reclaimed event', () =>
          agent.events.find((e) => e.type === 'partition-reclaimed' && e.partition === partition),
        );
        const migrated = await moved('pgmigrate_success');

        expect(
          agent.events.some((e) => e.type === 'instance-exited' && e.instance?.id === id),
        ).toBe(true);
        expect(
          agent.events.some((e) => e.type === 'partition-released' && e.partition === partition),
        ).toBe(true);
        expect(reclaimed.report).toMatchObject({ bytes: 256 * MiB, pagesMigrated: 0 });
        expect(migrated).toBe(0);
        const metrics = await agent.call<string>('GET', '/metrics');
        expect(metrics.body).toMatch(/^hotmem_reclaims_total 1$/m);
        expect(metrics.body).toMatch(/^hotmem_pages_migrated_total 0$/m);
      });

      it('relays invocations to a function in its partition, and times its cold start', async () => {
        const started = await agent.call<{ id: string; partition: number | null }>(
          'POST',
          '/v1/instances',
          {
            command: ['/usr/bin/node', GUEST_FUNCTION],
            env: { PORT: '8081', FOOTPRINT_MIB: '48' },
            memoryBytes: 128 * MiB,
            port: 8081,
          },
        );
        expect(started.status).toBe(201);
        const { id, partition } = started.body;
        expect(partition).toEqual(expect.any(Number));
        // The first invocation waits for the cold start (node starts in seconds under TCG).
        const first = await agent.call<{ status: number; body: string }>(
          'POST',
          `/v1/instances/${id}/invoke`,
          { payload: { durationMs: 50, memoryMiB: 16 }, timeoutMs: 60_000 },
        );
        expect(first.status).toBe(200);
        expect(first.body.status).toBe(200);
        expect(JSON.parse(first.body.body)).toMatchObject({ ok: true });
        const summary = await agent.call<{ startedAt: string; readyAt: string | null }>(
          'GET',
          `/v1/instances/${id}`,
        );
        expect(summary.body.readyAt).not.toBeNull();
        const coldMs =
          Date.parse(summary.body.readyAt as string) - Date.parse(summary.body.startedAt);
        console.log(`function cold start in the guest (TCG): ${coldMs} ms`);
        expect(agent.events.some((e) => e.type === 'instance-ready' && e.instance?.id === id)).toBe(
          true,
        );
        const parts = (
          await agent.call<{
            partitions: { id: number; presentBytes: number; freeBytes: number }[];
          }>('GET', '/v1/partitions')
        ).body.partitions;
        const mine = parts.find((p) => p.id === partition);
        // Its 48 MiB footprint is in its partition.
        expect((mine?.presentBytes ?? 0) - (mine?.freeBytes ?? 0)).toBeGreaterThanOrEqual(48 * MiB);
        expect(
          (await agent.call('POST', `/v1/instances/${id}/stop`, { graceMs: 1000 })).status,
        ).toBe(200);
        const reclaimed = await agent.until('the function partition reclaimed', () =>
          agent.events.find((e) => e.type === 'partition-reclaimed' && e.partition === partition),
        );
        expect(reclaimed.report?.pagesMigrated).toBe(0);
      });

      it("keeps a flooding instance's output file at its cap, copied by a relay outside its cgroup", async () => {
        const started = await agent.call<{ id: string; pid: number }>('POST', '/v1/instances', {
          command: ['/bin/sh', '-c', 'while :; do echo flood flood flood flood flood flood; done'],
          memoryBytes: 128 * MiB,
        });
        expect(started.status).toBe(201);
        const { id } = started.body;
        const dir = `/run/hotmem/instances/${id}`;
        const relayPid = Number(
          (await agent.until('relay.pid written', () => g.guest.read(`${dir}/relay.pid`))).trim(),
        );
        let largest = 0;
        const deadline = Date.now() + 3_000;
        while (Date.now() < deadline) {
          const size = Number(
            (await g.guest.check(['/bin/sh', '-c', `wc -c < ${dir}/stdout`])).trim(),
          );
          largest = Math.max(largest, size);
        }
        console.log(`flooding instance: largest stdout file seen ${largest} bytes`);
        expect(largest).toBeGreaterThan(0);
        expect(largest).toBeLessThanOrEqual(256 * 1024);
        const procs = await g.guest.read(`/sys/fs/cgroup/hotmem/${id}/cgroup.procs`);
        expect(procs.split('\n').map(Number)).toContain(started.body.pid);
        expect(procs.split('\n').map(Number)).not.toContain(relayPid);
        expect(
          (await agent.call('POST', `/v1/instances/${id}/stop`, { graceMs: 1000 })).status,
        ).toBe(200);
        // The copier ends with the instance: every write end of its pipes is gone.
        await agent.until('the relay to exit', async () =>
          (await g.guest.run(['/bin/sh', '-c', `kill -0 ${relayPid}`])).code !== 0
            ? true
            : undefined,
        );
      });

      it('adopts a running instance after kill -9 and a restart, then reclaims its partition', async () => {
        // memhog holds the partition; the shell prints a line every 200 ms, through the kill and
        // the restart. Its stdout is a file, not a pipe to the agent: a write while no agent runs
        // must neither fail nor raise SIGPIPE.
        const started = await agent.call<{ id: string; partition: number }>(
          'POST',
          '/v1/instances',
          {
            command: [
              '/bin/sh',
              '-c',
              `${GUEST_MEMHOG} 100 & i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2 || exit 1; done`,
            ],
            memoryBytes: 128 * MiB,
          },
        );
        expect(started.status).toBe(201);
        const { id, partition } = started.body;
        await instanceReady(id);
        const beforeKill = await ticks(id);

        await g.guest.signal(agentPid, 'SIGKILL');
        await g.guest.wait(agentPid);
        agent.events.length = 0;
        await startAgent();

        const adopted = await agent.call<{ state: string; adopted: boolean; partition: number }>(
          'GET',
          `/v1/instances/${id}`,
        );
        expect(adopted.body).toMatchObject({ state: 'running', adopted: true, partition });
        // Every line, from before the kill, while no agent ran, and after the restart, in order.
        const atRestart = await ticks(id);
        expect(atRestart.length).toBeGreaterThan(beforeKill.length);
        const afterRestart = await agent.until('ticks written after the restart', async () => {
          const now = await ticks(id);
          return now.length >= atRestart.length + 3 ? now : undefined;
        });
        expect(afterRestart).toEqual(Array.from({ length: afterRestart.length }, (_, i) => i + 1));
        expect(await stdout(id)).toContain('memhog ready');
        expect((await agent.call<{ state: string }>('GET', `/v1/instances/${id}`)).body.state).toBe(
          'running',
        );
        expect(
          (await agent.call('POST', `/v1/instances/${id}/stop`, { graceMs: 1000 })).status,
        ).toBe(200);
        const reclaimed = await agent.until('partition-reclaimed event after restart', () =>
          agent.events.find((e) => e.type === 'partition-reclaimed' && e.partition === partition),
        );
        expect(reclaimed.report?.pagesMigrated).toBe(0);
      });

      it('leaves HotMem unused with --unbound, as on a stock kernel', async () => {
        await g.guest.signal(agentPid, 'SIGTERM');
        await g.guest.wait(agentPid);
        await startAgent('--unbound');
        try {
          const health = await agent.call<{ hotmem: boolean; binding: string }>(
            'GET',
            '/v1/health',
          );
          expect(health.body).toMatchObject({ hotmem: false, binding: 'unbound' });
          const started = await agent.call<{ id: string; partition: number | null }>(
            'POST',
            '/v1/instances',
            { command: ['/bin/sh', '-c', 'exit 0'], memoryBytes: 64 * MiB },
          );
          expect(started.body.partition).toBeNull();
        } finally {
          await g.guest.signal(agentPid, 'SIGTERM');
          await g.guest.wait(agentPid);
          await startAgent();
        }
      });

      it('lets the host unplug the reclaimed memory without migrating a page', async () => {
        const { ms, moved } = await resizeMeasured(g, 0, 60_000);
        console.log(`virtio-mem unplug of 1 GiB after the agent's reclaims: ${ms.toFixed(1)} ms`);
        expect(await g.vm.virtioMem.size()).toBe(0);
        expect(await moved('pgmigrate_success')).toBe(0);
      });
    },
  );
}
