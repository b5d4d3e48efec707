// Every error code of the registry is documented in docs/agent-api.md with its HTTP status, and
// the doc lists no code the registry does not have.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { AGENT_ERRORS } from '../../../lib/agent/errors.js';

const DOC = fileURLToPath(new URL('../../../docs/agent-api.md', import.meta.url));

it('documents every agent error code with its status, and no other', async () => {
  const doc = await readFile(DOC, 'utf8');
  const documented = new Map(
    [...doc.matchAll(/^\| `(HOTMEM_[A-Z_]+)` \| (\d{3}) \|/gm)].map((match) => [
      match[1],
      Number(match[2]),
    ]),
  );
  const registry = new Map(
    Object.entries(AGENT_ERRORS).map(([code, { status }]) => [code, status]),
  );
  expect(registry.size).toBeGreaterThan(0);
  expect(documented).toEqual(registry);
});
