/**
 * An instance's stdout and stderr as two files, `<dir>/stdout` and `<dir>/stderr`, which the
 * instance writes and the agent follows into OutputRings (the kept tail, and the log if asked).
 *
 * Files, not pipes, because the agent may be killed and restarted while its instances run on: the
 * reading end of a pipe dies with the agent and the instance's next write gets SIGPIPE, while a
 * file opened O_APPEND takes every write whether anyone reads it or not, and the next agent finds
 * the output there.
 *
 * A file is bounded: as soon as the agent sees it at `limitBytes`, it reads only the newest output
 * that fits the ring, empties the file and appends a marker line. What it skipped and what was
 * written in the instant between that read and the truncation is dropped and counted (appends by
 * the instance cannot be paused). The file is checked once per event loop turn while the
 * instance writes, so it exceeds the limit by what the instance writes between two looks. While
 * no agent runs nothing is truncated; the next agent does it as it adopts the instance.
 */
import {
  closeSync,
  constants,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readSync,
  watch,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { isErrnoError } from '../errors.js';
import { DEFAULT_OUTPUT_BYTES, OutputRing } from './output-ring.js';

/** Size at which the agent empties an output file (documented in docs/agent-api.md). */
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
  limitBytes?: number;
}

/** One file, read from where the last read stopped. */
class FollowedFile {
  private offset = 0;
  private lastByte = NEWLINE;
  /** Output that never reached the ring: skipped, or written just before the file was emptied. */
  private droppedBytes = 0;
  private emptied = 0;
  private skippedBefore = false;

  constructor(
    readonly name: StreamName,
    private readonly fd: number,
    readonly ring: OutputRing,
    private readonly limitBytes: number,
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
    if (this.offset >= this.limitBytes) this.empty();
  }

  /**
   * Reads what was written since the last read into the ring. At the limit only the newest
   * output that fits the ring is read, the rest is skipped, and the file is emptied at once: one
   * drain reads at most max(limitBytes, ring capacity) however fast the instance writes.
   */
  drain(): void {
    const size = fstatSync(this.fd).size;
    if (size < this.limitBytes) {
      this.readUpTo(size);
      return;
    }
    const keepFrom = Math.max(this.offset, size - this.ring.capacity);
    if (keepFrom > this.offset && !this.skippedBefore) {
      this.skippedBefore = true;
      this.logger.warn(
        { stream: this.name },
        'instance writes faster than its output is read: only the newest is kept',
      );
    }
    this.droppedBytes += keepFrom - this.offset;
    this.offset = keepFrom;
    this.readUpTo(size);
    this.empty();
  }

  /** Call after a last drain: hands out the unfinished last line, reports what was dropped. */
  close(): void {
    this.ring.end();
    closeSync(this.fd);
    if (this.emptied > 0) {
      this.logger.info(
        { stream: this.name, emptied: this.emptied, droppedBytes: this.droppedBytes },
        'output file was emptied at its limit',
      );
    }
  }

  private readUpTo(end: number): void {
    while (this.offset < end) {
      const read = readSync(
        this.fd,
        readBuffer,
        0,
        Math.min(readBuffer.length, end - this.offset),
        this.offset,
      );
      if (read === 0) return;
      this.ring.write(readBuffer.subarray(0, read));
      this.offset += read;
      this.lastByte = readBuffer[read - 1] as number;
    }
  }

  /** Empties the file and appends the marker line; the next drain reads it. */
  private empty(): void {
    const dropped = fstatSync(this.fd).size;
    ftruncateSync(this.fd, 0);
    // Written after the last read and before the truncation: lost.
    this.droppedBytes += dropped - this.offset;
    // O_APPEND: after whatever the instance wrote since the truncation, never over it.
    writeSync(
      this.fd,
      `${this.lastByte === NEWLINE ? '' : '\n'}[hotmem: ${this.name} reached ${this.limitBytes} bytes; the ${dropped} bytes before this line were dropped from its file]\n`,
    );
    this.emptied += 1;
    this.logger.debug({ stream: this.name, dropped }, 'output file emptied at its limit');
    this.offset = 0;
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
    const flags = constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_TRUNC;
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
      output = OutputFiles.openFiles(dir, constants.O_RDWR | constants.O_APPEND, options);
    } catch (error) {
      if (isErrnoError(error, 'ENOENT')) return null;
      throw error;
    }
    for (const file of output.files) file.restoreTail();
    output.follow();
    return output;
  }

  /**
   * Calls spawnChild with write-only O_APPEND descriptors of stdout and stderr for the child's
   * stdio, and closes them once it returns: the child has its own copies by then.
   */
  withChildFds<T>(spawnChild: (stdout: number, stderr: number) => T): T {
    const fds: number[] = [];
    try {
      for (const name of STREAMS) {
        fds.push(openSync(path.join(this.dir, name), constants.O_WRONLY | constants.O_APPEND));
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
          fds[index] as number,
          new OutputRing(
            options.keptBytes ?? DEFAULT_OUTPUT_BYTES,
            options.logLines ? (line) => logger.info({ stream: name }, line) : undefined,
          ),
          options.limitBytes ?? DEFAULT_OUTPUT_FILE_LIMIT_BYTES,
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
