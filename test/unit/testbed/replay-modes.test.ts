// The replay's table of modes: what --modes accepts, the order modes run in, how they are named,
// and that stock-kernel is stock in all but where the guest onlines plugged blocks.
import { describe, expect, it } from 'vitest';
import {
  modeLabel,
  REPLAY_MODES,
  replayModeSchema,
  runOrder,
} from '../../../scripts/testbed/replay-modes.js';

describe('replay modes', () => {
  it('accepts the modes of the table, and only those', () => {
    for (const mode of ['stock', 'stock-kernel', 'hotmem', 'hotmem-kept']) {
      expect(replayModeSchema.parse(mode)).toBe(mode);
    }
    expect(replayModeSchema.safeParse('stock-normal').success).toBe(false);
  });

  it('makes stock-kernel stock in all but the zone plugged blocks are onlined to', () => {
    const { label, autoOnline, runsLast, about, ...rest } = REPLAY_MODES['stock-kernel'];
    const stock = REPLAY_MODES.stock;
    expect(rest).toEqual({ controller: stock.controller, giveBackMemory: stock.giveBackMemory });
    expect([label, autoOnline, stock.autoOnline]).toEqual([
      'stock (ZONE_NORMAL)',
      'online_kernel',
      'online_movable',
    ]);
    expect(runsLast).toBe(true);
    expect(about).toMatch(/retry timer/);
  });

  it('runs modes in the order given, stock-kernel after the rest', () => {
    expect(runOrder(['stock', 'stock-kernel', 'hotmem'])).toEqual([
      'stock',
      'hotmem',
      'stock-kernel',
    ]);
    expect(runOrder(['hotmem-kept', 'stock'])).toEqual(['hotmem-kept', 'stock']);
  });

  it('names modes for the report; a mode no longer in the table keeps its key', () => {
    expect(modeLabel('hotmem')).toBe('HotMem');
    expect(modeLabel('stock-kernel')).toBe('stock (ZONE_NORMAL)');
    expect(modeLabel('something-else')).toBe('something-else');
  });
});
