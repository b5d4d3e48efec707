import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  isStockAltmapReport,
  isStockHotRemoveReport,
  kernelReports,
  reportTime,
} from '../../../scripts/testbed/kernel-reports.js';

// The report as the 6.12.117 debug build printed it in the race stress (2026-12-06), with the
// console lines before it: virtio-mem removing a block, no HotMem frame.
const consoleLog = readFileSync(
  new URL('../fixtures/lockdep-stock-hot-remove.txt', import.meta.url),
  'utf8',
);

describe('kernel reports', () => {
  it('cuts the lockdep report out of the console as one report', () => {
    const reports = kernelReports(consoleLog);
    expect(reports).toHaveLength(1);
    expect(reports[0]).toContain('remove_memory_block_devices+');
    expect(reports[0]).toContain('</TASK>');
  });

  it("recognises stock 6.12's kn->active against mem_hotplug_lock report and when it came", () => {
    const [report] = kernelReports(consoleLog);
    expect(isStockHotRemoveReport(report ?? '')).toBe(true);
    expect(reportTime(report ?? '')).toBeCloseTo(50.960133, 5);
  });

  it('does not excuse the same cycle once a HotMem frame is in it', () => {
    const withHotMem = consoleLog.replace(
      'virtio_mem_sbm_remove_mb+0x26/0x54',
      'hotmem_claim_range+0x1a/0x2b0',
    );
    expect(withHotMem).not.toBe(consoleLog);
    const [report] = kernelReports(withHotMem);
    expect(isStockHotRemoveReport(report ?? '')).toBe(false);
  });

  it.each([
    [
      'another lock taken under mem_hotplug_lock',
      '(kn->active){++++}-{0:0}, at: __kernfs_remove+',
      '(&vm->hotplug_mutex){+.+.}-{3:3}, at: virtio_mem_memory_notifier_cb+',
    ],
    [
      'mem_hotplug_lock held anywhere but try_remove_memory()',
      '(mem_hotplug_lock){++++}-{0:0}, at: try_remove_memory+',
      '(mem_hotplug_lock){++++}-{0:0}, at: offline_pages+',
    ],
  ])('does not excuse %s', (_what, line, replacement) => {
    const changed = consoleLog.replace(line, replacement);
    expect(changed).not.toBe(consoleLog);
    expect(isStockHotRemoveReport(kernelReports(changed)[0] ?? '')).toBe(false);
  });

  it('excuses no other kind of report', () => {
    const kasan = [
      '[   12.000000] ==================================================================',
      '[   12.000001] BUG: KASAN: use-after-free in try_remove_memory+0x10/0x20',
      '[   12.000002] Read of size 8 at addr ffff888000000000 by task kworker/0:1/10',
      '[   12.000003] Call Trace:',
      '[   12.000004]  <TASK>',
      '[   12.000005]  remove_memory_block_devices+0x73/0x7a',
      '[   12.000006]  </TASK>',
    ].join('\n');
    const reports = kernelReports(kasan);
    expect(reports).toHaveLength(1);
    expect(isStockHotRemoveReport(reports[0] ?? '')).toBe(false);
  });

  describe("stock 6.6.9's altmap warning", () => {
    // As a stock 6.6.9 build printed it (2026-12-07) when an ACPI DIMM added with
    // memmap_on_memory=force was ejected.
    const altmapLog = readFileSync(
      new URL('../fixtures/altmap-stock-dimm-remove.txt', import.meta.url),
      'utf8',
    );

    it('is one report, recognised as the stock one, and not taken for the lockdep one', () => {
      const reports = kernelReports(altmapLog);
      expect(reports).toHaveLength(1);
      expect(isStockAltmapReport(reports[0] ?? '')).toBe(true);
      expect(isStockHotRemoveReport(reports[0] ?? '')).toBe(false);
      expect(isStockAltmapReport(kernelReports(consoleLog)[0] ?? '')).toBe(false);
    });

    it('is not excused once a HotMem frame is in it', () => {
      const withHotMem = altmapLog.replace(
        'acpi_memory_device_remove+0x62/0xa8',
        'hotmem_reclaim+0x62/0xa8',
      );
      expect(withHotMem).not.toBe(altmapLog);
      expect(isStockAltmapReport(kernelReports(withHotMem)[0] ?? '')).toBe(false);
    });
  });
});
