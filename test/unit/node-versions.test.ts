// The package as built (dist/lib, and the addon in build/ built under the project's Node.js) run
// under the latest Node.js 22 and 24, fetched from the npm registry into the cache: the N-API
// addon (NAPI_VERSION pinned in binding.gyp) must load unchanged, and the binding, its errors,
// pidfds, an instance through hotmem-exec and the CLI must work as they do here.
import { execFile } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../scripts/testbed/paths.js';
import { latestNode, type NodeBinary } from './fixtures/node-binaries.js';
import {
  HOTMEM_SYSFS_TREE_STATUS,
  hotmemSysfsTree,
  MIB,
  type SysfsTree,
} from './fixtures/sysfs-tree.js';

const run = promisify(execFile);
const PACKAGE_ROOT = projectRoot();
const CLI = path.join(PACKAGE_ROOT, 'dist/lib/cli.js');
const SMOKE = fileURLToPath(new URL('./fixtures/node-smoke.mjs', import.meta.url));
/** The first run of a version downloads about 30 MiB. */
const DOWNLOAD_TIMEOUT_MS = 600_000;

const blockStart = (id: number) => `0x${(BigInt(id) * 128n * BigInt(MIB)).toString(16)}`;

describe.each([22, 24])('the built package under the latest Node.js %i', (major) => {
  let binary: NodeBinary;
  let tree: SysfsTree;
  let scratch: string;

  beforeAll(async () => {
    await access(path.join(PACKAGE_ROOT, 'dist/lib/index.js')).catch(() => {
      throw new Error(`${PACKAGE_ROOT}/dist/lib is not built: run \`npm run build\` first`);
    });
    binary = await latestNode(major);
    console.log(`Node.js ${major}.x: v${binary.version} (${binary.node})`);
  }, DOWNLOAD_TIMEOUT_MS);

  beforeEach(async () => {
    tree = hotmemSysfsTree();
    scratch = await mkdtemp(path.join(tmpdir(), 'hotmem-node-smoke-'));
  });

  afterEach(async () => {
    tree.remove();
    await rm(scratch, { recursive: true, force: true });
  });

  it('loads the addon and drives the binding, pidfds and an instance', async () => {
    const { stdout } = await run(binary.node, [SMOKE, PACKAGE_ROOT, tree.root, scratch]);
    expect(JSON.parse(stdout)).toEqual({
      node: `v${binary.version}`,
      napi: expect.stringMatching(/^\d+$/),
      binding: {
        blockSize: 128 * MIB,
        blocks: [
          { id: 8, state: 'online', zone: 'Normal', partition: null, start: blockStart(8) },
          { id: 32, state: 'online', zone: 'HotMem1', partition: 1, start: blockStart(32) },
          { id: 33, state: 'offline', zone: null, partition: null, start: blockStart(33) },
        ],
        written: 'online_hotmem0',
        partitions: [
          { id: 0, state: 'empty', blocks: [] },
          { id: 1, state: 'bound', blocks: [32] },
        ],
        missingBlock: {
          name: 'Error',
          code: 'ENOENT',
          errno: -2,
          syscall: 'open',
          path: path.join(tree.memoryDir, 'memory99', 'state'),
          isErrno: true,
        },
      },
      pidfds: {
        code: null,
        signal: 'SIGTERM',
        afterExit: { name: 'Error', code: 'ESRCH', errno: -3, syscall: 'pidfd_send_signal' },
      },
      instance: {
        exit: { code: 0, signal: null, reason: 'exited' },
        stdout: 'out\n',
        stderr: 'err\n',
        cgroupsLeft: [],
      },
    });
  });

  it('runs the CLI', async () => {
    const help = await run(binary.node, [CLI, '--help']);
    expect(help.stdout).toMatch(/^Usage: hotmem/);
    const status = await run(binary.node, [CLI, 'status', '--json', '--root', tree.root]);
    expect(JSON.parse(status.stdout)).toEqual(HOTMEM_SYSFS_TREE_STATUS);
  });
});
