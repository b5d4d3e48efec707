// CgroupTree against a temp directory laid out like a cgroup v2 root: same paths and writes as
// on /sys/fs/cgroup, with plain files instead of kernel interface files.
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CgroupTree } from '../../lib/cgroup.js';

let root: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'hotmem-cgroup-'));
  await writeFile(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

describe('CgroupTree', () => {
  it('enables memory and cpu for hotmem/ and its children', async () => {
    await new CgroupTree(root).prepare();
    expect(await readFile(path.join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu');
    expect(await readFile(path.join(root, 'hotmem', 'cgroup.subtree_control'), 'utf8')).toBe(
      '+memory +cpu',
    );
  });

  it('refuses a root without the memory controller, naming it', async () => {
    await writeFile(path.join(root, 'cgroup.controllers'), 'cpu pids\n');
    await expect(new CgroupTree(root).prepare()).rejects.toThrow(/memory controller/);
  });

  it('refuses a directory that is not a cgroup v2 root', async () => {
    await rm(path.join(root, 'cgroup.controllers'));
    await expect(new CgroupTree(root).prepare()).rejects.toThrow(/not a cgroup v2 hierarchy/);
  });

  it('creates a group with memory.max and cpu.weight, lists it and removes it', async () => {
    const tree = new CgroupTree(root);
    await tree.prepare();
    const group = await tree.create('i-1', { memoryMax: 256 * 2 ** 20, cpuWeight: 250 });
    expect(group.path).toBe(path.join(root, 'hotmem', 'i-1'));
    expect(await readFile(path.join(group.path, 'memory.max'), 'utf8')).toBe(String(256 * 2 ** 20));
    expect(await readFile(path.join(group.path, 'cpu.weight'), 'utf8')).toBe('250');
    expect(await group.memoryMax()).toBe(256 * 2 ** 20);
    expect(await tree.list()).toEqual(['i-1']);
    await group.remove();
    expect(await exists(group.path)).toBe(false);
    expect(await tree.list()).toEqual([]);
    await group.remove(); // already gone: not an error
  });

  it('leaves no group behind when a limit is invalid', async () => {
    const tree = new CgroupTree(root);
    await tree.prepare();
    await expect(tree.create('i-2', { memoryMax: 2 ** 20, cpuWeight: 0 })).rejects.toThrow(
      /cpuWeight: expected an integer in 1\.\.10000, got 0/,
    );
    expect(await tree.list()).toEqual([]);
  });

  it('rejects group names that could escape hotmem/', () => {
    const tree = new CgroupTree(root);
    for (const name of ['..', '../x', 'a/b', '', '.hidden', 'x'.repeat(65)]) {
      expect(() => tree.open(name), name).toThrow(/cgroup name/);
    }
  });

  it('reads the pids of cgroup.procs and reports cgroup.kill as unavailable when absent', async () => {
    const tree = new CgroupTree(root);
    await tree.prepare();
    const group = await tree.create('i-3', { memoryMax: 2 ** 20 });
    await writeFile(path.join(group.path, 'cgroup.procs'), '10\n20\n\n');
    expect(await group.pids()).toEqual([10, 20]);
    expect(await group.kill()).toBe(false);
    await writeFile(path.join(group.path, 'cgroup.kill'), '');
    expect(await group.kill()).toBe(true);
    expect(await readFile(path.join(group.path, 'cgroup.kill'), 'utf8')).toBe('1');
  });

  it('lists no groups before hotmem/ exists', async () => {
    await mkdir(path.join(root, 'other'));
    expect(await new CgroupTree(root).list()).toEqual([]);
  });
});
