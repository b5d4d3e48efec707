// The CPU time of a guest's kernel workers (kworker threads), where virtio-mem plugs and unplugs
// memory, migrating pages out of the blocks it unplugs when they hold any: what a replay reads
// before and after a run to tell the guest CPU a mode spent giving memory back.
import type { GuestClient } from './guest.js';

/** The guest kernel's USER_HZ, the unit of /proc/PID/stat's times (100 on x86). */
const TICK_MS = 10;

/** Each kworker's CPU time (user + system, ms) by pid, from `cat /proc/[0-9]*\/stat`. */
export function parseKernelWorkerCpu(stat: string): Map<number, number> {
  const workers = new Map<number, number>();
  for (const line of stat.split('\n')) {
    // "PID (COMM) STATE PPID …": COMM may hold spaces and parentheses; the fields after its
    // closing one are fixed, utime and stime the 12th and 13th.
    const open = line.indexOf(' (');
    const close = line.lastIndexOf(') ');
    if (open < 0 || close < open) continue;
    if (!line.slice(open + 2, close).startsWith('kworker/')) continue;
    const fields = line.slice(close + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    if (!Number.isInteger(utime) || !Number.isInteger(stime))
      throw new Error(`/proc/PID/stat: no utime and stime in '${line}'`);
    workers.set(Number(line.slice(0, open)), (utime + stime) * TICK_MS);
  }
  return workers;
}

/**
 * The CPU time kworkers spent between two readings: a worker new in `after` (or a pid reused
 * by a new worker) counts whole; one that exited in between is missed.
 */
export function kernelWorkerCpuBetween(
  before: Map<number, number>,
  after: Map<number, number>,
): number {
  let ms = 0;
  for (const [pid, now] of after) {
    const then = before.get(pid) ?? 0;
    ms += now >= then ? now - then : now;
  }
  return ms;
}

export async function readKernelWorkerCpu(guest: GuestClient): Promise<Map<number, number>> {
  // A process may exit between the glob and its read: cat's complaint is not a failure.
  const stat = await guest.check(['/bin/sh', '-c', 'cat /proc/[0-9]*/stat 2>/dev/null; true']);
  return parseKernelWorkerCpu(stat);
}
