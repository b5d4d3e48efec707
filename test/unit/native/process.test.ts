import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { closeFd, pidfdOpen, pidfdSendSignal, reapOrphans } from '../../../lib/process.js';

function sleeper(): ChildProcess {
  return spawn('sleep', ['30'], { stdio: 'ignore' });
}

describe('pidfds', () => {
  it('signal the process they were opened for', async () => {
    const child = sleeper();
    const fd = pidfdOpen(child.pid as number);
    const exited = once(child, 'exit');
    pidfdSendSignal(fd, 'SIGTERM');
    expect(await exited).toEqual([null, 'SIGTERM']);
    closeFd(fd);
  });

  it('report ESRCH once the process is gone instead of hitting a recycled pid', async () => {
    const child = sleeper();
    const fd = pidfdOpen(child.pid as number);
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(() => pidfdSendSignal(fd, 0)).toThrow(
      expect.objectContaining({ code: 'ESRCH', syscall: 'pidfd_send_signal', errno: -3 }),
    );
    closeFd(fd);
  });

  it('fail to open for a pid that does not exist, and reject bad arguments', () => {
    // pid_max is at most 2^22 on Linux, so this pid cannot exist.
    expect(() => pidfdOpen(2 ** 23)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(() => pidfdOpen(0)).toThrow(TypeError);
    expect(() => pidfdSendSignal(0, 'SIGNOPE' as NodeJS.Signals)).toThrow(
      /'signal' must be a signal name/,
    );
    expect(() => closeFd(-1)).toThrow(TypeError);
  });
});

describe('reapOrphans', () => {
  it('reaps reparented orphans but leaves the children libuv waits for', () => {
    // A child node process becomes a subreaper, makes two orphans (one exits 7, one is killed)
    // and one ordinary child, blocks its event loop until all three have exited (so libuv has not
    // reaped its own child yet), then reaps; libuv must still see its child exit with 3.
    const script = `
      import { spawn } from 'node:child_process';
      import { setChildSubreaper, reapOrphans } from ${JSON.stringify(join(process.cwd(), 'lib/process.ts'))};
      setChildSubreaper();
      const known = spawn('sh', ['-c', 'sleep 0.3; exit 3']);
      const orphans = spawn('sh', ['-c', '(sleep 0.2; exit 7) & sleep 0.2 & echo $!; exit 0']);
      let killed;
      let reaped;
      orphans.stdout.on('data', (d) => { killed = Number(String(d).trim()); });
      orphans.on('exit', () => {
        process.kill(killed, 'SIGKILL');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 800);
        reaped = reapOrphans([known.pid]);
      });
      known.on('exit', (code) => {
        console.log(JSON.stringify({ killed, reaped, knownCode: code, again: reapOrphans([]) }));
      });
    `;
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { encoding: 'utf8', timeout: 15_000 },
    );
    expect(run.stderr).toBe('');
    const result = JSON.parse(run.stdout) as {
      killed: number;
      reaped: { pid: number; code: number | null; signal: string | null }[];
      knownCode: number;
      again: unknown[];
    };
    expect(result.knownCode).toBe(3);
    const byOutcome = result.reaped.sort((a, b) => (a.code ?? -1) - (b.code ?? -1));
    expect(byOutcome).toEqual([
      { pid: result.killed, code: null, signal: 'SIGKILL' },
      { pid: expect.any(Number), code: 7, signal: null },
    ]);
    expect(result.again).toEqual([]);
  });

  it('rejects a knownPids that is not a list of pids', () => {
    expect(() => reapOrphans('1' as never)).toThrow(/'knownPids' must be an array/);
    expect(() => reapOrphans([0])).toThrow(/knownPids\[0\]/);
  });
});
