/**
 * The loader, run from a copy of lib/binding.ts inside an empty package in a temp dir, so which
 * files exist is under the test's control.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const BUILT = join(process.cwd(), 'build/Release');
let pkg: string;

beforeEach(() => {
  pkg = mkdtempSync(join(tmpdir(), 'hotmem-pkg-'));
  writeFileSync(join(pkg, 'package.json'), '{"type":"module"}');
  mkdirSync(join(pkg, 'dist/lib'), { recursive: true });
  copyFileSync(join(process.cwd(), 'lib/binding.ts'), join(pkg, 'dist/lib/binding.ts'));
});
afterEach(() => rmSync(pkg, { recursive: true, force: true }));

function load(expression: string, env: Record<string, string> = {}) {
  const script = `import * as b from ${JSON.stringify(join(pkg, 'dist/lib/binding.ts'))};
    try { console.log(JSON.stringify({ ok: ${expression} })); }
    catch (e) { console.log(JSON.stringify({ error: e.message })); }`;
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    {
      encoding: 'utf8',
      env: { ...process.env, HOTMEM_NATIVE_PATH: '', HOTMEM_EXEC_PATH: '', ...env },
    },
  );
  return JSON.parse(run.stdout) as { ok?: unknown; error?: string };
}

describe('the native loader', () => {
  it('lists every path it tried, with each failure, when nothing loads', () => {
    mkdirSync(join(pkg, 'build/Debug'), { recursive: true });
    writeFileSync(join(pkg, 'build/Debug/hotmem.node'), 'not an ELF file');
    const { error } = load('typeof b.binding().abi', {
      HOTMEM_NATIVE_PATH: join(pkg, 'nope.node'),
    });
    expect(error).toContain('cannot load the hotmem native addon; tried:');
    expect(error).toContain(`${join(pkg, 'nope.node')}: Cannot find module`);
    expect(error).toContain(`${join(pkg, 'build/Release/hotmem.node')}: Cannot find module`);
    expect(error).toMatch(
      new RegExp(`${join(pkg, 'build/Debug/hotmem.node')}: .*(ELF|file too short)`),
    );
    expect(error).toContain('npm run build:native');
  });

  it('finds build/ at the package root from dist/lib, and honours HOTMEM_NATIVE_PATH', () => {
    mkdirSync(join(pkg, 'build/Release'), { recursive: true });
    copyFileSync(join(BUILT, 'hotmem.node'), join(pkg, 'build/Release/hotmem.node'));
    expect(load('typeof b.binding().abi.structs')).toEqual({ ok: 'object' });
    rmSync(join(pkg, 'build'), { recursive: true });
    expect(
      load('typeof b.binding().pidfdOpen', { HOTMEM_NATIVE_PATH: join(BUILT, 'hotmem.node') }),
    ).toEqual({ ok: 'function' });
  });

  it('locates hotmem-exec the same way, naming what it tried', () => {
    expect(load('b.launcherPath()').error).toContain(
      `cannot find the hotmem-exec launcher; tried:\n  ${join(pkg, 'build/Release/hotmem-exec')}`,
    );
    const launcher = join(BUILT, 'hotmem-exec');
    expect(load('b.launcherPath()', { HOTMEM_EXEC_PATH: launcher })).toEqual({ ok: launcher });
  });

  it('locates hotmem-relay the same way', () => {
    expect(load('b.relayPath()').error).toContain(
      `cannot find the hotmem-relay output relay; tried:\n  ${join(pkg, 'build/Release/hotmem-relay')}`,
    );
    const relay = join(BUILT, 'hotmem-relay');
    expect(load('b.relayPath()', { HOTMEM_RELAY_PATH: relay })).toEqual({ ok: relay });
  });
});
