// What the agent keeps on disk names the commands it runs as root (their full argv, which may
// carry secrets): only its own user may read it. The same goes for the TCP token.
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { cli } from './cli-process.js';
import { type Harness, makeTempTree, startHarness } from './harness.js';

const MiB = 2 ** 20;
let harness: Harness | undefined;
const cleanups: Array<() => unknown> = [];

afterEach(async () => {
  await harness?.close();
  harness = undefined;
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

const mode = async (file: string) => ((await stat(file)).mode & 0o777).toString(8);

it('keeps state records 0600 in a 0700 directory, under umask 022', async () => {
  const umask = process.umask(0o022);
  cleanups.push(() => process.umask(umask));
  const tree = await makeTempTree();
  await mkdir(tree.stateDir, { mode: 0o755 });
  harness = await startHarness({ tree });
  const { id } = await harness.client.createInstance({
    command: ['sleep', '30'],
    memoryBytes: 8 * MiB,
  });
  expect(await mode(harness.stateDir)).toBe('700');
  expect(await mode(path.join(harness.stateDir, `${id}.json`))).toBe('600');
});

it('refuses a token file that group or others can read, saying so', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hotmem-token-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const tokenFile = path.join(dir, 'token');
  await writeFile(tokenFile, 'a-token-of-16-chars\n');
  await chmod(tokenFile, 0o644);
  const result = await cli([
    'agent',
    '--root',
    dir,
    '--listen',
    '127.0.0.1:1',
    '--token-file',
    tokenFile,
    '--cgroup-root',
    path.join(dir, 'cgroup'),
    '--state-dir',
    path.join(dir, 'state'),
  ]);
  expect(result.code).toBe(1);
  expect(result.stderr).toContain(
    `hotmem: ${tokenFile}: the token file is readable by group or others (mode 644); chmod 600 it\n`,
  );
});
