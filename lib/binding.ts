/**
 * The one loader of the native addon (build/{Release,Debug}/hotmem.node, or HOTMEM_NATIVE_PATH)
 * and its TypeScript view. Only the typed wrappers (memory-blocks, hotmem-device, process) import
 * this module.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RawMemoryBlock {
  id: number;
  state: string;
  validZones: string[];
  /** -1 when the block has no nodeN link. */
  node: number;
  physIndex: bigint;
}

export interface RawPartitionInfo {
  id: number;
  state: number;
  flags: number;
  nrBlocks: number;
  node: number;
  presentBytes: bigint;
  freeBytes: bigint;
  boundMms: bigint;
  spilledPages: bigint;
  oomKills: bigint;
}

export interface RawReclaimReport {
  partition: number;
  blocks: number;
  bytes: bigint;
  durationNs: bigint;
  pagesMigrated: bigint;
}

export interface RawEvent {
  type: number;
  partition: number;
  seq: bigint;
  timestampNs: bigint;
  data: bigint;
}

export interface RawExit {
  pid: number;
  code: number | null;
  signal: number | null;
}

export interface NativeHotMemDevice {
  readonly path: string;
  version(): { abiVersion: number; maxPartitions: number; nrPartitions: number };
  partitionInfo(partition: number): RawPartitionInfo;
  /** waitMs < 0: no HOTMEM_BIND_WAIT; 0 waits forever. */
  bind(pidfd: number, partition: number, waitMs: number): Promise<void>;
  setFlags(partition: number, flags: number): void;
  reclaim(partition: number): Promise<RawReclaimReport>;
  watchEvents(callback: (error: Error | null, events: RawEvent[]) => void): void;
  unwatchEvents(): void;
  ref(): void;
  unref(): void;
  close(): void;
}

export interface StructLayout {
  sizeof: number;
  fields: Record<string, number>;
}

/** The view of kernel-patches/uapi/linux/hotmem.h the addon was compiled with. */
export interface NativeAbi {
  HOTMEM_ABI_VERSION: number;
  constants: Record<string, number>;
  structs: Record<string, StructLayout>;
}

export interface NativeBinding {
  abi: NativeAbi;
  readAttribute(path: string): Promise<string>;
  readAttributeSync(path: string): string;
  writeAttribute(path: string, value: string): Promise<void>;
  listMemoryBlocks(dir: string): Promise<RawMemoryBlock[]>;
  readMemoryBlock(dir: string, id: number): Promise<RawMemoryBlock>;
  memoryBlockSize(dir: string): number;
  HotMemDevice: new (path: string) => NativeHotMemDevice;
  pidfdOpen(pid: number): number;
  pidfdSendSignal(pidfd: number, signal: number): void;
  closeFd(fd: number): void;
  setChildSubreaper(): void;
  reapOrphans(knownPids: number[]): RawExit[];
}

/** The package root: this file is lib/binding.ts or dist/lib/binding.js. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
  return dir;
}

function candidates(file: string, envPath: string | undefined): string[] {
  const root = packageRoot();
  const built = ['Release', 'Debug'].map((type) => join(root, 'build', type, file));
  return envPath ? [resolve(envPath), ...built] : built;
}

let loaded: NativeBinding | undefined;

/** Loads the addon once; throws one Error listing every path tried and why each failed. */
export function binding(): NativeBinding {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const failures: string[] = [];
  for (const path of candidates('hotmem.node', process.env.HOTMEM_NATIVE_PATH)) {
    try {
      loaded = require(path) as NativeBinding;
      return loaded;
    } catch (error) {
      failures.push(`  ${path}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(
    `cannot load the hotmem native addon; tried:\n${failures.join('\n')}\n` +
      'build it with `npm run build:native` or set HOTMEM_NATIVE_PATH to a hotmem.node',
  );
}

/**
 * Path of the hotmem-exec launcher built next to the addon (HOTMEM_EXEC_PATH first, then
 * build/Release, build/Debug); throws listing what was tried.
 */
export function launcherPath(): string {
  return executablePath('hotmem-exec', 'launcher', 'HOTMEM_EXEC_PATH');
}

/** Path of the hotmem-relay output relay, found like launcherPath() (HOTMEM_RELAY_PATH first). */
export function relayPath(): string {
  return executablePath('hotmem-relay', 'output relay', 'HOTMEM_RELAY_PATH');
}

function executablePath(file: string, what: string, envVar: string): string {
  const tried = candidates(file, process.env[envVar]);
  const found = tried.find((path) => existsSync(path));
  if (found) return found;
  throw new Error(
    `cannot find the ${file} ${what}; tried:\n${tried.map((p) => `  ${p}`).join('\n')}\n` +
      `build it with \`npm run build:native\` or set ${envVar}`,
  );
}
