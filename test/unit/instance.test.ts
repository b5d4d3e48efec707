// Instances with real child processes and a temp-dir cgroup tree (see cgroup.test.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { launcherPath, relayPath } from '../../lib/binding.js';
import { CgroupTree } from '../../lib/cgroup.js';
import { CleanupStack } from '../../lib/instance/cleanup-stack.js';
import {
  type AdoptSpec,
  Instance,
  type InstanceEnvironment,
  type InstanceSpec,
  pidExists,
  SpawnError,
} from '../../lib/instance/instance.js';
import { DEFAULT_OUTPUT_FILE_LIMIT_BYTES, OutputFiles } from '../../lib/instance/output-files.js';
import { DEFAULT_OUTPUT_BYTES, OutputRing } from '../../lib/instance/output-ring.js';
import { silentLogger } from '../../lib/log.js';

let dir: string;
let env: InstanceEnvironment;
const running: Instance[] = [];
/** Processes a test started as an earlier agent would have, outside any Instance. */
const writers: ChildProcess[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-instance-'));
  const root = path.join(dir, 'cgroup');
  await mkdir(root);
  await writeFile(path.join(root, 'cgroup.controllers'), 'cpu memory\n');
  const cgroups = new CgroupTree(root);
  await cgroups.prepare();
  env = {
    cgroups,
    launcher: null,
    relay: relayPath(),
    pidfds: null,
    logger: silentLogger(),
    outputDir: path.join(dir, 'output'),
  };
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((instance) => instance.stop(100)));
  for (const writer of writers.splice(0)) writer.kill('SIGKILL');
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

/** What an agent finds after a restart: the instance's cgroup, and pid in it (or none). */
async function adopt(
  id: string,
  pid: number | null,
  extra: Partial<AdoptSpec> = {},
): Promise<Instance> {
  await env.cgroups.create(id, { memoryMax: 2 ** 20 });
  return Instance.adopt(
    { id, pid, command: ['sh'], memoryBytes: 2 ** 20, partition: null, ...extra },
    env,
  );
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
    // The relay joins it before exec, perhaps after start() resolved.
    await expect
      .poll(() => readFile(path.join(group, 'cgroup.procs'), 'utf8'))
      .toBe(String(instance.pid));
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
    expect(await exists(path.join(env.outputDir, 'i-missing'))).toBe(false);
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

describe('output files', () => {
  it('are written by the relay from pipes, followed while it runs and removed once it ended', async () => {
    const instance = await start(
      spec('i-files', [
        'sh',
        '-c',
        'echo to-out; echo to-err >&2; echo "fd1: $(readlink /proc/$$/fd/1)"; exec sleep 30',
      ]),
    );
    const files = path.join(env.outputDir, 'i-files');
    await waitFor(() => instance.stdout?.toString().includes('fd1:') ?? false);
    // A pipe to the relay, which is not the agent: it writes the files.
    expect(instance.stdout?.toString()).toMatch(/^to-out\nfd1: pipe:\[\d+\]\n$/);
    expect(instance.stderr?.toString()).toBe('to-err\n');
    expect(await readFile(path.join(files, 'stdout'), 'utf8')).toBe(instance.stdout?.toString());
    expect(await readFile(path.join(files, 'stderr'), 'utf8')).toBe('to-err\n');
    const relay = Number(await readFile(path.join(files, 'relay.pid'), 'utf8'));
    expect(pidExists(relay)).toBe(true);
    expect(await readFile(path.join(env.cgroups.base, 'i-files', 'cgroup.procs'), 'utf8')).toBe(
      String(instance.pid),
    );

    await instance.stop(1_000);
    expect(await exists(files)).toBe(false);
    expect(pidExists(relay)).toBe(false);
    expect(instance.stdout?.toString()).toContain('to-out\n');
  });

  it('get what the instance wrote just before it exited', async () => {
    const instance = await start(spec('i-last', ['seq', '1', '20000']));
    await instance.exited;
    expect(instance.stdout?.toString()).toMatch(/\n19999\n20000\n$/);
  });

  it('are replaced at their limit by one that starts with a marker line', async () => {
    env = { ...env, outputBytes: 1024, outputFileLimitBytes: 4096 };
    // 100 lines of 100 bytes, then a last line.
    const instance = await start(
      spec('i-chatty', [
        process.execPath,
        '-e',
        `process.stdout.write(Array.from({ length: 100 }, (_, i) => String(i).padStart(99, '.') + '\\n').join('') + 'done\\n');
         setInterval(() => {}, 1000);`,
      ]),
    );
    await waitFor(() => instance.stdout?.toString().endsWith('done\n') ?? false);
    const file = await readFile(path.join(env.outputDir, 'i-chatty', 'stdout'), 'utf8');
    // Two full files were dropped: 4096 bytes of output, then 4096 less the first marker line.
    const first =
      '[hotmem: stdout reached 4096 bytes; the 4096 bytes before this line were dropped from its file (4096 bytes of output dropped so far)]\n';
    const droppedSoFar = 4096 + 4096 - first.length;
    const marker = `[hotmem: stdout reached 4096 bytes; the 4096 bytes before this line were dropped from its file (${droppedSoFar} bytes of output dropped so far)]\n`;
    expect(file.startsWith(marker)).toBe(true);
    expect(Buffer.byteLength(file) - marker.length).toBe(10_005 - droppedSoFar);
    expect(file.endsWith(`${'99'.padStart(99, '.')}\ndone\n`)).toBe(true);
    const tail = instance.stdout?.toString() ?? '';
    expect(Buffer.byteLength(tail)).toBe(1024);
    expect(file.endsWith(tail)).toBe(true);
  });

  it('have the limits docs/agent-api.md gives', async () => {
    const doc = (await readFile(new URL('../../docs/agent-api.md', import.meta.url), 'utf8'))
      .split(/\s+/)
      .join(' ');
    expect(doc).toContain(`keeps the last ${DEFAULT_OUTPUT_BYTES / 1024} KiB of each`);
    expect(doc).toContain(`within ${DEFAULT_OUTPUT_FILE_LIMIT_BYTES / 1024} KiB`);
    expect(doc).toContain(`stdout reached ${DEFAULT_OUTPUT_FILE_LIMIT_BYTES} bytes`);
  });
});

describe('Instance.adopt', () => {
  it('shows what the instance wrote while no agent ran and follows what it writes after', async () => {
    // What the agent that started it did, before it was killed: the files, a writer, then the
    // agent's side of the files dropped while the writer runs on.
    const files = path.join(env.outputDir, 'i-survivor');
    const earlier = OutputFiles.create(files, { logger: silentLogger() });
    const writer = earlier.withChildFds((stdout, stderr) =>
      spawn('sh', ['-c', 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.02; done'], {
        stdio: ['ignore', stdout, stderr],
      }),
    );
    writers.push(writer);
    const pid = writer.pid as number;
    earlier.close();
    await expect
      .poll(async () => (await readFile(path.join(files, 'stdout'), 'utf8')).split('\n').length)
      .toBeGreaterThan(5);

    const instance = await adopt('i-survivor', pid);
    running.push(instance);
    const ticks = () => [...(instance.stdout?.toString() ?? '').matchAll(/tick (\d+)/g)];
    const atAdoption = ticks().length;
    expect(atAdoption).toBeGreaterThanOrEqual(5);
    expect(ticks()[0]?.[1]).toBe('1');
    await waitFor(() => ticks().length >= atAdoption + 5);
    expect(ticks().map((match) => Number(match[1]))).toEqual(
      Array.from({ length: ticks().length }, (_, index) => index + 1),
    );
    expect(pidExists(pid)).toBe(true);

    expect(await instance.stop(1_000)).toMatchObject({ reason: 'stopped' });
    expect(await exists(files)).toBe(false);
  });

  it('keeps the output of an instance that ended while no agent ran', async () => {
    const files = path.join(env.outputDir, 'i-ended');
    const earlier = OutputFiles.create(files, { logger: silentLogger() });
    const writer = earlier.withChildFds((stdout, stderr) =>
      spawn('sh', ['-c', 'echo last words; echo oops >&2'], { stdio: ['ignore', stdout, stderr] }),
    );
    await new Promise((resolve) => writer.once('exit', resolve));
    earlier.close();
    const instance = await adopt('i-ended', null);
    expect(await instance.exited).toMatchObject({ reason: 'lost' });
    expect(instance.stdout?.toString()).toBe('last words\n');
    expect(instance.stderr?.toString()).toBe('oops\n');
    expect(await exists(files)).toBe(false);
  });

  it('watches a process it did not start and marks it lost when it goes', async () => {
    const orphan = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pid = orphan.pid as number;
    const instance = await adopt('i-adopt', pid, { partition: 1 });
    expect(instance.summary()).toMatchObject({ state: 'running', adopted: true, partition: 1 });
    // No agent made output files for it.
    expect(instance.stdout).toBeNull();
    expect(instance.stderr).toBeNull();
    orphan.kill('SIGKILL');
    expect(await instance.exited).toMatchObject({ code: null, signal: null, reason: 'lost' });
    expect(await env.cgroups.list()).toEqual([]);
  });

  it('stops an adopted process with SIGTERM and reports it stopped', async () => {
    const orphan = spawn('sleep', ['30'], { stdio: 'ignore' });
    const signalled = new Promise((resolve) =>
      orphan.once('exit', (_code, signal) => resolve(signal)),
    );
    const instance = await adopt('i-adopt-stop', orphan.pid as number);
    expect(await instance.stop(5_000)).toMatchObject({ code: null, reason: 'stopped' });
    expect(await signalled).toBe('SIGTERM');
  });

  it('marks an instance whose process is already gone as exited at once', async () => {
    const gone = spawn('true');
    const pid = gone.pid as number;
    await new Promise((resolve) => gone.once('exit', resolve));
    const instance = await adopt('i-gone', pid);
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

  it('restores output without logging it again, except an unfinished last line', () => {
    const lines: string[] = [];
    const ring = new OutputRing(1024, (line) => lines.push(line));
    ring.restore(Buffer.from('logged before\nunfinis'));
    ring.write(Buffer.from('hed\nnew\n'));
    expect(lines).toEqual(['unfinished', 'new']);
    expect(ring.toString()).toBe('logged before\nunfinished\nnew\n');
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
