/**
 * The one logger factory: pino, JSON lines, to stderr unless told otherwise.
 *
 * Writes go through an asynchronous pino.destination, so whoever ends the process must call
 * flush() first (the agent does it in its shutdown path), or the last lines are lost.
 */
import { openSync } from 'node:fs';
import { type Logger, pino, destination as pinoDestination } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_LEVEL_ENV = 'HOTMEM_LOG_LEVEL';

export interface LoggerOptions {
  /** Wins over HOTMEM_LOG_LEVEL. */
  level?: string;
  /** When neither level nor HOTMEM_LOG_LEVEL is given; info unless set. */
  defaultLevel?: LogLevel;
  /** A file path or a file descriptor; stderr (fd 2) by default. */
  destination?: string | number;
  name?: string;
  env?: NodeJS.ProcessEnv;
}

export interface LoggerHandle {
  logger: Logger;
  /** Writes out everything buffered, synchronously; safe to call more than once. */
  flush(): void;
}

export function parseLogLevel(value: string, source: string): LogLevel {
  const level = value.trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new RangeError(
      `${source}: unknown log level '${value}' (expected ${LOG_LEVELS.join(', ')})`,
    );
  }
  return level as LogLevel;
}

export function createLogger(options: LoggerOptions = {}): LoggerHandle {
  const env = options.env ?? process.env;
  const fromEnv = env[LOG_LEVEL_ENV];
  const level =
    options.level !== undefined
      ? parseLogLevel(options.level, 'log level')
      : fromEnv
        ? parseLogLevel(fromEnv, LOG_LEVEL_ENV)
        : (options.defaultLevel ?? 'info');
  const destination = pinoDestination({
    // A path is opened here, synchronously, so flush() works from the first line on.
    dest:
      typeof options.destination === 'string'
        ? openSync(options.destination, 'a')
        : (options.destination ?? 2),
    sync: false,
    minLength: 0,
  });
  const logger = pino({ name: options.name ?? 'hotmem', level }, destination);
  return {
    logger,
    flush() {
      destination.flushSync();
    },
  };
}

/** For library callers and tests that want no output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
