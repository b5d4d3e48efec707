// The logger factory the agent and the CLI share: level from option or HOTMEM_LOG_LEVEL, JSON
// lines to a destination, each written before the call returns.
import { appendFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { createLogger } from '../../../lib/log.js';

let dir: string | undefined;

afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('writes JSON lines at the level of HOTMEM_LOG_LEVEL', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-log-'));
  const file = path.join(dir, 'agent.log');
  const logger = createLogger({ destination: file, env: { HOTMEM_LOG_LEVEL: 'WARN' } });
  logger.info('hidden');
  logger.warn({ partition: 3 }, 'shown');
  const lines = (await readFile(file, 'utf8'))
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line));
  expect(lines).toEqual([
    expect.objectContaining({ level: 40, msg: 'shown', partition: 3, name: 'hotmem' }),
  ]);
});

it('has a line on its destination before the next write by anyone else', async () => {
  // The CLI's error line must follow the agent's last log line, and a crash must lose nothing.
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-log-'));
  const file = path.join(dir, 'agent.log');
  const logger = createLogger({ destination: file, level: 'info' });
  for (let i = 0; i < 20; i++) {
    logger.info({ i }, 'logged');
    appendFileSync(file, `after ${i}\n`);
  }
  const lines = (await readFile(file, 'utf8')).trim().split('\n');
  expect(lines).toEqual(
    Array.from({ length: 20 }, (_, i) => [
      expect.stringContaining(`"i":${i},"msg":"logged"`),
      `after ${i}`,
    ]).flat(),
  );
});

it('lets the option win over the environment', () => {
  const logger = createLogger({ level: 'debug', env: { HOTMEM_LOG_LEVEL: 'error' } });
  expect(logger.level).toBe('debug');
});

it('rejects an unknown level, naming where it came from', () => {
  expect(() => createLogger({ env: { HOTMEM_LOG_LEVEL: 'loud' } })).toThrow(
    /^HOTMEM_LOG_LEVEL: unknown log level 'loud' \(expected fatal, error/,
  );
  expect(() => createLogger({ level: 'verbose' })).toThrow(
    /^log level: unknown log level 'verbose'/,
  );
});
