import { describe, expect, it } from 'vitest';
import {
  kernelWorkerCpuBetween,
  parseKernelWorkerCpu,
} from '../../../scripts/testbed/kernel-workers.js';

// Lines as a 6.12 guest prints them: two kworkers, kthreadd, and a process whose name holds
// ") " and "kworker/" to mislead a naive parser.
const STAT = [
  '2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 3 0 0 18446744073709551615',
  '11 (kworker/0:1-mm_percpu_wq) I 2 0 0 0 -1 69238880 0 0 0 0 0 59 0 0 20 0 1 0 19 0 0 0',
  '40 (kworker/u4:2-events_unbound) I 2 0 0 0 -1 69238880 0 0 0 0 1 7 0 0 20 0 1 0 40 0 0 0',
  '77 (x) (kworker/1) R 1 77 1 0 -1 4194304 97 0 0 0 500 600 0 0 20 0 1 0 109 3133440 360 0',
  '',
].join('\n');

describe('kernel worker CPU', () => {
  it('reads each kworker’s user + system ticks as ms, and nothing else', () => {
    expect(parseKernelWorkerCpu(STAT)).toEqual(
      new Map([
        [11, 590],
        [40, 80],
      ]),
    );
  });

  it('refuses a kworker line without its times', () => {
    expect(() => parseKernelWorkerCpu('12 (kworker/0:2) I 2 0 0')).toThrow(/no utime and stime/);
  });

  it('counts what workers spent between readings, a new worker whole', () => {
    const before = new Map([
      [11, 590],
      [40, 80],
      [50, 900],
    ]);
    // 40 exited (missed), 50 is a new worker on a reused pid, 60 is new.
    const after = new Map([
      [11, 640],
      [50, 20],
      [60, 30],
    ]);
    expect(kernelWorkerCpuBetween(before, after)).toBe(50 + 20 + 30);
  });
});
