/**
 * The tail of an instance's stdout or stderr: a fixed number of bytes, oldest dropped first, plus
 * the complete lines handed to a callback (for the log) with a bound on the length of one line.
 * Fed by OutputFiles, which follows the files the instance writes.
 */
import { StringDecoder } from 'node:string_decoder';

export const DEFAULT_OUTPUT_BYTES = 64 * 1024;
export const MAX_LOGGED_LINE_CHARS = 4_096;

export class OutputRing {
  readonly capacity: number;
  private buffer: Buffer;
  private start = 0;
  private length = 0;
  private dropped = 0;
  private partialLine = '';
  private readonly decoder = new StringDecoder('utf8');
  private readonly onLine: ((line: string) => void) | undefined;

  constructor(capacity: number = DEFAULT_OUTPUT_BYTES, onLine?: (line: string) => void) {
    if (!Number.isInteger(capacity) || capacity <= 0) {
      throw new RangeError(`output capacity: expected a positive integer, got ${capacity}`);
    }
    this.capacity = capacity;
    this.buffer = Buffer.alloc(capacity);
    this.onLine = onLine;
  }

  write(chunk: Buffer): void {
    this.store(chunk);
    if (this.onLine) this.splitLines(this.decoder.write(chunk));
  }

  /**
   * Keeps output an earlier agent already read and logged (after a restart) without logging it
   * again; only its unfinished last line, which nobody logged yet, starts the next logged line.
   */
  restore(chunk: Buffer): void {
    this.store(chunk);
    if (this.onLine)
      this.splitLines(this.decoder.write(chunk.subarray(chunk.lastIndexOf(0x0a) + 1)));
  }

  /** Hands out a last line that had no newline; call once the stream ended. */
  end(): void {
    if (this.onLine) this.splitLines(this.decoder.end());
    if (this.partialLine && this.onLine) this.onLine(this.partialLine);
    this.partialLine = '';
  }

  /** Bytes lost off the front since the start. */
  get droppedBytes(): number {
    return this.dropped;
  }

  toString(): string {
    const end = this.start + this.length;
    const bytes =
      end <= this.capacity
        ? this.buffer.subarray(this.start, end)
        : Buffer.concat([
            this.buffer.subarray(this.start),
            this.buffer.subarray(0, end - this.capacity),
          ]);
    return bytes.toString('utf8');
  }

  private store(chunk: Buffer): void {
    const bytes =
      chunk.length > this.capacity ? chunk.subarray(chunk.length - this.capacity) : chunk;
    this.dropped += chunk.length - bytes.length;
    const overflow = this.length + bytes.length - this.capacity;
    if (overflow > 0) {
      this.start = (this.start + overflow) % this.capacity;
      this.length -= overflow;
      this.dropped += overflow;
    }
    let writeAt = (this.start + this.length) % this.capacity;
    let offset = 0;
    while (offset < bytes.length) {
      const copied = bytes.copy(this.buffer, writeAt, offset);
      offset += copied;
      writeAt = (writeAt + copied) % this.capacity;
    }
    this.length += bytes.length;
  }

  private splitLines(text: string): void {
    const lines = (this.partialLine + text).split('\n');
    this.partialLine = lines.pop() ?? '';
    for (const line of lines) this.onLine?.(line.slice(0, MAX_LOGGED_LINE_CHARS));
    if (this.partialLine.length > MAX_LOGGED_LINE_CHARS) {
      this.onLine?.(this.partialLine.slice(0, MAX_LOGGED_LINE_CHARS));
      this.partialLine = '';
    }
  }
}
