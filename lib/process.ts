/**
 * Process primitives the agent needs and Node lacks: pidfds (signals that cannot hit a recycled
 * pid), the child-subreaper flag, and reaping orphans without stealing libuv's children.
 */
import { constants } from 'node:os';
import { binding } from './binding.js';
import { checkInteger, invalidArgument } from './errors.js';

const MAX_FD = 0x7fff_ffff;

const signalNames = new Map<number, string>(
  Object.entries(constants.signals).map(([name, number]) => [number, name]),
);

function signalNumber(signal: NodeJS.Signals | number): number {
  if (typeof signal === 'number') return checkInteger('signal', signal, 0, 64);
  const number = (constants.signals as Record<string, number | undefined>)[signal];
  if (number === undefined) throw invalidArgument('signal', 'a signal name like SIGTERM', signal);
  return number;
}

/** Loads the native addon, throwing the loader's error (every path tried) when it cannot. */
export function loadProcessSupport(): void {
  binding();
}

/** A close-on-exec pidfd for pid; close it with closeFd(). */
export function pidfdOpen(pid: number): number {
  return binding().pidfdOpen(checkInteger('pid', pid, 1, MAX_FD));
}

/** Signals the process behind a pidfd; ESRCH once it has exited. Signal 0 probes. */
export function pidfdSendSignal(pidfd: number, signal: NodeJS.Signals | number): void {
  binding().pidfdSendSignal(checkInteger('pidfd', pidfd, 0, MAX_FD), signalNumber(signal));
}

export function closeFd(fd: number): void {
  binding().closeFd(checkInteger('fd', fd, 0, MAX_FD));
}

/** Orphaned descendants get reparented to this process (prctl PR_SET_CHILD_SUBREAPER). */
export function setChildSubreaper(): void {
  binding().setChildSubreaper();
}

export interface ReapedProcess {
  pid: number;
  /** Exit code, null when killed by a signal. */
  code: number | null;
  /** Signal name (e.g. 'SIGKILL'), null when it exited. */
  signal: string | null;
}

/**
 * Reaps every exited child whose pid is not in knownPids (the children child_process spawned,
 * which libuv reaps itself) and reports how each ended.
 */
export function reapOrphans(knownPids: number[]): ReapedProcess[] {
  if (!Array.isArray(knownPids)) throw invalidArgument('knownPids', 'an array of pids', knownPids);
  knownPids.forEach((pid, i) => {
    checkInteger(`knownPids[${i}]`, pid, 1, MAX_FD);
  });
  return binding()
    .reapOrphans(knownPids)
    .map(({ pid, code, signal }) => ({
      pid,
      code,
      signal: signal === null ? null : (signalNames.get(signal) ?? `SIG${signal}`),
    }));
}
