/**
 * Error helpers. System failures from the addon are Node-shaped errors (errno, code, syscall,
 * path); library-level failures are HotMemErrors with an ERR_* code; bad arguments are TypeErrors.
 */

/**
 * True for a Node-style system error (has a string `code` and a numeric `errno`), and when `code`
 * is given, for one with that code: `isErrnoError(error, 'ENOENT')`.
 */
export function isErrnoError(e: unknown, code?: string): e is NodeJS.ErrnoException {
  return (
    e instanceof Error &&
    typeof (e as NodeJS.ErrnoException).code === 'string' &&
    typeof (e as NodeJS.ErrnoException).errno === 'number' &&
    (code === undefined || (e as NodeJS.ErrnoException).code === code)
  );
}

export type HotMemErrorCode =
  | 'ERR_PARTITION_TIMEOUT'
  | 'ERR_NO_MEMORY'
  | 'ERR_NO_PARTITION'
  | 'ERR_UNKNOWN_PARTITION'
  | 'ERR_ABI_MISMATCH'
  | 'ERR_DEVICE_CLOSED';

/** A failure of the library itself, as opposed to a failed system call. */
export class HotMemError extends Error {
  readonly code: HotMemErrorCode;

  constructor(code: HotMemErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HotMemError';
    this.code = code;
  }
}

/** A TypeError like Node's ERR_INVALID_ARG_VALUE, naming the argument, the rule and the value. */
export function invalidArgument(name: string, rule: string, value: unknown): TypeError {
  const shown = typeof value === 'bigint' ? `${value}n` : (JSON.stringify(value) ?? String(value));
  const error = new TypeError(`The argument '${name}' must be ${rule}. Received ${shown}`);
  (error as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

/** Checks an integer in [min, max]; returns it. */
export function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(name, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

/**
 * Awaits a native promise and, on rejection, appends the caller's stack: errors made on the libuv
 * thread pool have none of their own (sharp does the same).
 */
export async function withCallerStack<T>(promise: Promise<T>): Promise<T> {
  const caller = new Error();
  try {
    return await promise;
  } catch (error) {
    if (error instanceof Error && caller.stack) {
      const callerFrames = caller.stack.split('\n').slice(1).join('\n');
      error.stack = `${error.stack ?? String(error)}\n${callerFrames}`;
    }
    throw error;
  }
}
