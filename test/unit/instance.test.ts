// Instances with real child processes and a temp-dir cgroup tree (see cgroup.test.ts).
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { launcherPath } from '../../lib/binding.js';
import { CgroupTree } from '../../lib/cgroup.js';
import { CleanupStack } from '../../lib/instance/cleanup-stack.js';
import {
  Instance,
  type InstanceEnvironment,
  type InstanceSpec,
  SpawnError,
} from '../../lib/instance/instance.js';
import { OutputRing } from '../../lib/instance/output-ring.js';
import { silentLogger } from '../../lib/log.js';

let dir: string;
let env: InstanceEnvironment;
const running: Instance[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-instance-'));
  const root = path.join(dir, 'cgroup');
  await mkdir(root);
  await writeFile(path.join(root, 'cgroup.controllers'), 'cpu memory\n');
  const cgroups = new CgroupTree(root);
  await cgroups.prepare();
  env = { cgroups, launcher: null, pidfds: null, logger: silentLogger() };
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((instance) => instance.stop(100)));
  await rm(dir, { recursive: true, force: true });
});

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

function spec(id: string, command: string[], extra: Partial<InstanceSpec> = {}): InstanceSpec {
  return { id, command, memoryBytes: 64 * 2 ** 20, partition: null, ...extra };
}

async function start(s: InstanceSpec, cleanup?: CleanupStack): Promise<Instance> {
  const instance = await Instance.start(s, env, cleanup);
  running.push(instance);
  return instance;
}

describe('Instance.start (unbound mode)', () => {
  it('runs the command in its cgroup, records the exit and captures output', async () => {
    const instance = await start(
      spec(
        'i-exit',
        [
          process.execPath,
          '-e',
          'console.log("hello " + process.env.GREETING); console.error("oops"); setTimeout(() => process.exit(3), 200)',
        ],
        { env: { GREETING: 'world' }, cpuWeight: 50 },
      ),
    );
    const group = path.join(env.cgroups.base, 'i-exit');
    expect(instance.state).toBe('running');
    expect(await readFile(path.join(group, 'cgroup.procs'), 'utf8')).toBe(String(instance.pid));
    expect(await readFile(path.join(group, 'memory.max'), 'utf8')).toBe(String(64 * 2 ** 20));
    expect(await readFile(path.join(group, 'cpu.weight'), 'utf8')).toBe('50');

    const exit = await instance.exited;
    expect(exit).toMatchObject({ code: 3, signal: null, reason: 'exited' });
    expect(instance.state).toBe('exited');
    expect(instance.stdout?.toString()).toBe('hello world\n');
    expect(instance.stderr?.toString()).toBe('oops\n');
    expect(await exists(group)).toBe(false);
  });

  it('unwinds the caller steps last, after the cgroup is gone', async () => {
    const cleanup = new CleanupStack();
    const seen: string[] = [];
    const group = path.join(env.cgroups.base, 'i-order');
    cleanup.push('release partition', async () => {
      seen.push(`release, cgroup present: ${await exists(group)}`);
    });
    const instance = await start(spec('i-order', ['true']), cleanup);
    await instance.exited;
    expect(seen).toEqual(['release, cgroup present: false']);
    expect(cleanup.size).toBe(0);
  });

  it('fails with SpawnError and leaves nothing behind when the program does not exist', async () => {
    const cleanup = new CleanupStack();
    let released = false;
    cleanup.push('release partition', () => {
      released = true;
    });
    const error = await Instance.start(
      spec('i-missing', [path.join(dir, 'no-such-program')]),
      env,
      cleanup,
    ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(SpawnError);
    expect(error).toMatchObject({ code: 'ENOENT' });
    expect(released).toBe(true);
    expect(await env.cgroups.list()).toEqual([]);
  });

  it('refuses a partition when there is no launcher to bind it', async () => {
    await expect(start(spec('i-bound', ['true'], { partition: 2 }))).rejects.toThrow(
      /partition 2 requested but no launcher/,
    );
    expect(await env.cgroups.list()).toEqual([]);
  });

  it('stops with SIGTERM', async () => {
    const instance = await start(spec('i-term', ['sleep', '30']));
    const exit = await instance.stop(5_000);
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM', reason: 'stopped' });
    expect(instance.summary()).toMatchObject({ state: 'exited', exit });
  });

  it('kills a process that ignores SIGTERM once the grace period is over', async () => {
    const instance = await start(
      spec('i-stubborn', [
        process.execPath,
        '-e',
        'process.on("SIGTERM", () => console.log("ignored")); console.log("ready"); setInterval(() => {}, 1000)',
      ]),
    );
    await waitFor(() => instance.stdout?.toString().includes('ready') ?? false);
    const started = Date.now();
    const exit = await instance.stop(300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(exit).toMatchObject({ signal: 'SIGKILL', reason: 'stopped' });
    expect(instance.stdout?.toString()).toContain('ignored');
  });

  it('passes partition, cgroup and command to the launcher', async () => {
    // A stand-in for hotmem-exec that records its argv and execs the command after "--".
    const launcher = path.join(dir, 'record-launcher.sh');
    const argvFile = path.join(dir, 'argv');
    await writeFile(
      launcher,
      `#!/bin/sh\nprintf '%s\\n' "$@" > '${argvFile}'\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n`,
    );
    await chmod(launcher, 0o755);
    env = { ...env, launcher: { path: launcher, device: '/dev/hotmem', waitMs: 1500 } };
    const instance = await start(spec('i-launch', ['echo', 'bound'], { partition: 4 }));
    expect(await instance.exited).toMatchObject({ code: 0 });
    expect(instance.stdout?.toString()).toBe('bound\n');
    expect((await readFile(argvFile, 'utf8')).trim().split('\n')).toEqual([
      '--device',
      '/dev/hotmem',
      '--partition',
      '4',
      '--wait-ms',
      '1500',
      '--cgroup',
      path.join(env.cgroups.base, 'i-launch'),
      '--',
      'echo',
      'bound',
    ]);
  });
});

describe('Instance.start with hotmem-exec (no partition: no HotMem kernel here)', () => {
  it('joins the cgroup in the launcher, before exec', async () => {
    env = { ...env, launcher: { path: launcherPath() } };
    const instance = await start(spec('i-exec', ['echo', 'launched']));
    expect(await instance.exited).toMatchObject({ code: 0, reason: 'exited' });
    expect(instance.stdout?.toString()).toBe('launched\n');
  });

  it("records the launcher's exec failure as exit code 127", async () => {
    env = { ...env, launcher: { path: launcherPath() } };
    const instance = await start(spec('i-noexec', [path.join(dir, 'missing')]));
    expect(await instance.exited).toMatchObject({ code: 127 });
    expect(instance.stderr?.toString()).toMatch(/hotmem-exec: .*missing/);
    expect(await env.cgroups.list()).toEqual([]);
  });

  it('records a cgroup the launcher cannot join as exit code 126', async () => {
    env = { ...env, launcher: { path: launcherPath() } };
    // cgroup.procs as a directory: the launcher's open for writing fails.
    const cgroups = env.cgroups;
    const create = cgroups.create.bind(cgroups);
    cgroups.create = async (name, limits) => {
      const group = await create(name, limits);
      await rm(path.join(group.path, 'cgroup.procs'));
      await mkdir(path.join(group.path, 'cgroup.procs'));
      return group;
    };
    const instance = await start(spec('i-nojoin', ['true']));
    expect(await instance.exited).toMatchObject({ code: 126 });
    expect(instance.stderr?.toString()).toMatch(/join cgroup/);
  });
});

describe('Instance.adopt', () => {
  it('watches a process it did not start and marks it lost when it goes', async () => {
    const orphan = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pid = orphan.pid as number;
    await env.cgroups.create('i-adopt', { memoryMax: 2 ** 20 });
    const instance = Instance.adopt(
      { id: 'i-adopt', pid, command: ['sleep', '30'], memoryBytes: 2 ** 20, partition: 1 },
      env,
    );
    expect(instance.summary()).toMatchObject({ state: 'running', adopted: true, partition: 1 });
    orphan.kill('SIGKILL');
    expect(await instance.exited).toMatchObject({ code: null, signal: null, reason: 'lost' });
    expect(await env.cgroups.list()).toEqual([]);
  });

  it('stops an adopted process with SIGTERM and reports it stopped', async () => {
    const orphan = spawn('sleep', ['30'], { stdio: 'ignore' });
    const signalled = new Promise((resolve) =>
      orphan.once('exit', (_code, signal) => resolve(signal)),
    );
    await env.cgroups.create('i-adopt-stop', { memoryMax: 2 ** 20 });
    const instance = Instance.adopt(
      {
        id: 'i-adopt-stop',
        pid: orphan.pid as number,
        command: ['sleep'],
        memoryBytes: 2 ** 20,
        partition: null,
      },
      env,
    );
    expect(await instance.stop(5_000)).toMatchObject({ code: null, reason: 'stopped' });
    expect(await signalled).toBe('SIGTERM');
  });

  it('marks an instance whose process is already gone as exited at once', async () => {
    const gone = spawn('true');
    const pid = gone.pid as number;
    await new Promise((resolve) => gone.once('exit', resolve));
    await env.cgroups.create('i-gone', { memoryMax: 2 ** 20 });
    const instance = Instance.adopt(
      { id: 'i-gone', pid, command: ['true'], memoryBytes: 2 ** 20, partition: null },
      env,
    );
    expect(await instance.exited).toMatchObject({ reason: 'lost' });
  });
});

describe('OutputRing', () => {
  it('keeps the last bytes and counts what it dropped', () => {
    const ring = new OutputRing(8);
    ring.write(Buffer.from('abcdef'));
    ring.write(Buffer.from('ghij'));
    expect(ring.toString()).toBe('cdefghij');
    expect(ring.droppedBytes).toBe(2);
    ring.write(Buffer.from('0123456789'));
    expect(ring.toString()).toBe('23456789');
    expect(ring.droppedBytes).toBe(12);
  });

  it('hands out whole lines, across chunks and split characters', () => {
    const lines: string[] = [];
    const ring = new OutputRing(1024, (line) => lines.push(line));
    const euro = Buffer.from('€');
    ring.write(Buffer.concat([Buffer.from('one\ntw'), euro.subarray(0, 1)]));
    ring.write(Buffer.concat([euro.subarray(1), Buffer.from('o\nthree')]));
    expect(lines).toEqual(['one', 'tw€o']);
    ring.end();
    expect(lines).toEqual(['one', 'tw€o', 'three']);
  });
});

describe('CleanupStack', () => {
  it('runs steps newest first, once, and collects failures without stopping', async () => {
    const stack = new CleanupStack();
    const ran: string[] = [];
    stack.push('first', () => {
      ran.push('first');
    });
    stack.push('broken', () => {
      throw new Error('boom');
    });
    stack.push('last', () => {
      ran.push('last');
    });
    const [errors, again] = await Promise.all([stack.unwind(), stack.unwind()]);
    expect(ran).toEqual(['last', 'first']);
    expect(errors.map((error) => error.message)).toEqual(["cleanup 'broken': boom"]);
    expect(again).toBe(errors);
    expect(() => stack.push('late', () => {})).toThrow(/after the stack was unwound/);
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
