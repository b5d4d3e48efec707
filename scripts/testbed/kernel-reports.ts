// Kernel reports (warnings, BUGs, KASAN, lockdep, hung tasks) cut out of a guest's console, and
// the stock reports a suite may have to expect: one of 6.12's, one of 6.6's.

/** The first line of a kernel report: each is saved with what follows it. */
const REPORT_START =
  /(WARNING:|BUG:|Oops|Kernel panic|KASAN|possible circular locking|INFO: task|Call Trace|inconsistent lock state|possible recursive locking|suspicious RCU usage|sleeping function called from invalid context)/;

/**
 * Each kernel report in the console: from its first line to the end of its trace (or 200
 * lines), with the 5 lines before it. A lockdep report's chains run to 100 lines and more.
 */
export function kernelReports(console: string): string[] {
  const lines = console.split('\n');
  const reports: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!REPORT_START.test(lines[i] ?? '')) continue;
    let end = Math.min(lines.length, i + 200);
    for (let j = i + 1; j < end; j++) {
      if (/---\[ end trace|<\/TASK>|^\[[\s\d.]+\] ={10,}$/.test((lines[j] ?? '').trim())) {
        end = j + 1;
        break;
      }
    }
    reports.push(lines.slice(Math.max(0, i - 5), end).join('\n'));
    i = end - 1;
  }
  return reports;
}

/**
 * A lockdep report that stock 6.12 code makes (read from its source, not seen on a stock build):
 * virtio-mem removes a memory block after a block was onlined through its sysfs state file, and
 * try_remove_memory() unregisters the block's devices under mem_hotplug_lock, so kernfs_drain()
 * waits for kn->active there, while state_store() holds kn->active when it takes mem_hotplug_lock.
 * It cannot deadlock: both also hold device_hotplug_lock, which state_store() only tries
 * (lock_device_hotplug_sysfs()). It is the false positive upstream commit f1037ec0cc8a removed in
 * 5.5 by unregistering the devices before taking the lock, as 6.6.9 still does and 6.12.117 no
 * longer does. The report is recognised by the two locks and where they are taken, and only
 * without a HotMem frame in it. Lockdep turns itself off after any report, so the summary says
 * when it came.
 */
export function isStockHotRemoveReport(report: string): boolean {
  return (
    /possible circular locking dependency detected/.test(report) &&
    /is trying to acquire lock:\r?\n.*\(kn->active\).*at: __kernfs_remove\+/.test(report) &&
    /but task is already holding lock:\r?\n.*\(mem_hotplug_lock\).*at: try_remove_memory\+/.test(
      report,
    ) &&
    /remove_memory_block_devices\+/.test(report) &&
    !/hotmem/i.test(report)
  );
}

/**
 * A warning stock 6.6.9 prints when it removes memory whose memory map was on the memory itself
 * with memory_hotplug.memmap_on_memory=force (seen on a stock 6.6.9 build, 2026-12-07: an ACPI
 * DIMM plugged and ejected without ever going online): try_remove_memory() finds the altmap's
 * count of handed-out pages not back at zero. 6.12.117 does not print it. Recognised by its
 * message and where it comes from, and only without a HotMem frame in its trace.
 */
export function isStockAltmapReport(report: string): boolean {
  return (
    /Altmap not fully unmapped/.test(report) &&
    /WARNING: .* at mm\/memory_hotplug\.c:\d+ try_remove_memory\+/.test(report) &&
    /__remove_memory\+/.test(report) &&
    // A frame, not the word: the guest's HOTMEM_GUEST_* lines may come just before it
    !/\bhotmem\w*\+0x/i.test(report)
  );
}

/** The console time of a report's first line that has one, in seconds. */
export function reportTime(report: string): number | undefined {
  const m = /^\[\s*(\d+\.\d+)\] (?:WARNING|BUG|INFO|Kernel|Oops)/m.exec(report);
  return m?.[1] ? Number(m[1]) : undefined;
}
