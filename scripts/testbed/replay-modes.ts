// The trace replay's modes, in one table: scripts/replay.ts checks --modes against it, the guest
// side (replay-guest.ts) runs each mode from it, the report (replay-report.ts) names them by it.
import { z } from 'zod';

export interface ReplayModeSpec {
  /** How the report and the plots name the mode. */
  label: string;
  /** The controller's mode; `stock` runs the agent with --unbound. */
  controller: 'stock' | 'hotmem';
  /** auto_online_blocks while it runs: how the guest onlines blocks virtio-mem adds. */
  autoOnline: 'online_movable' | 'online_kernel' | 'offline';
  /** false: scale-downs never shrink the device (the controller's giveBackMemory). */
  giveBackMemory: boolean;
  /** Runs after the other modes: it may leave blocks the guest cannot unplug. */
  runsLast: boolean;
  /** What it stands for, for --help and the docs. */
  about: string;
}

export const REPLAY_MODES = {
  stock: {
    label: 'stock',
    controller: 'stock',
    autoOnline: 'online_movable',
    giveBackMemory: true,
    runsLast: false,
    about: 'unbound instances, plugged blocks onlined to ZONE_MOVABLE; unplug migrates',
  },
  'stock-kernel': {
    label: 'stock (ZONE_NORMAL)',
    controller: 'stock',
    autoOnline: 'online_kernel',
    giveBackMemory: true,
    runsLast: true,
    about:
      "stock with plugged blocks onlined to ZONE_NORMAL, where the kernel's unmovable pages " +
      "land: unplugs that meet them wait for virtio-mem's retry timer",
  },
  hotmem: {
    label: 'HotMem',
    controller: 'hotmem',
    autoOnline: 'offline',
    giveBackMemory: true,
    runsLast: false,
    about: 'each instance in its own partition, reclaimed when it exits, then unplugged',
  },
  'hotmem-kept': {
    label: 'HotMem, memory kept',
    controller: 'hotmem',
    autoOnline: 'offline',
    giveBackMemory: false,
    runsLast: false,
    about: 'HotMem with give-back disabled: the device never shrinks (the baseline)',
  },
} as const satisfies Record<string, ReplayModeSpec>;

export type ReplayMode = keyof typeof REPLAY_MODES;

export const replayModeSchema = z.enum(Object.keys(REPLAY_MODES) as [ReplayMode, ...ReplayMode[]]);

function isReplayMode(mode: string): mode is ReplayMode {
  return Object.hasOwn(REPLAY_MODES, mode);
}

/** How the report names a mode; a mode no longer in the table (a saved run) keeps its key. */
export function modeLabel(mode: string): string {
  return isReplayMode(mode) ? REPLAY_MODES[mode].label : mode;
}

/**
 * The order the modes run in: as given, except those that may leave blocks behind go last
 * (stock-kernel: blocks the guest could not unplug stay plugged and online in ZONE_NORMAL, and
 * a run after it would start on them).
 */
export function runOrder(modes: readonly ReplayMode[]): ReplayMode[] {
  return [
    ...modes.filter((mode) => !REPLAY_MODES[mode].runsLast),
    ...modes.filter((mode) => REPLAY_MODES[mode].runsLast),
  ];
}
