/**
 * An instance's stdout and stderr as two files, `<dir>/stdout` and `<dir>/stderr`, which the
 * instance writes and the agent follows into OutputRings (the kept tail and the log).
 *
 * Files, not pipes, because the agent may be killed and restarted while its instances run on: the
 * reading end of a pipe dies with the agent and the instance's next write gets SIGPIPE, while a
 * file opened O_APPEND takes every write whether anyone reads it or not, and the next agent finds
 * the output there.
 *
 * A file is bounded: once the agent has read `limitBytes` of it, it empties the file and appends a
 * marker line. Output written in the instant between that last read and the truncation is lost
 * (appends by the instance cannot be paused); so is output the agent falls more than `limitBytes`
 * behind on, but for the newest, kept in the ring. While no agent runs nothing is truncated; the
 * next agent does it as it adopts the instance.
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
import { isErrno } from '../cgroup.js';
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
  /** Bytes of each stream kept in memory. */
  keptBytes?: number;
  limitBytes?: number;
}

/** One file, read from where the last read stopped. */
class FollowedFile {
  private offset = 0;
  private lastByte = NEWLINE;

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
    this.truncateAtLimit();
  }

  /** Reads what was written since the last read into the ring; empties the file at the limit. */
  drain(): void {
    const behind = fstatSync(this.fd).size - this.offset;
    if (behind > this.limitBytes) {
      // A writer faster than the reads (which log every line): only the newest output is kept.
      const skipped = behind - this.ring.capacity;
      this.offset += skipped;
      this.logger.warn(
        { stream: this.name, skipped },
        'output skipped, not logged: written too fast',
      );
    }
    this.readToEnd();
    this.truncateAtLimit();
  }

  /** Call after a last drain: hands out the unfinished last line. */
  close(): void {
    this.ring.end();
    closeSync(this.fd);
  }

  /** At most limitBytes: a writer as fast as the reads must not hold the agent here. */
  private readToEnd(): void {
    const stopAt = this.offset + this.limitBytes;
    while (this.offset < stopAt) {
      const read = readSync(this.fd, readBuffer, 0, readBuffer.length, this.offset);
      if (read === 0) return;
      this.ring.write(readBuffer.subarray(0, read));
      this.offset += read;
      this.lastByte = readBuffer[read - 1] as number;
    }
  }

  private truncateAtLimit(): void {
    if (this.offset < this.limitBytes) return;
    const dropped = fstatSync(this.fd).size;
    ftruncateSync(this.fd, 0);
    // O_APPEND: after whatever the instance wrote since the truncation, never over it.
    writeSync(
      this.fd,
      `${this.lastByte === NEWLINE ? '' : '\n'}[hotmem: ${this.name} reached ${this.limitBytes} bytes; the ${dropped} bytes before this line were dropped from its file]\n`,
    );
    this.logger.info(
      { stream: this.name, dropped, unread: dropped - this.offset },
      'output file emptied at its limit',
    );
    this.offset = 0;
    this.readToEnd();
  }
}

export class OutputFiles {
  readonly stdout: OutputRing;
  readonly stderr: OutputRing;
  private stopFollowing: () => void = () => {};
  private closed = false;

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
      if (isErrno(error, 'ENOENT')) return null;
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

  /** Reads what is left, logs unfinished last lines, stops following. The files stay. */
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
          new OutputRing(options.keptBytes ?? DEFAULT_OUTPUT_BYTES, (line) =>
            logger.info({ stream: name }, line),
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
      const watcher = watch(this.dir, { persistent: false }, () => this.drain());
      watcher.on('error', (error) => {
        watcher.close();
        this.poll(error);
      });
      this.stopFollowing = () => watcher.close();
    } catch (error) {
      this.poll(error);
    }
  }

  private poll(reason: unknown): void {
    this.logger.warn({ err: reason }, 'cannot watch the output files: polling them');
    const timer = setInterval(() => this.drain(), POLL_INTERVAL_MS);
    timer.unref();
    this.stopFollowing = () => clearInterval(timer);
  }
}
