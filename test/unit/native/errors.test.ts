import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { binding } from '../../../lib/binding.js';
import { HotMemError, isErrnoError, withCallerStack } from '../../../lib/errors.js';
import { MemoryBlocks } from '../../../lib/memory-blocks.js';

describe('error helpers', () => {
  it('recognise Node and addon system errors, and nothing else', async () => {
    const fsError = await readFile('/nonexistent/file').catch((e: unknown) => e);
    const addonError = await new MemoryBlocks({ root: '/nonexistent' })
      .list()
      .catch((e: unknown) => e);
    expect(isErrnoError(fsError)).toBe(true);
    expect(isErrnoError(addonError)).toBe(true);
    expect(addonError).toMatchObject({ code: 'ENOENT', syscall: 'opendir' });
    expect(isErrnoError(new Error('plain'))).toBe(false);
    expect(isErrnoError(new HotMemError('ERR_NO_MEMORY', 'short'))).toBe(false);
    expect(isErrnoError({ code: 'ENOENT', errno: -2 })).toBe(false);
  });

  it('check the code when given one', async () => {
    const fsError = await readFile('/nonexistent/file').catch((e: unknown) => e);
    expect(isErrnoError(fsError, 'ENOENT')).toBe(true);
    expect(isErrnoError(fsError, 'EBUSY')).toBe(false);
    expect(isErrnoError(Object.assign(new Error('no errno'), { code: 'ENOENT' }), 'ENOENT')).toBe(
      false,
    );
  });

  it('give thread-pool errors the stack of the code that awaited them', async () => {
    const missing = '/nonexistent/attribute';
    async function readBare() {
      return binding().readAttribute(missing);
    }
    async function readWithStack() {
      return withCallerStack(binding().readAttribute(missing));
    }
    const bare = (await readBare().catch((e: unknown) => e)) as Error;
    const traced = (await readWithStack().catch((e: unknown) => e)) as Error;
    expect(bare.stack).not.toContain('readBare');
    expect(traced.stack).toContain('readWithStack');
    expect(traced).toMatchObject({ code: 'ENOENT', path: missing });
  });

  it('carry a code and a name on HotMemError', () => {
    const error = new HotMemError('ERR_PARTITION_TIMEOUT', 'late', { cause: 'host' });
    expect(error).toMatchObject({
      name: 'HotMemError',
      code: 'ERR_PARTITION_TIMEOUT',
      cause: 'host',
    });
    expect(error).toBeInstanceOf(Error);
  });
});
