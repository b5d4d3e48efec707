// The CLI as users run it: a separate node process (tsx), exit codes and output checked, sysfs
// laid out in a temp dir (test/unit/fixtures/sysfs-tree.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { formatBytes, main, parseSize, UsageError } from '../../lib/cli.js';
import { cli, startCliAgent } from './agent/cli-process.js';
import {
  HOTMEM_SYSFS_TREE_STATUS,
  hotmemSysfsTree,
  MIB,
  makeSysfsTree,
  type SysfsTree,
} from './fixtures/sysfs-tree.js';

let tree: SysfsTree | undefined;
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  tree?.remove();
  tree = undefined;
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

describe('sizes', () => {
  it('parses sizes with binary units and rejects the rest, naming the option', () => {
    expect(parseSize('512M')).toBe(512 * MIB);
    expect(parseSize('2G')).toBe(2 * 1024 * MIB);
    expect(parseSize('1.5g')).toBe(1536 * MIB);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('64MiB')).toBe(64 * MIB);
    for (const bad of ['', 'M', '-1G', '0', '12Q', '1e9', '9999999T']) {
      expect(() => parseSize(bad, '--memory'), bad).toThrow(/^--memory: '/);
    }
    expect(formatBytes(1536 * MIB)).toBe('1.5G');
    expect(formatBytes(100)).toBe('100B');
  });
});

describe('hotmem CLI', () => {
  it('prints usage with --help and exits 0', async () => {
    const result = await cli(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Usage: hotmem/);
    expect(result.stdout).toContain(
      'Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 HotMem unavailable',
    );
  });

  it('reports usage errors in one line with exit code 2', async () => {
    const spawned: Array<[string[], RegExp]> = [
      [[], /^hotmem: no command given$/],
      [['run', '--memory', 'lots', '--', 'true'], /^hotmem: --memory: 'lots' is not a size/],
      [['--bogus'], /^hotmem: Unknown option '--bogus'/],
    ];
    for (const [args, message] of spawned) {
      const result = await cli(args);
      const lines = result.stderr.trimEnd().split('\n');
      expect({ args, code: result.code, first: lines[0] }).toMatchObject({
        code: 2,
        first: expect.stringMatching(message),
      });
      expect(lines).toEqual([lines[0], "Run 'hotmem --help' for usage."]);
    }
  });

  it('rejects every kind of wrong invocation before doing anything', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /^unknown command 'frobnicate'$/],
      [['run', '--memory', '1G'], /^run needs a command after '--'$/],
      [['status', '--', 'true'], /^'status' takes no command after --$/],
      [['blocks', '--memory', '1G'], /^'blocks' does not take --memory$/],
      [['reclaim', 'two'], /^partition: 'two' is not a partition number$/],
      [['reclaim'], /^expected a partition number, got nothing$/],
      [['blocks', 'extra'], /^unexpected argument 'extra'$/],
      [['agent', '--listen', '127.0.0.1:7070'], /^--listen needs --token-file$/],
      [
        ['agent', '--listen', 'nowhere', '--token-file', '/t'],
        /^--listen: 'nowhere' is not HOST:PORT/,
      ],
      [['agent', '--listen', 'h:1', '--socket', '/s', '--token-file', '/t'], /exclude each other/],
      [
        ['blocks', '--agent', '/run/x.sock'],
        /^--agent works with status, partitions, oci-hook only$/,
      ],
    ];
    for (const [args, message] of cases) {
      const error = await main(args).catch((caught: unknown) => caught);
      expect(error, args.join(' ')).toBeInstanceOf(UsageError);
      expect((error as Error).message, args.join(' ')).toMatch(message);
    }
    vi.stubEnv('HOTMEM_LOG_LEVEL', 'loud');
    await expect(main(['blocks'])).rejects.toThrow(
      new UsageError(
        "HOTMEM_LOG_LEVEL: unknown log level 'loud' (expected fatal, error, warn, info, debug, trace, silent)",
      ),
    );
    vi.unstubAllEnvs();
  });

  it('lists memory blocks as a table and as JSON', async () => {
    tree = hotmemSysfsTree();
    const human = await cli(['blocks', '--root', tree.root]);
    expect(human.code).toBe(0);
    const lines = human.stdout.trimEnd().split('\n');
    expect(lines[0]?.split(/\s+/)).toEqual([
      'BLOCK',
      'STATE',
      'ZONE',
      'NODE',
      'PARTITION',
      'START',
      'SIZE',
    ]);
    expect(lines.slice(1).map((line) => line.split(/\s+/))).toEqual([
      ['8', 'online', 'Normal', '0', '-', '0x40000000', '128M'],
      ['32', 'online', 'HotMem1', '0', '1', '0x100000000', '128M'],
      ['33', 'offline', '-', '0', '-', '0x108000000', '128M'],
    ]);

    const json = await cli(['blocks', '--json', '--root', tree.root]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ id: 8, state: 'online', zone: 'Normal', partition: null }),
      expect.objectContaining({
        id: 32,
        zone: 'HotMem1',
        partition: 1,
        start: '0x100000000',
        size: 128 * MIB,
      }),
      expect.objectContaining({
        id: 33,
        state: 'offline',
        zone: null,
        validZones: ['Movable', 'HotMem0', 'HotMem1'],
      }),
    ]);
  });

  it('lists partitions and sums them up in status', async () => {
    tree = hotmemSysfsTree();
    const partitions = await cli(['partitions', '--json', '--root', tree.root]);
    expect(partitions.code).toBe(0);
    const listed = JSON.parse(partitions.stdout) as Array<Record<string, unknown>>;
    expect(listed).toEqual([
      expect.objectContaining({ id: 0, state: 'empty', nrBlocks: 0 }),
      expect.objectContaining({
        id: 1,
        state: 'bound',
        nrBlocks: 1,
        presentBytes: 128 * MIB,
        boundMms: 2,
      }),
    ]);
    // The shape of the agent's /v1/partitions: the ioctl's fields and the instance, which the
    // kernel does not know.
    for (const partition of listed) {
      expect(Object.keys(partition).sort()).toEqual([
        'boundMms',
        'flags',
        'freeBytes',
        'id',
        'instance',
        'node',
        'nrBlocks',
        'oomKills',
        'presentBytes',
        'spilledPages',
        'state',
      ]);
      expect(partition).toMatchObject({ node: 0, instance: null });
    }
    const status = await cli(['status', '--json', '--root', tree.root]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toEqual(HOTMEM_SYSFS_TREE_STATUS);
    const human = await cli(['status', '--root', tree.root]);
    expect(human.stdout).toContain(
      'hotmem: available\npartitions: 1 empty, 0 free, 1 bound, 0 reclaiming\n',
    );
  });

  it('exits 3 when HotMem is not there', async () => {
    tree = makeSysfsTree({ blocks: [{ id: 0, state: 'online', validZones: ['Normal'] }] });
    const root = tree.root;
    const results = await Promise.all([
      cli(['partitions', '--root', root]),
      cli(['reclaim', '0', '--root', root]),
      cli(['run', '--root', root, '--', 'true']),
    ]);
    for (const result of results) {
      expect(result.code).toBe(3);
      expect(result.stderr).toMatch(/^hotmem: .*ENOENT/);
      expect(result.stderr).not.toContain('    at ');
    }
    const status = await cli(['status', '--json', '--root', root]);
    expect(JSON.parse(status.stdout)).toEqual({
      hotmem: false,
      blocks: { online: 1 },
      memory: null,
    });
  });

  it('prints the stack of an error only with --debug', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'hotmem-cli-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const plain = await cli(['blocks', '--root', root]);
    const debug = await cli(['blocks', '--root', root, '--debug']);
    expect(plain.stderr).not.toContain('    at ');
    expect(debug.code).toBe(3);
    expect(debug.stderr).toContain('    at ');
  });

  it('exits 1 with one line when the agent cannot start', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'hotmem-cli-agent-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const result = await cli([
      'agent',
      '--root',
      dir,
      '--socket',
      path.join(dir, 's'),
      '--cgroup-root',
      dir,
      '--state-dir',
      path.join(dir, 'state'),
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trimEnd().split('\n').at(-1)).toBe(
      `hotmem: ${path.join(dir, 'cgroup.controllers')} is missing: not a cgroup v2 hierarchy`,
    );
  });

  it('runs the agent, answers through --agent, and exits 0 on SIGTERM', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'hotmem-cli-agent-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const { agent, socketPath } = await startCliAgent(dir);
    const status = await cli(['status', '--json', '--agent', socketPath]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({
      agent: { status: 'ok', hotmem: false, binding: 'unbound', instancesRunning: 0 },
      memory: null,
    });
    const partitions = await cli(['partitions', '--agent', socketPath]);
    expect(partitions.code).toBe(3);
    expect(partitions.stderr).toMatch(/^hotmem: agent: this kernel has no HotMem partitions/);
    agent.kill('SIGTERM');
    const code = await new Promise((resolve) => agent.once('exit', resolve));
    expect(code).toBe(0);
  });
});
