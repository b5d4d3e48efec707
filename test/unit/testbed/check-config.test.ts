import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';

const script = join(projectRoot(), 'scripts/kernel/check-config.sh');

describe('scripts/kernel/check-config.sh', () => {
  let dir: string;
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const check = (...args: string[]) => spawnSync(script, args, { encoding: 'utf8' });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'check-config-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('passes when every requested option is in the final .config', () => {
    const config = file(
      '.config',
      'CONFIG_A=y\nCONFIG_S="x y"\n# CONFIG_B is not set\nCONFIG_N=8\n',
    );
    const r = check(
      config,
      file('f', 'CONFIG_A=y\n# CONFIG_B is not set\n# CONFIG_C is not set\nCONFIG_S="x y"\n'),
    );
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });

  it('names every option that did not make it, and fails', () => {
    const config = file('.config', 'CONFIG_A=y\nCONFIG_N=8\n');
    const r = check(
      config,
      file('f', 'CONFIG_A=y\nCONFIG_MISSING=y\nCONFIG_N=16\n# CONFIG_A_OFF is not set\n'),
    );
    expect(r.status).toBe(1);
    expect(r.stdout.trim().split('\n')).toEqual([
      'CONFIG_MISSING: requested y, final .config has n',
      'CONFIG_N: requested 16, final .config has 8',
    ]);
  });

  it('lets a later fragment override an earlier one, as merge_config.sh does', () => {
    const config = file('.config', '# CONFIG_A is not set\n');
    expect(
      check(config, file('f1', 'CONFIG_A=y\n'), file('f2', '# CONFIG_A is not set\n')).status,
    ).toBe(0);
    expect(
      check(config, file('f3', '# CONFIG_A is not set\n'), file('f4', 'CONFIG_A=y\n')).status,
    ).toBe(1);
  });

  it('rejects bad usage with status 2', () => {
    expect(check().status).toBe(2);
    expect(check(join(dir, 'nope'), join(dir, 'nope2')).stderr).toMatch(/cannot read/);
  });

  it('finds only option lines and comments in the committed fragments', () => {
    // merge_config.sh ignores a malformed line silently; so must not we.
    for (const f of ['guest.config', 'debug.config']) {
      const text = readFileSync(join(projectRoot(), 'scripts/kernel', f), 'utf8');
      for (const line of text.split('\n')) {
        expect(line, `${f}: '${line}'`).toMatch(
          /^(CONFIG_[A-Z0-9_]+=\S+|# CONFIG_[A-Z0-9_]+ is not set|#( .*)?|)$/,
        );
      }
    }
  });
});
