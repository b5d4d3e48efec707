/**
 * lib/hotmem-device.ts's own logic (ABI check, lazy event watch, decoding, flag merging) over a
 * recording fake of the native device class, loaded in a child process via HOTMEM_NATIVE_PATH.
 * The native device itself is covered by hotmem-device.test.ts and the e2e suite.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

interface FakeRun {
  error?: { name: string; code: string; message: string };
  calls: unknown[][];
  [key: string]: unknown;
}

/** Runs body with `HotMemDevice`, `fake` (its native calls), `deliver` and `out` in scope. */
function runWithFakeDevice(body: string, abiVersion = 2): FakeRun {
  const script = `
    import { binding } from ${JSON.stringify(join(process.cwd(), 'lib/binding.ts'))};
    import { HotMemDevice } from ${JSON.stringify(join(process.cwd(), 'lib/hotmem-device.ts'))};
    const fake = binding().fakeCalls;
    const deliver = (error, events) => binding().fakeDevices.at(-1).deliver(error, events);
    const out = {};
    try { ${body} } catch (e) { out.error = { name: e.name, code: e.code, message: e.message }; }
    out.calls = fake;
    console.log(JSON.stringify(out, (_, v) => (typeof v === 'bigint' ? \`\${v}n\` : v)));
  `;
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    {
      encoding: 'utf8',
      env: {
        ...process.env,
        HOTMEM_NATIVE_PATH: join(process.cwd(), 'test/unit/native/fake-native-device.cjs'),
        FAKE_ABI_VERSION: String(abiVersion),
      },
    },
  );
  expect(run.stderr).toBe('');
  return JSON.parse(run.stdout) as FakeRun;
}

describe('HotMemDevice over a fake native device', () => {
  it('refuses a kernel speaking another ABI version and closes the file', () => {
    const out = runWithFakeDevice('HotMemDevice.open({ root: "/r" });', 1);
    expect(out.error).toEqual({
      name: 'HotMemError',
      code: 'ERR_ABI_MISMATCH',
      message: '/r/dev/hotmem speaks HotMem ABI 1, this addon was built for 2',
    });
    expect(out.calls).toEqual([['open', '/r/dev/hotmem'], ['close']]);
  });

  it('watches events only while someone listens', () => {
    const out = runWithFakeDevice(`
      const device = HotMemDevice.open();
      const first = () => {};
      device.on('event', first);
      device.on('event', () => {});
      out.afterTwo = fake.map((c) => c[0]);
      device.off('event', first);
      out.afterOneLeft = fake.map((c) => c[0]);
      device.removeAllListeners('event');
      device.close();
      device.on('event', () => {});
    `);
    expect(out.afterTwo).toEqual(['open', 'watchEvents']);
    expect(out.afterOneLeft).toEqual(['open', 'watchEvents']);
    expect(out.calls.map((c) => c[0])).toEqual(['open', 'watchEvents', 'unwatchEvents', 'close']);
  });

  it('emits decoded events, skips unknown types, then the stream error', () => {
    const out = runWithFakeDevice(`
      const device = HotMemDevice.open();
      out.seen = [];
      device.on('event', (e) => out.seen.push(e));
      device.on('error', (e) => out.seen.push(e.message));
      deliver(new Error('EIO: i/o error, read'), [
        { type: 1, partition: 3, seq: 7n, timestampNs: 99n, data: 0n },
        { type: 42, partition: 3, seq: 8n, timestampNs: 100n, data: 0n },
        { type: 2, partition: 3, seq: 9n, timestampNs: 101n, data: 268435456n },
      ]);
    `);
    expect(out.seen).toEqual([
      { type: 'released', partition: 3, seq: 7, timestampNs: '99n', data: 0 },
      { type: 'reclaimed', partition: 3, seq: 9, timestampNs: '101n', data: 268435456 },
      'EIO: i/o error, read',
    ]);
  });

  it('decodes partition info and changes only the flags it is given', () => {
    const out = runWithFakeDevice(`
      const device = HotMemDevice.open();
      out.partitions = device.partitions();
      device.setFlags(0, { spill: true });
      try { device.setFlags(0, { spill: 'yes' }); } catch (e) { out.flagError = e.message; }
    `);
    expect(out.partitions).toEqual([
      {
        id: 0,
        state: 'bound',
        flags: { spill: false, autoReclaim: true },
        nrBlocks: 2,
        node: 0,
        presentBytes: 1 << 28,
        freeBytes: 0,
        boundMms: 1,
        spilledPages: 0,
        oomKills: 0,
      },
      expect.objectContaining({
        id: 1,
        state: 'empty',
        flags: { spill: false, autoReclaim: false },
      }),
    ]);
    // SPILL | AUTO_RECLAIM: the partition's auto-reclaim flag survives.
    expect(out.calls.filter((c) => c[0] === 'setFlags')).toEqual([['setFlags', 0, 3]]);
    expect(out.flagError).toMatch(
      /'flags.spill' must be one of spill\/autoReclaim set to a boolean/,
    );
  });

  it('checks bind arguments before calling the kernel', () => {
    const out = runWithFakeDevice(`
      const device = HotMemDevice.open();
      await device.bind(5, 1, { waitMs: 250 });
      await device.bind(5, 1);
      await device.bind(5, 1, { waitMs: 0 }).catch((e) => { out.waitError = e.message; });
    `);
    expect(out.calls.filter((c) => c[0] === 'bind')).toEqual([
      ['bind', 5, 1, 250],
      ['bind', 5, 1, -1],
    ]);
    expect(out.waitError).toMatch(/'opts.waitMs' must be an integer in \[1, 2147483647\]/);
  });
});
