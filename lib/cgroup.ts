/**
 * One cgroup v2 group per instance: `<root>/hotmem/<id>/` with memory.max and cpu.weight.
 *
 * On a real cgroup2 mount the kernel creates and removes the interface files; rmdir removes a
 * group once it has no processes. Unit tests point `root` at an ordinary directory instead: the
 * same writes then land in plain files and a group is removed recursively. Which of the two we
 * are on is decided once, from statfs(root).
 */
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, readdir, readFile, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isErrnoError } from './errors.js';

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';
export const HOTMEM_GROUP = 'hotmem';
const CGROUP2_SUPER_MAGIC = 0x63677270;
const WANTED_CONTROLLERS = ['memory', 'cpu'] as const;

/** cpu.weight accepts 1..10000; 100 is the kernel default. */
export const CPU_WEIGHT_MIN = 1;
export const CPU_WEIGHT_MAX = 10_000;
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** How long remove() keeps retrying rmdir while the kernel finishes tearing down exited tasks. */
const REMOVE_RETRY_MS = 2_000;
const REMOVE_RETRY_STEP_MS = 20;

export interface CgroupLimits {
  memoryMax: number;
  cpuWeight?: number;
}

export class CgroupTree {
  readonly root: string;
  readonly base: string;
  private onCgroupFs: boolean | undefined;

  constructor(root: string = DEFAULT_CGROUP_ROOT) {
    this.root = root;
    this.base = path.join(root, HOTMEM_GROUP);
  }

  /**
   * Creates `<root>/hotmem` and enables the memory and cpu controllers for it and its children.
   * Fails with a message naming the controller when the root does not offer it.
   */
  async prepare(): Promise<void> {
    const available = await readControllers(path.join(this.root, 'cgroup.controllers'));
    const missing = WANTED_CONTROLLERS.filter((controller) => !available.includes(controller));
    if (missing.length > 0) {
      throw new Error(
        `cgroup root ${this.root} does not offer the ${missing.join(' and ')} controller(s) (has: ${available.join(' ') || 'none'})`,
      );
    }
    const enable = WANTED_CONTROLLERS.map((controller) => `+${controller}`).join(' ');
    await writeFile(path.join(this.root, 'cgroup.subtree_control'), enable);
    await mkdir(this.base, { recursive: true });
    await writeFile(path.join(this.base, 'cgroup.subtree_control'), enable);
    this.onCgroupFs = (await statfs(this.root)).type === CGROUP2_SUPER_MAGIC;
  }

  async create(name: string, limits: CgroupLimits): Promise<InstanceCgroup> {
    const group = this.open(name);
    await mkdir(group.path);
    // The kernel creates the interface files on mkdir; in a plain directory (unit tests) the one
    // a process opens to join (cgroup.procs, opened without O_CREAT) is laid out here.
    if (!(await this.isCgroupFs())) await writeFile(path.join(group.path, 'cgroup.procs'), '');
    try {
      await group.setLimits(limits);
    } catch (error) {
      await group.remove();
      throw error;
    }
    return group;
  }

  /** A handle on an existing group; nothing is checked until it is used. */
  open(name: string): InstanceCgroup {
    if (!GROUP_NAME.test(name)) {
      throw new RangeError(
        `cgroup name '${name}': expected 1-64 of [A-Za-z0-9_.-], not starting with . - _`,
      );
    }
    return new InstanceCgroup(path.join(this.base, name), () => this.isCgroupFs());
  }

  /** Names of the instance groups present under `<root>/hotmem`, e.g. after an agent restart. */
  async list(): Promise<string[]> {
    try {
      const entries = await readdir(this.base, { withFileTypes: true });
      return entries
        .filter((entry) => entry.isDirectory())
        .map((entry) => entry.name)
        .sort();
    } catch (error) {
      if (isErrnoError(error, 'ENOENT')) return [];
      throw error;
    }
  }

  private async isCgroupFs(): Promise<boolean> {
    this.onCgroupFs ??= (await statfs(this.root)).type === CGROUP2_SUPER_MAGIC;
    return this.onCgroupFs;
  }
}

export class InstanceCgroup {
  readonly path: string;
  private readonly isCgroupFs: () => Promise<boolean>;

  constructor(groupPath: string, isCgroupFs: () => Promise<boolean>) {
    this.path = groupPath;
    this.isCgroupFs = isCgroupFs;
  }

  get name(): string {
    return path.basename(this.path);
  }

  async setLimits({ memoryMax, cpuWeight }: CgroupLimits): Promise<void> {
    if (!Number.isSafeInteger(memoryMax) || memoryMax <= 0) {
      throw new RangeError(
        `memoryMax: expected a positive integer number of bytes, got ${memoryMax}`,
      );
    }
    await writeFile(path.join(this.path, 'memory.max'), String(memoryMax));
    if (cpuWeight !== undefined) {
      if (
        !Number.isInteger(cpuWeight) ||
        cpuWeight < CPU_WEIGHT_MIN ||
        cpuWeight > CPU_WEIGHT_MAX
      ) {
        throw new RangeError(
          `cpuWeight: expected an integer in ${CPU_WEIGHT_MIN}..${CPU_WEIGHT_MAX}, got ${cpuWeight}`,
        );
      }
      await writeFile(path.join(this.path, 'cpu.weight'), String(cpuWeight));
    }
  }

  /** memory.max in bytes, or undefined for "max" or a missing file. */
  async memoryMax(): Promise<number | undefined> {
    const text = await readOptional(path.join(this.path, 'memory.max'));
    const value = text === undefined ? Number.NaN : Number(text.trim());
    return Number.isSafeInteger(value) ? value : undefined;
  }

  /** Moves a process in; the launcher does this itself before exec when it is available. */
  async addProcess(pid: number): Promise<void> {
    await writeFile(path.join(this.path, 'cgroup.procs'), String(pid));
  }

  async pids(): Promise<number[]> {
    const text = await readOptional(path.join(this.path, 'cgroup.procs'));
    if (text === undefined) return [];
    return text
      .split('\n')
      .map((line) => Number.parseInt(line, 10))
      .filter((pid) => Number.isInteger(pid) && pid > 0);
  }

  /**
   * SIGKILLs every process in the group with cgroup.kill (Linux 5.14+). Returns false when the
   * file is not there, so the caller falls back to signalling the processes it knows.
   */
  async kill(): Promise<boolean> {
    const file = path.join(this.path, 'cgroup.kill');
    try {
      await access(file, fsConstants.W_OK);
    } catch {
      return false;
    }
    await writeFile(file, '1');
    return true;
  }

  /** Removes the group; a group that is already gone is not an error. */
  async remove(): Promise<void> {
    if (!(await this.isCgroupFs())) {
      await rm(this.path, { recursive: true, force: true });
      return;
    }
    const deadline = Date.now() + REMOVE_RETRY_MS;
    for (;;) {
      try {
        await rmdir(this.path);
        return;
      } catch (error) {
        if (isErrnoError(error, 'ENOENT')) return;
        // EBUSY while exited tasks are still being unlinked from the group.
        if (!isErrnoError(error, 'EBUSY') || Date.now() > deadline) throw error;
        await sleep(REMOVE_RETRY_STEP_MS);
      }
    }
  }
}

async function readControllers(file: string): Promise<string[]> {
  const text = await readOptional(file);
  if (text === undefined) {
    throw new Error(`${file} is missing: not a cgroup v2 hierarchy`);
  }
  return text.split(/\s+/).filter(Boolean);
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if (isErrnoError(error, 'ENOENT')) return undefined;
    throw error;
  }
}
