// Does each series still apply to the kernel source this machine has? Debian moves
// linux-source-6.12 every few weeks; this says so in seconds, naming the patch and the hunk,
// where the e2e suites would fail in a kernel build's beforeAll much later. No build.
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';

const applySh = join(projectRoot(), 'kernel-patches/apply.sh');
const debianTarball = '/usr/src/linux-source-6.12.tar.xz';
const v612 = join(projectRoot(), 'kernel-patches/v6.12');
const v66Source = process.env.HOTMEM_V6_6_SOURCE;

function patchesOf(series: string): string[] {
  return readdirSync(series)
    .filter((f) => /^\d{4}-.*\.patch$/.test(f) && !f.startsWith('0000-'))
    .sort()
    .map((f) => join(series, f));
}

/** The files a series changes that the tree has (the ones it creates are not there yet). */
function touchedFiles(series: string, tree: string): string[] {
  const files = new Set<string>();
  for (const p of patchesOf(series)) {
    for (const m of readFileSync(p, 'utf8').matchAll(/^diff --git a\/(\S+) b\//gm)) {
      if (m[1] && existsSync(join(tree, m[1]))) files.add(m[1]);
    }
  }
  return [...files];
}

/** The first hunk of `patch` that changes an existing file: its file, start line and a context line. */
function firstHunk(patch: string): { file: string; line: number; context: string } {
  const text = readFileSync(patch, 'utf8');
  const m = text.match(/^--- a\/(\S+)\n\+\+\+ b\/\S+\n@@ -(\d+)[^\n]*\n((?:[ +-][^\n]*\n)+)/m);
  const context = m?.[3]?.split('\n').find((l) => l.startsWith(' ') && l.trim() !== '');
  if (!m?.[1] || !m[2] || !context)
    throw new Error(`${patch} has no hunk with context on an existing file`);
  return { file: m[1], line: Number(m[2]), context: context.slice(1) };
}

const noTarball = existsSync(debianTarball)
  ? undefined
  : `${debianTarball} is missing (scripts/setup.sh installs linux-source-6.12)`;

describe(`the v6.12 series against Debian's linux-source-6.12${noTarball ? ` (skipped: ${noTarball})` : ''}`, () => {
  let source = '';
  let scratch = '';

  beforeAll(() => {
    if (noTarball) return;
    // The tree build-kernel.sh unpacks (once per tarball digest, in the cache the kernel builds use).
    const r = spawnSync(join(projectRoot(), 'scripts/build-kernel.sh'), ['--print-source'], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`build-kernel.sh --print-source failed: ${r.stderr}`);
    source = r.stdout.trim().split('\n').pop() ?? '';
    scratch = mkdtempSync(join(tmpdir(), 'series-drift-'));
  }, 300_000);
  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it.skipIf(noTarball)('applies, every patch', () => {
    const r = spawnSync(applySh, ['--check', v612, source], { encoding: 'utf8' });
    expect(r.status, `${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^apply\.sh: all \d+ patches of v6\.12 apply to /);
  });

  it.skipIf(noTarball)('names the patch and the hunk when a hunk no longer applies', () => {
    // A copy of the files the series touches, one context line of patch 1's first hunk edited.
    const tree = join(scratch, 'drifted');
    for (const f of ['Makefile', ...touchedFiles(v612, source)]) {
      mkdirSync(dirname(join(tree, f)), { recursive: true });
      copyFileSync(join(source, f), join(tree, f));
    }
    const [first] = patchesOf(v612);
    if (!first) throw new Error('v6.12 has no patches');
    const hunk = firstHunk(first);
    const file = join(tree, hunk.file);
    const text = readFileSync(file, 'utf8');
    expect(text).toContain(`${hunk.context}\n`);
    writeFileSync(file, text.replace(`${hunk.context}\n`, `${hunk.context} /* drifted */\n`));

    const r = spawnSync(applySh, [v612, tree], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`error: patch failed: ${hunk.file}:${hunk.line}`);
    expect(r.stderr).toContain(`apply.sh: ${first.split('/').pop()} does not apply to ${tree}`);
  });
});

describe(`the v6.6 series against HOTMEM_V6_6_SOURCE${v66Source ? '' : ' (skipped: HOTMEM_V6_6_SOURCE is not set to a vanilla 6.6.y tree)'}`, () => {
  it.skipIf(!v66Source)('applies, every patch', () => {
    const r = spawnSync(
      applySh,
      ['--check', join(projectRoot(), 'kernel-patches/v6.6'), v66Source ?? ''],
      {
        encoding: 'utf8',
      },
    );
    expect(r.status, `${r.stderr}`).toBe(0);
  });
});
