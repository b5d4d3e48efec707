// scripts/setup.sh's choice of linux-source-6.12, against stand-ins for dpkg-query, apt-cache,
// apt-get and npm that answer as Debian's do and record what they were asked to install.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../../../scripts/testbed/paths.js';

const recorded = readFileSync(join(projectRoot(), 'kernel-patches/v6.12/BASE'), 'utf8').match(
  /^debian-package: (\S+)$/m,
)?.[1];

describe('scripts/setup.sh: which linux-source-6.12', () => {
  let dir: string;
  const installedFile = () => join(dir, 'installed');
  const stub = (name: string, body: string) => {
    const file = join(dir, 'bin', name);
    writeFileSync(file, `#!/bin/bash\n${body}\n`);
    chmodSync(file, 0o755);
  };
  /** Runs setup.sh with `installed` (package=version lines) and the archive offering `offered`, newest first. */
  const setup = (installed: string[], offered: string[]) => {
    writeFileSync(installedFile(), installed.map((p) => `${p}\n`).join(''));
    writeFileSync(
      join(dir, 'madison'),
      offered
        .map(
          (v) =>
            ` linux-source-6.12 | ${v} | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n`,
        )
        .join(''),
    );
    const r = spawnSync(join(projectRoot(), 'scripts/setup.sh'), {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}`, STUB_DIR: dir },
    });
    const log = existsSync(join(dir, 'apt-get.log'))
      ? readFileSync(join(dir, 'apt-get.log'), 'utf8')
      : '';
    return { status: r.status, stderr: r.stderr, aptGet: log };
  };
  const tools = [
    'qemu-system-x86',
    'busybox-static',
    'cpio',
    'build-essential',
    'flex',
    'bison',
    'bc',
    'libelf-dev',
    'libssl-dev',
    'ccache',
    'kmod',
    'rsync',
    'xz-utils',
    'zstd',
    'valgrind',
    'crun',
  ].map((p) => `${p}=1`);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'setup-'));
    mkdirSync(join(dir, 'bin'));
    // dpkg-query -W -f=FORMAT PACKAGE: ${Status} or ${Version} of an installed package.
    stub(
      'dpkg-query',
      'for pkg; do :; done; ver=$(sed -n "s/^$pkg=//p" "$STUB_DIR/installed")\n' +
        '[ -n "$ver" ] || { echo "dpkg-query: no packages found matching $pkg" >&2; exit 1; }\n' +
        'case $2 in *Status*) echo "install ok installed" ;; *) printf %s "$ver" ;; esac',
    );
    stub(
      'apt-cache',
      'case $1 in\n' +
        'madison) cat "$STUB_DIR/madison" ;;\n' +
        'policy) echo "$2:"; echo "  Installed: (none)"; echo "  Candidate: $(awk -F" *[|] *" "NR==1 { print \\$2 }" "$STUB_DIR/madison" | grep . || echo "(none)")" ;;\n' +
        'esac',
    );
    // apt-get install PKG[=VERSION]...: records the call and installs (the newest offered when unversioned).
    stub(
      'apt-get',
      '[ "$1" = update ] && exit 0\necho "$*" >>"$STUB_DIR/apt-get.log"\n' +
        'for a in "$@"; do case $a in -*|install) ;; *=*) echo "$a" >>"$STUB_DIR/installed" ;;\n' +
        '*) v=$(awk -F" *[|] *" "NR==1 { print \\$2 }" "$STUB_DIR/madison"); echo "$a=$v" >>"$STUB_DIR/installed" ;; esac; done',
    );
    stub('npm', 'exit 0');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('installs the version the series was made on while the archive offers it', () => {
    expect(recorded).toMatch(/^6\.12\.\d+-/);
    const r = setup(tools, ['6.12.999-1~deb12u1', `${recorded}`, '6.12.100-1~deb12u1']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.aptGet).toBe(`install -y -qq --no-install-recommends linux-source-6.12=${recorded}\n`);
    expect(r.stderr).toContain(
      `setup: linux-source-6.12: installing ${recorded}, the version the HotMem series was made on`,
    );
    expect(r.stderr).toContain(`setup: linux-source-6.12 ${recorded} is installed`);
  });

  it('installs the newest when the archive no longer offers that version', () => {
    const r = setup(tools, ['6.12.999-1~deb12u1', '6.12.998-1~deb12u1']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.aptGet).toBe('install -y -qq --no-install-recommends linux-source-6.12\n');
    expect(r.stderr).toContain(
      `setup: linux-source-6.12: Debian no longer offers ${recorded}; installing the newest, 6.12.999-1~deb12u1`,
    );
    expect(r.stderr).toContain('setup: linux-source-6.12 6.12.999-1~deb12u1 is installed');
  });

  it('keeps an installed linux-source-6.12 of another point release', () => {
    const r = setup([...tools, 'linux-source-6.12=6.12.998-1~deb12u1'], [`${recorded}`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.aptGet).toBe('');
    expect(r.stderr).toContain('setup: linux-source-6.12 6.12.998-1~deb12u1 is installed');
  });

  it('installs other missing packages alongside, and says why it fails when no linux-source-6.12 is offered', () => {
    const r = setup(
      tools.filter((t) => !t.startsWith('ccache=')),
      [],
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("setup: Debian's archive offers no linux-source-6.12");
    expect(r.aptGet).toBe('');
  });
});
