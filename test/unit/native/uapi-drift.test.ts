/**
 * kernel-patches/uapi/linux/hotmem.h is the one copy of the kernel ABI. These tests fail when the
 * addon's compiled view of it (struct sizes, offsets, ioctl numbers, constants) no longer matches
 * the header — a stale build or a header change the addon does not know — and when a kernel
 * series adds a different header.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { binding } from '../../../lib/binding.js';

const ROOT = process.cwd();
const UAPI_DIR = join(ROOT, 'kernel-patches/uapi');
const HEADER = join(UAPI_DIR, 'linux/hotmem.h');

/** Struct fields and constant names, read from the header text. */
function parseHeader(text: string) {
  const structs = new Map<string, string[]>();
  for (const [, name, body] of text.matchAll(/struct (hotmem_\w+) \{([^}]*)\};/g)) {
    const fields = [...(body ?? '').matchAll(/__[us](?:8|16|32|64)\s+(\w+);/g)].map((m) => m[1]);
    structs.set(name as string, fields as string[]);
  }
  const defines = [...text.matchAll(/^#define\s+(HOTMEM_\w+)\s+\S/gm)].map((m) => m[1] as string);
  const enumerators = [...text.matchAll(/^\s+(HOTMEM_\w+)\s*=/gm)].map((m) => m[1] as string);
  return { structs, constants: [...defines, ...enumerators] };
}

/** What a C compiler makes of the header: the same shape as the addon's `abi` export. */
function compileHeaderView(): unknown {
  const { structs, constants } = parseHeader(readFileSync(HEADER, 'utf8'));
  const lines = [
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <linux/hotmem.h>',
    'int main(void) {',
    'printf("{\\"constants\\":{");',
    ...constants.map(
      (name, i) =>
        `printf("%s\\"${name}\\":%llu", ${i ? '","' : '""'}, (unsigned long long)(${name}));`,
    ),
    'printf("},\\"structs\\":{");',
    ...[...structs].flatMap(([name, fields], i) => [
      `printf("%s\\"${name}\\":{\\"sizeof\\":%zu,\\"fields\\":{", ${i ? '","' : '""'}, sizeof(struct ${name}));`,
      ...fields.map(
        (field, j) =>
          `printf("%s\\"${field}\\":%zu", ${j ? '","' : '""'}, offsetof(struct ${name}, ${field}));`,
      ),
      'printf("}}");',
    ]),
    'printf("}}\\n");',
    'return 0;',
    '}',
  ];
  const dir = mkdtempSync(join(tmpdir(), 'hotmem-uapi-'));
  try {
    writeFileSync(join(dir, 'view.c'), lines.join('\n'));
    execFileSync('cc', [
      '-Wall',
      '-Werror',
      '-I',
      UAPI_DIR,
      '-o',
      join(dir, 'view'),
      join(dir, 'view.c'),
    ]);
    return JSON.parse(execFileSync(join(dir, 'view'), { encoding: 'utf8' }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the addon and kernel-patches/uapi/linux/hotmem.h', () => {
  it('agree on every constant, ioctl number, struct size and field offset', () => {
    const { HOTMEM_ABI_VERSION, constants, structs } = binding().abi;
    expect({ constants: { HOTMEM_ABI_VERSION, ...constants }, structs }).toEqual(
      compileHeaderView(),
    );
  });

  it('parses every struct of the header (the test itself cannot silently see nothing)', () => {
    const { structs, constants } = parseHeader(readFileSync(HEADER, 'utf8'));
    expect([...structs.keys()]).toEqual(Object.keys(binding().abi.structs));
    expect(constants).toContain('HOTMEM_IOC_BIND');
  });
});

/** The header a series' patches produce, applied with git apply to an empty directory. */
function headerFromSeries(seriesDir: string): string | undefined {
  const patches = readdirSync(seriesDir)
    .filter((f) => f.endsWith('.patch') && !f.startsWith('0000-'))
    .sort();
  const dir = mkdtempSync(join(tmpdir(), 'hotmem-series-'));
  try {
    for (const patch of patches) {
      execFileSync(
        'git',
        ['apply', '--include=include/uapi/linux/hotmem.h', join(seriesDir, patch)],
        {
          cwd: dir,
        },
      );
    }
    const added = join(dir, 'include/uapi/linux/hotmem.h');
    return existsSync(added) ? readFileSync(added, 'utf8') : undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.each(['v6.12', 'v6.6'])('the %s kernel series', (series) => {
  const dir = join(ROOT, 'kernel-patches', series);
  const hasPatches = existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.patch'));
  it.skipIf(!hasPatches)(
    hasPatches
      ? 'adds include/uapi/linux/hotmem.h byte-identical to kernel-patches/uapi'
      : `adds the uapi header byte-identical (skipped: no kernel-patches/${series}/*.patch yet)`,
    () => {
      expect(headerFromSeries(dir)).toBe(readFileSync(HEADER, 'utf8'));
    },
  );
});
