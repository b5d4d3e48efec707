/**
 * An instance's stdout and stderr as two files, `<dir>/stdout` and `<dir>/stderr`, which the
 * agent follows into OutputRings (the kept tail, and the log if asked).
 *
 * Files, not pipes to the agent, because the agent may be killed and restarted while its
 * instances run on: the reading end of a pipe dies with the agent and the instance's next write
 * gets SIGPIPE, while a file is there for the next agent to find. The instance writes into pipes
 * of hotmem-relay (see docs/native.md), a process of its own that copies them into the files and
 * keeps each within its limit: when a file is full the relay renames a new one, starting with a
 * marker line, over it. The follower reads the old file to its end, then the new one. Without the
 * relay the instance writes the files directly and nothing bounds them.
 */
import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  statSync,
  watch,
} from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { isErrnoError } from '../errors.js';
import { DEFAULT_OUTPUT_BYTES, OutputRing } from './output-ring.js';

/** Size at which hotmem-relay replaces an output file (documented in docs/agent-api.md). */
export const DEFAULT_OUTPUT_FILE_LIMIT_BYTES = 256 * 1024;
/** Only when the files cannot be watched (inotify limits): how often they are read. */
const POLL_INTERVAL_MS = 250;
const NEWLINE = 0x0a;
const STREAMS = ['stdout', 'stderr'] as const;
type StreamName = (typeof STREAMS)[number];

/** Every read is synchronous and copied into a ring before the next, so one buffer serves all. */
const readBuffer = Buffer.alloc(64 * 1024);

export interface OutputFilesOptions {
  logger: Logger;
  /** Log every line at info (default off: an instance could flood the agent's log). */
  logLines?: boolean;
  /** Bytes of each stream kept in memory. */
  keptBytes?: number;
}

/** One file, read from where the last read stopped, and its successors once the relay replaces it. */
class FollowedFile {
  private offset = 0;
  private lastByte = NEWLINE;
  private replacements = 0;

  constructor(
    readonly name: StreamName,
    private readonly path: string,
    private fd: number,
    readonly ring: OutputRing,
    private readonly logger: Logger,
  ) {}

  /** What an earlier agent followed: the tail into the ring, from then on like new output. */
  restoreTail(): void {
    const size = fstatSync(this.fd).size;
    const start = Math.max(0, size - this.ring.capacity);
    const tail = Buffer.alloc(size - start);
    let filled = 0;
    while (filled < tail.length) {
      const read = readSync(this.fd, tail, filled, tail.length - filled, start + filled);
      if (read === 0) break;
      filled += read;
    }
    this.ring.restore(tail.subarray(0, filled));
    this.offset = start + filled;
    if (filled > 0) this.lastByte = tail[filled - 1] as number;
  }

  /**
   * Reads what was written since the last read into the ring: the rest of the file, then, if the
   * relay has replaced it meanwhile, the new one. Files replaced in between are never seen; the
   * new file's marker line counts what they held. Reads up to the sizes seen on entry: at most
   * twice the file limit per call, however fast the instance writes.
   */
  drain(): void {
    this.readUpTo(fstatSync(this.fd).size);
    if (!this.replaced()) return;
    closeSync(this.fd);
    this.fd = openSync(this.path, constants.O_RDONLY);
    this.offset = 0;
    this.replacements += 1;
    // The full file may end mid-line: the marker line that starts the new one stays a line.
    if (this.lastByte !== NEWLINE) this.ring.write(Buffer.from('\n'));
    this.readUpTo(fstatSync(this.fd).size);
  }

  /** Call after a last drain: hands out the unfinished last line, says whether output was dropped. */
  close(): void {
    this.ring.end();
    closeSync(this.fd);
    if (this.replacements > 0) {
      this.logger.info(
        { stream: this.name, replacements: this.replacements },
        'output file reached its limit: older output was dropped from it',
      );
    }
  }

  private replaced(): boolean {
    try {
      return statSync(this.path).ino !== fstatSync(this.fd).ino;
    } catch (error) {
      if (isErrnoError(error, 'ENOENT')) return false;
      throw error;
    }
  }

  private readUpTo(size: number): void {
    // Emptied in place (the relay could not create a new file): start over.
    if (size < this.offset) this.offset = 0;
    while (this.offset < size) {
      const length = Math.min(readBuffer.length, size - this.offset);
      const read = readSync(this.fd, readBuffer, 0, length, this.offset);
      if (read === 0) return;
      this.ring.write(readBuffer.subarray(0, read));
      this.offset += read;
      this.lastByte = readBuffer[read - 1] as number;
    }
  }
}

export class OutputFiles {
  readonly stdout: OutputRing;
  readonly stderr: OutputRing;
  private stopFollowing: () => void = () => {};
  private closed = false;
  private drainScheduled = false;

  private constructor(
    readonly dir: string,
    private readonly files: FollowedFile[],
    private readonly logger: Logger,
  ) {
    this.stdout = (files[0] as FollowedFile).ring;
    this.stderr = (files[1] as FollowedFile).ring;
  }

  /** Creates the directory and both files, empty, and follows them. */
  static create(dir: string, options: OutputFilesOptions): OutputFiles {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const flags = constants.O_RDONLY | constants.O_CREAT | constants.O_TRUNC;
    const output = OutputFiles.openFiles(dir, flags, options);
    output.follow();
    return output;
  }

  /**
   * The files an earlier agent created for an instance it started: their tails go into the rings
   * (not the log, that agent logged them), then they are followed. null when there are none.
   */
  static adopt(dir: string, options: OutputFilesOptions): OutputFiles | null {
    let output: OutputFiles;
    try {
      output = OutputFiles.openFiles(dir, constants.O_RDONLY, options);
    } catch (error) {
      if (isErrnoError(error, 'ENOENT')) return null;
      throw error;
    }
    for (const file of output.files) file.restoreTail();
    output.follow();
    return output;
  }

  /** Where a stream's file is: the relay writes it there. */
  filePath(name: StreamName): string {
    return path.join(this.dir, name);
  }

  /**
   * Calls spawnChild with write-only O_APPEND descriptors of stdout and stderr for the child's
   * stdio, and closes them once it returns: the child has its own copies by then.
   */
  withChildFds<T>(spawnChild: (stdout: number, stderr: number) => T): T {
    const fds: number[] = [];
    try {
      for (const name of STREAMS) {
        fds.push(openSync(this.filePath(name), constants.O_WRONLY | constants.O_APPEND));
      }
      return spawnChild(fds[0] as number, fds[1] as number);
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  }

  /** Reads what is left, hands out unfinished last lines, stops following. The files stay. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopFollowing();
    this.drain();
    for (const file of this.files) file.close();
  }

  private static openFiles(dir: string, flags: number, options: OutputFilesOptions): OutputFiles {
    const { logger } = options;
    const fds: number[] = [];
    try {
      for (const name of STREAMS) fds.push(openSync(path.join(dir, name), flags, 0o600));
    } catch (error) {
      for (const fd of fds) closeSync(fd);
      throw error;
    }
    const files = STREAMS.map(
      (name, index) =>
        new FollowedFile(
          name,
          path.join(dir, name),
          fds[index] as number,
          new OutputRing(
            options.keptBytes ?? DEFAULT_OUTPUT_BYTES,
            options.logLines ? (line) => logger.info({ stream: name }, line) : undefined,
          ),
          logger,
        ),
    );
    return new OutputFiles(dir, files, logger);
  }

  private drain(): void {
    try {
      for (const file of this.files) file.drain();
    } catch (error) {
      this.logger.warn({ err: error }, 'reading the output files failed');
    }
  }

  /** inotify on the directory: every write to either file wakes a drain of both. */
  private follow(): void {
    try {
      const watcher = watch(this.dir, { persistent: false }, () => this.scheduleDrain());
      watcher.on('error', (error) => {
        watcher.close();
        this.poll(error);
      });
      this.stopFollowing = () => watcher.close();
    } catch (error) {
      this.poll(error);
    }
  }

  /** A writer makes an inotify event per write: they are drained once per event loop turn. */
  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      if (!this.closed) this.drain();
    });
  }

  private poll(reason: unknown): void {
    this.logger.warn({ err: reason }, 'cannot watch the output files: polling them');
    const timer = setInterval(() => this.drain(), POLL_INTERVAL_MS);
    timer.unref();
    this.stopFollowing = () => clearInterval(timer);
  }
}
