// The agent's HTTP API end to end on a unix socket in a temp dir: real server, real child
// processes, temp-dir cgroups, and a fake partition manager standing in for the kernel.
import { readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../../lib/agent/agent.js';
import { AgentClient, AgentRequestError } from '../../../lib/agent/client.js';
import { CgroupTree } from '../../../lib/cgroup.js';
import { FAKE_BLOCK_BYTES, FakePartitionManager } from './fake-partition-manager.js';
import { collectEvents, type Harness, startHarness } from './harness.js';

const MiB = 2 ** 20;
let harness: Harness | undefined;

afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

/** A raw request, for what the client would never send. */
function raw(
  socketPath: string,
  method: string,
  urlPath: string,
  body?: string,
  headers: http.OutgoingHttpHeaders = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath, method, path: urlPath, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    request.on('error', reject);
    request.end(body);
  });
}

/** The stand-in launcher writes its argv right after it starts, maybe after we got the 201. */
async function readWhenWritten(file: string): Promise<string> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.endsWith('\n\n') || Date.now() > deadline) return text;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function expectError(
  promise: Promise<unknown>,
  status: number,
  code: string,
  message?: RegExp,
) {
  const error = await promise.catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(AgentRequestError);
  expect(error).toMatchObject({ status, code });
  if (message) expect((error as Error).message).toMatch(message);
}

describe('agent API without HotMem (unbound mode)', () => {
  it('answers health and says instances run unbound', async () => {
    harness = await startHarness();
    await expect(harness.client.health()).resolves.toMatchObject({
      status: 'ok',
      hotmem: false,
      binding: 'unbound',
      instancesRunning: 0,
    });
  });

  it('runs an instance, shows its output and exit, and removes its cgroup', async () => {
    harness = await startHarness();
    const events = await harness.client.events();
    const created = await harness.client.createInstance({
      command: [process.execPath, '-e', 'console.log("hi from", process.env.WHO)'],
      env: { WHO: 'instance' },
      memoryBytes: 64 * MiB,
    });
    expect(created).toMatchObject({
      id: expect.stringMatching(/^i-[0-9a-f]{12}$/),
      partition: null,
    });
    expect(created.pid).toBeGreaterThan(0);
    const seen = await collectEvents(events, (event) => event.type === 'instance-exited');
    expect(seen.map((event) => event.type)).toEqual(['instance-started', 'instance-exited']);

    const detail = (await harness.client.json('GET', `/v1/instances/${created.id}`)) as {
      state: string;
      exit: { code: number };
      output: { stdout: string };
    };
    expect(detail).toMatchObject({ state: 'exited', exit: { code: 0, reason: 'exited' } });
    expect(detail.output.stdout).toBe('hi from instance\n');
    expect(await exists(path.join(harness.cgroupRoot, 'hotmem', created.id))).toBe(false);
    expect(await exists(path.join(harness.stateDir, `${created.id}.json`))).toBe(false);
    expect(await exists(path.join(harness.stateDir, created.id))).toBe(false);
  });

  it('stops an instance with SIGTERM and lists it as stopped', async () => {
    harness = await startHarness();
    const { id } = await harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 16 * MiB,
    });
    const running = (await harness.client.json('GET', '/v1/instances')) as {
      instances: Array<{ id: string; state: string }>;
    };
    expect(running.instances).toEqual([expect.objectContaining({ id, state: 'running' })]);
    const stopped = await harness.client.json('POST', `/v1/instances/${id}/stop`, {
      graceMs: 1000,
    });
    expect(stopped).toMatchObject({
      id,
      state: 'exited',
      exit: { signal: 'SIGTERM', reason: 'stopped' },
    });
  });

  it("waits out a stop's grace longer than the client's own timeout", async () => {
    harness = await startHarness();
    const { id } = await harness.client.createInstance({
      command: ['sh', '-c', "trap '' TERM; echo trapped; exec sleep 30"],
      memoryBytes: 16 * MiB,
    });
    // A SIGTERM before the trap is set would end it at once.
    await expect
      .poll(async () => (harness as Harness).agent.getInstance(id).stdout?.toString())
      .toContain('trapped');
    const impatient = new AgentClient({ socketPath: harness.socketPath }, { timeoutMs: 500 });
    // SIGTERM is ignored: the answer comes after the 1.5 s grace and the SIGKILL.
    const stopped = await impatient.stopInstance(id, { graceMs: 1_500 });
    expect(stopped).toMatchObject({ id, state: 'exited', exit: { signal: 'SIGKILL' } });
  });

  it('answers partition routes with HOTMEM_UNAVAILABLE', async () => {
    harness = await startHarness();
    await expectError(harness.client.partitions(), 503, 'HOTMEM_UNAVAILABLE');
    await expectError(harness.client.memory(), 503, 'HOTMEM_UNAVAILABLE');
  });

  it('rejects invalid instance requests, naming the field', async () => {
    harness = await startHarness();
    const { client } = harness;
    const cases: Array<[unknown, RegExp]> = [
      [{ command: 'sleep 1', memoryBytes: 64 * MiB }, /^command: /],
      [{ command: [], memoryBytes: 64 * MiB }, /command: at least the program/],
      [{ command: ['sleep'] }, /memoryBytes: Required/],
      [{ command: ['sleep'], memoryBytes: 1024 }, /memoryBytes: at least 4194304/],
      [{ command: ['sleep'], memoryBytes: 2 ** 41 }, /memoryBytes: at most/],
      [{ command: ['sleep'], memoryBytes: 64 * MiB, cpuWeight: 0 }, /cpuWeight/],
      [{ command: ['sleep'], memoryBytes: 64 * MiB, env: { 'BAD-NAME': 'x' } }, /env\.BAD-NAME/],
      [
        { command: ['sleep'], memoryBytes: 64 * MiB, cwd: 'relative' },
        /cwd: must be an absolute path/,
      ],
      [{ command: ['a\0b'], memoryBytes: 64 * MiB }, /command\.0: must not contain NUL/],
      [{ command: ['sleep'], memoryBytes: 64 * MiB, shell: true }, /Unrecognized key.*shell/],
      [{ command: Array(257).fill('x'), memoryBytes: 64 * MiB }, /at most 256 arguments/],
    ];
    for (const [body, message] of cases) {
      await expectError(
        client.json('POST', '/v1/instances', body),
        400,
        'HOTMEM_INVALID_REQUEST',
        message,
      );
    }
    expect(await harness.agent.listInstances()).toEqual([]);
  });

  it('maps protocol errors to their codes', async () => {
    harness = await startHarness();
    const { socketPath } = harness;
    const json = { 'content-type': 'application/json' };
    const cases: Array<[ReturnType<typeof raw>, number, string]> = [
      [raw(socketPath, 'POST', '/v1/instances', '{"command":', json), 400, 'HOTMEM_INVALID_JSON'],
      [
        raw(socketPath, 'POST', '/v1/instances', 'command=x', { 'content-type': 'text/plain' }),
        415,
        'HOTMEM_UNSUPPORTED_MEDIA_TYPE',
      ],
      [
        raw(socketPath, 'POST', '/v1/instances', 'x'.repeat(300 * 1024), json),
        413,
        'HOTMEM_BODY_TOO_LARGE',
      ],
      [raw(socketPath, 'GET', '/v1/nothing'), 404, 'HOTMEM_NOT_FOUND'],
      [raw(socketPath, 'GET', '/v1/instances/i-000000000000'), 404, 'HOTMEM_INSTANCE_NOT_FOUND'],
      [raw(socketPath, 'GET', '/v1/instances/..%2F..%2Fetc'), 404, 'HOTMEM_INSTANCE_NOT_FOUND'],
      [raw(socketPath, 'DELETE', '/v1/instances'), 405, 'HOTMEM_METHOD_NOT_ALLOWED'],
    ];
    for (const [pending, status, code] of cases) {
      const response = await pending;
      expect({ status: response.status, body: JSON.parse(response.body) }).toMatchObject({
        status,
        body: { error: { code, message: expect.any(String) } },
      });
    }
    expect((await raw(socketPath, 'DELETE', '/v1/instances')).headers.allow).toBe('GET, POST');
  });

  it('reports a command that cannot start as HOTMEM_SPAWN_FAILED and leaves nothing behind', async () => {
    harness = await startHarness();
    await expectError(
      harness.client.createInstance({ command: ['/nonexistent/program'], memoryBytes: 8 * MiB }),
      422,
      'HOTMEM_SPAWN_FAILED',
      /cannot start '\/nonexistent\/program': .*ENOENT/,
    );
    expect(await harness.agent.listInstances()).toEqual([]);
    expect(await new CgroupTree(harness.cgroupRoot).list()).toEqual([]);
  });
});

describe('agent API with partitions (fake partition manager, stand-in launcher)', () => {
  it('binds through the launcher, reclaims after release and reports it', async () => {
    const partitions = new FakePartitionManager();
    harness = await startHarness({ partitions });
    expect(partitions.calls).toEqual(['init']);
    const events = await harness.client.events();
    const { id, partition } = await harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 200 * MiB,
    });
    expect(partition).toBe(0);
    expect(partitions.calls).toEqual(['init', `acquire ${200 * MiB}`]);
    partitions.bind(0);

    const argv = (await readWhenWritten(harness.launcherArgv)).trim().split('\n');
    expect(argv).toEqual([
      '--partition',
      '0',
      '--cgroup',
      path.join(harness.cgroupRoot, 'hotmem', id),
      '--',
      'sleep',
      '30',
    ]);
    expect(await harness.client.partitions()).toContainEqual(
      expect.objectContaining({ id: 0, state: 'bound', instance: id, nrBlocks: 2 }),
    );
    partitions.spareBlocks = 3;
    expect(await harness.client.memory()).toEqual({
      plugged: { blocks: 5, bytes: 5 * FAKE_BLOCK_BYTES },
      spare: { blocks: 3, bytes: 3 * FAKE_BLOCK_BYTES },
      bound: { blocks: 2, bytes: 2 * FAKE_BLOCK_BYTES },
      free: { blocks: 0, bytes: 0 },
      partitions: { empty: 3, bound: 1, free: 0, reclaiming: 0 },
    });

    await harness.client.json('POST', `/v1/instances/${id}/stop`, {});
    partitions.release(0); // what the kernel reports once the instance's mm is gone
    const seen = await collectEvents(events, (event) => event.type === 'partition-reclaimed');
    expect(seen.map((event) => event.type)).toEqual([
      'instance-started',
      'instance-exited',
      'partition-released',
      'partition-reclaimed',
    ]);
    expect(seen.at(-1)).toMatchObject({
      partition: 0,
      report: {
        partition: 0,
        blocks: 2,
        bytes: 2 * FAKE_BLOCK_BYTES,
        durationNs: 1_000_000,
        pagesMigrated: 0,
      },
    });
    expect((await harness.client.partitions())[0]).toMatchObject({
      state: 'empty',
      instance: null,
    });
    partitions.unplug(2); // the host takes back what was reclaimed

    const metrics = (await harness.client.json('GET', '/metrics')) as string;
    expect(metrics).toContain('hotmem_reclaim_duration_seconds_count 1\n');
    expect(metrics).toContain('hotmem_reclaim_duration_seconds_bucket{le="+Inf"} 1\n');
    expect(metrics).toContain('hotmem_reclaims_total 1\n');
    expect(metrics).toContain('hotmem_pages_migrated_total 0\n');
    expect(metrics).toContain('hotmem_partitions{state="empty"} 4\n');
    expect(metrics).toContain(`hotmem_plugged_bytes ${3 * FAKE_BLOCK_BYTES}\n`);
    expect(metrics).toContain(`hotmem_spare_bytes ${3 * FAKE_BLOCK_BYTES}\n`);
    expect(metrics).toContain('hotmem_instances_exited_total 1\n');
  });

  it('reclaims at start a partition left populated and unbound', async () => {
    const partitions = new FakePartitionManager();
    await partitions.acquire(8 * MiB, { timeoutMs: 0 }); // an instance that never started
    harness = await startHarness({ partitions });
    expect(partitions.calls).toEqual([`acquire ${8 * MiB}`, 'init', 'reclaim 0']);
    expect((await harness.client.partitions())[0]).toMatchObject({ state: 'empty' });
  });

  it('answers HOTMEM_NO_PARTITION when none can be populated in time', async () => {
    // Memory for one instance: the second waits for the host to plug more, in vain.
    const partitions = new FakePartitionManager(2, 1);
    harness = await startHarness({ partitions, acquireTimeoutMs: 100 });
    await harness.client.createInstance({ command: ['sleep', '30'], memoryBytes: 8 * MiB });
    await expectError(
      harness.client.createInstance({ command: ['sleep', '30'], memoryBytes: 8 * MiB }),
      503,
      'HOTMEM_NO_PARTITION',
      /within 100 ms/,
    );
  });

  it('reclaims the partition of an instance that failed to start', async () => {
    const partitions = new FakePartitionManager();
    harness = await startHarness({ partitions, launcher: { path: '/nonexistent/hotmem-exec' } });
    const events = await harness.client.events();
    await expectError(
      harness.client.createInstance({ command: ['true'], memoryBytes: 8 * MiB }),
      422,
      'HOTMEM_SPAWN_FAILED',
    );
    await collectEvents(events, (event) => event.type === 'partition-reclaimed');
    expect(partitions.calls).toEqual(['init', `acquire ${8 * MiB}`, 'reclaim 0']);
  });

  it('on shutdown stops instances newest first and reclaims what they leave free', async () => {
    const partitions = new FakePartitionManager();
    harness = await startHarness({ partitions });
    const events = await harness.client.events();
    const first = await harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 8 * MiB,
    });
    const second = await harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 8 * MiB,
    });
    const exited: string[] = [];
    harness.agent.subscribe((event: AgentEvent) => {
      if (event.type === 'instance-exited') exited.push(event.instance.id);
    });
    await harness.agent.shutdown();
    expect(exited).toEqual([second.id, first.id]);
    expect(partitions.calls.slice(-2).sort()).toEqual(['reclaim 0', 'reclaim 1']);
    await expectError(
      harness.client.createInstance({ command: ['true'], memoryBytes: 8 * MiB }),
      503,
      'HOTMEM_SHUTTING_DOWN',
    );
    await events.return(undefined);
  });

  it('refuses an instance whose partition arrives after shutdown began, and reclaims it', async () => {
    const partitions = new FakePartitionManager();
    let plugged = () => {};
    partitions.plugging = new Promise((resolve) => {
      plugged = resolve;
    });
    harness = await startHarness({ partitions });
    const creating = harness.client.createInstance({
      command: ['sleep', '30'],
      memoryBytes: 8 * MiB,
    });
    await expect.poll(() => partitions.calls).toContain(`acquire ${8 * MiB}`);
    const shutdown = harness.agent.shutdown();
    plugged();
    await expectError(creating, 503, 'HOTMEM_SHUTTING_DOWN');
    await shutdown;
    expect(partitions.calls).toContain('reclaim 0');
    expect(harness.agent.listInstances()).toEqual([]);
    expect(await new CgroupTree(harness.cgroupRoot).list()).toEqual([]);
  });
});

describe('agent API over TCP', () => {
  it('requires the bearer token', async () => {
    harness = await startHarness({ endpoint: { host: '127.0.0.1', port: 0, token: 's3cret' } });
    await expect(harness.client.health()).resolves.toMatchObject({ status: 'ok' });
    const port = Number(harness.server.address.split(':').pop());
    for (const authorization of [undefined, 'Bearer wrong', 's3cret', 'Bearer ']) {
      const status = await new Promise<number>((resolve, reject) => {
        http
          .get(
            {
              host: '127.0.0.1',
              port,
              path: '/v1/health',
              headers: authorization ? { authorization } : {},
            },
            (response) => {
              response.resume();
              resolve(response.statusCode ?? 0);
            },
          )
          .on('error', reject);
      });
      expect(status, String(authorization)).toBe(401);
    }
  });
});
