/**
 * The one logger factory: pino, JSON lines, to stderr unless told otherwise.
 *
 * Each line is written before the call returns. An asynchronous destination lost the last lines
 * of a crash, and put a line still in flight after the CLI's error message, which must come
 * last; the agent logs little (an instance's flooding output is rate-limited), so a write per
 * line costs nothing that shows.
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

export function parseLogLevel(value: string, source: string): LogLevel {
  const level = value.trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new RangeError(
      `${source}: unknown log level '${value}' (expected ${LOG_LEVELS.join(', ')})`,
    );
  }
  return level as LogLevel;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const env = options.env ?? process.env;
  const fromEnv = env[LOG_LEVEL_ENV];
  const level =
    options.level !== undefined
      ? parseLogLevel(options.level, 'log level')
      : fromEnv
        ? parseLogLevel(fromEnv, LOG_LEVEL_ENV)
        : (options.defaultLevel ?? 'info');
  const destination = pinoDestination({
    dest:
      typeof options.destination === 'string'
        ? openSync(options.destination, 'a')
        : (options.destination ?? 2),
    sync: true,
  });
  return pino({ name: options.name ?? 'hotmem', level }, destination);
}

/** For library callers and tests that want no output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
