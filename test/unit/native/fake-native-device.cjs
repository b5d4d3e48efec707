// The real addon with HotMemDevice replaced by a recording fake, loaded through
// HOTMEM_NATIVE_PATH so lib/hotmem-device.ts's own logic can be tested without a HotMem kernel.
'use strict';
const path = require('node:path');

const real = require(path.join(process.cwd(), 'build/Release/hotmem.node'));
const { constants } = real.abi;
const calls = [];
const devices = [];

class FakeHotMemDevice {
  constructor(devicePath) {
    this.path = devicePath;
    calls.push(['open', devicePath]);
    devices.push(this);
  }
  version() {
    return { abiVersion: Number(process.env.FAKE_ABI_VERSION), maxPartitions: 2, nrPartitions: 1 };
  }
  partitionInfo(id) {
    return {
      id,
      state: id === 0 ? constants.HOTMEM_PARTITION_BOUND : constants.HOTMEM_PARTITION_EMPTY,
      flags: id === 0 ? constants.HOTMEM_PARTITION_AUTO_RECLAIM : 0,
      nrBlocks: id === 0 ? 2 : 0,
      node: 0,
      presentBytes: id === 0 ? 1n << 28n : 0n,
      freeBytes: 0n,
      boundMms: id === 0 ? 1n : 0n,
      spilledPages: 0n,
      oomKills: 0n,
    };
  }
  bind(...args) {
    calls.push(['bind', ...args]);
    return Promise.resolve();
  }
  setFlags(...args) {
    calls.push(['setFlags', ...args]);
  }
  reclaim(partition) {
    return Promise.resolve({
      partition,
      blocks: 2,
      bytes: 1n << 28n,
      durationNs: 5000n,
      pagesMigrated: 0n,
    });
  }
  watchEvents(callback) {
    calls.push(['watchEvents']);
    this.deliver = callback;
  }
  unwatchEvents() {
    calls.push(['unwatchEvents']);
  }
  ref() {}
  unref() {}
  close() {
    calls.push(['close']);
  }
}

module.exports = {
  ...real,
  HotMemDevice: FakeHotMemDevice,
  fakeCalls: calls,
  fakeDevices: devices,
};
