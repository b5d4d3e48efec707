// Every HotplugMemoryError code is documented in docs/vmm.md, and the doc lists no other.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { HOTPLUG_MEMORY_ERRORS } from '../../../lib/host/vmm/hotplug-memory.js';

const DOC = fileURLToPath(new URL('../../../docs/vmm.md', import.meta.url));

it('documents every hot-plug memory error code, and no other', async () => {
  const doc = await readFile(DOC, 'utf8');
  const documented = [...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \|/gm)].map((match) => match[1]);
  expect(documented.sort()).toEqual(Object.keys(HOTPLUG_MEMORY_ERRORS).sort());
});
