// waitForPluggedSize, the one wait every VMM driver's resize ends with: reads, timeout, abort, and
// the size announcements (QEMU's MEMORY_DEVICE_SIZE_CHANGE) that end it before a read would.
import { describe, expect, it } from 'vitest';
import { HotplugMemoryError, waitForPluggedSize } from '../../../lib/host/vmm/hotplug-memory.js';

const MiB = 1024 * 1024;

/** A size source whose listeners the test calls, as a VMM's event stream would. */
function announcer() {
  const listeners = new Set<(size: number) => void>();
  return {
    listeners,
    announce: (size: number) => {
      for (const l of listeners) l(size);
    },
    sizeEvents: (listener: (size: number) => void) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

describe('waitForPluggedSize', () => {
  it('resolves once a read shows the size, reading again after each sleep', async () => {
    const sizes = [0, 0, 2 * MiB, 4 * MiB];
    let reads = 0;
    const readSize = async () => sizes[Math.min(reads++, sizes.length - 1)] ?? 0;
    await waitForPluggedSize(readSize, 4 * MiB, { timeoutMs: 5_000, device: 'dev', pollMs: 1 });
    expect(reads).toBe(4);
  });

  it('ends at an announcement of the size, though reads still show the old one', async () => {
    const events = announcer();
    const start = performance.now();
    setTimeout(() => events.announce(2 * MiB), 20);
    setTimeout(() => events.announce(4 * MiB), 40);
    const seenAt = await waitForPluggedSize(async () => 0, 4 * MiB, {
      timeoutMs: 10_000,
      // Without the announcements the wait would sleep this long between reads.
      pollMs: 10_000,
      device: 'dev',
      sizeEvents: events.sizeEvents,
    });
    expect(seenAt - start).toBeGreaterThanOrEqual(35);
    expect(seenAt - start).toBeLessThan(5_000);
    expect(events.listeners.size).toBe(0);
  });

  it('wakes at any announcement to read again, and ends when that read shows the size', async () => {
    const events = announcer();
    let plugged = 0;
    setTimeout(() => {
      plugged = 4 * MiB;
      // The announcement carries an older size; the read that it prompts sees the new one.
      events.announce(2 * MiB);
    }, 20);
    const start = performance.now();
    await waitForPluggedSize(async () => plugged, 4 * MiB, {
      timeoutMs: 10_000,
      pollMs: 10_000,
      device: 'dev',
      sizeEvents: events.sizeEvents,
    });
    expect(performance.now() - start).toBeLessThan(5_000);
  });

  it('times out naming the device and the size it last read, and unsubscribes', async () => {
    const events = announcer();
    const error = await waitForPluggedSize(async () => 2 * MiB, 4 * MiB, {
      timeoutMs: 50,
      device: "virtio-mem 'vm0'",
      sizeEvents: events.sizeEvents,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugMemoryError);
    expect(error).toMatchObject({
      code: 'ERR_RESIZE_TIMEOUT',
      requestedBytes: 4 * MiB,
      lastSize: 2 * MiB,
    });
    expect((error as Error).message).toBe(
      "virtio-mem 'vm0': plugged size is 2097152 bytes, not 4194304, after 50 ms",
    );
    expect(events.listeners.size).toBe(0);
  });

  it('ends with the signal’s reason when it aborts mid-sleep', async () => {
    const events = announcer();
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('scale-down cancelled')), 20);
    await expect(
      waitForPluggedSize(async () => 0, 4 * MiB, {
        timeoutMs: 10_000,
        pollMs: 10_000,
        device: 'dev',
        signal: controller.signal,
        sizeEvents: events.sizeEvents,
      }),
    ).rejects.toThrow('scale-down cancelled');
    expect(events.listeners.size).toBe(0);
  });
});
