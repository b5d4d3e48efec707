// A streaming writer of "newc" cpio archives, the format the kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst). Written in-process so that
// building the guest's root file system needs neither root nor a cpio binary.
import { once } from 'node:events';
import { createReadStream, type WriteStream } from 'node:fs';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const TRAILER = 'TRAILER!!!';

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; mode?: number; data: Buffer }
  | { type: 'hostfile'; path: string; mode?: number; source: string; size: number }
  | { type: 'symlink'; path: string; target: string };

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`cpio: field value ${n} does not fit in 32 bits`);
  }
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** The 110-byte newc header plus the NUL-terminated name, padded to a multiple of 4. */
export function newcHeader(name: string, mode: number, size: number, ino: number): Buffer {
  if (name.length === 0 || name.startsWith('/')) {
    throw new TypeError(`cpio: entry name must be relative and non-empty, got '${name}'`);
  }
  const nameBytes = Buffer.from(`${name}\0`);
  const fields = [
    ino,
    mode,
    0, // uid
    0, // gid
    (mode & S_IFMT) === S_IFDIR ? 2 : 1, // nlink
    0, // mtime: fixed, so the archive is reproducible
    size,
    0, // devmajor
    0, // devminor
    0, // rdevmajor
    0, // rdevminor
    nameBytes.length,
    0, // check
  ];
  const header = `070701${fields.map(hex8).join('')}`;
  const total = header.length + nameBytes.length;
  return Buffer.concat([Buffer.from(header, 'ascii'), nameBytes, Buffer.alloc(pad4(total))]);
}

export class CpioWriter {
  private ino = 1;
  private readonly seen = new Set<string>();

  constructor(private readonly out: WriteStream) {}

  private async write(chunk: Buffer): Promise<void> {
    if (!this.out.write(chunk)) await once(this.out, 'drain');
  }

  async add(entry: CpioEntry): Promise<void> {
    const path = entry.path.replace(/^\/+/, '');
    if (this.seen.has(path)) throw new Error(`cpio: duplicate entry '${path}'`);
    this.seen.add(path);
    const ino = this.ino++;
    switch (entry.type) {
      case 'dir':
        await this.write(newcHeader(path, S_IFDIR | (entry.mode ?? 0o755), 0, ino));
        return;
      case 'symlink': {
        const target = Buffer.from(entry.target);
        await this.write(newcHeader(path, S_IFLNK | 0o777, target.length, ino));
        await this.write(Buffer.concat([target, Buffer.alloc(pad4(target.length))]));
        return;
      }
      case 'file':
        await this.write(newcHeader(path, S_IFREG | (entry.mode ?? 0o644), entry.data.length, ino));
        await this.write(Buffer.concat([entry.data, Buffer.alloc(pad4(entry.data.length))]));
        return;
      case 'hostfile': {
        await this.write(newcHeader(path, S_IFREG | (entry.mode ?? 0o644), entry.size, ino));
        let copied = 0;
        for await (const chunk of createReadStream(entry.source)) {
          copied += (chunk as Buffer).length;
          await this.write(chunk as Buffer);
        }
        if (copied !== entry.size) {
          throw new Error(
            `cpio: '${entry.source}' changed size while archiving (${entry.size} -> ${copied})`,
          );
        }
        await this.write(Buffer.alloc(pad4(entry.size)));
        return;
      }
    }
  }

  has(path: string): boolean {
    return this.seen.has(path.replace(/^\/+/, ''));
  }

  /** Writes the trailer and closes the stream. */
  async finish(): Promise<void> {
    await this.write(newcHeader(TRAILER, 0, 0, 0));
    this.out.end();
    await once(this.out, 'finish');
  }
}
