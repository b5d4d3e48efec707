// Drives every native entry point once, success and failure paths, for runs under valgrind or
// ASan (see sanitizers.test.ts). Usage: node exercise-addon.cjs path/to/hotmem.node
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const native = require(path.resolve(process.argv[2]));
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hotmem-exercise-'));

function expectFailure(what, fn) {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error(`${what} should have failed`);
}

async function main() {
  const memory = path.join(root, 'memory');
  fs.mkdirSync(path.join(memory, 'memory3'), { recursive: true });
  fs.writeFileSync(path.join(memory, 'block_size_bytes'), '8000000\n');
  fs.writeFileSync(path.join(memory, 'memory3/state'), 'offline\n');
  fs.writeFileSync(path.join(memory, 'memory3/phys_index'), '00000003\n');
  fs.writeFileSync(path.join(memory, 'memory3/valid_zones'), 'Movable HotMem0\n');
  fs.mkdirSync(path.join(memory, 'memory3/node0'));

  if (native.memoryBlockSize(memory) !== 0x8000000) throw new Error('block size');
  const [block] = await native.listMemoryBlocks(memory);
  if (block.physIndex !== 3n || block.validZones.length !== 2) throw new Error('list');
  await native.readMemoryBlock(memory, 3);
  await native.readMemoryBlock(memory, 4).then(
    () => Promise.reject(new Error('memory4 should not exist')),
    () => {},
  );
  await native.writeAttribute(path.join(memory, 'memory3/state'), 'online_hotmem0');
  await native.writeAttribute(path.join(root, 'nope/state'), 'x').catch(() => {});
  await native.readAttribute(path.join(memory, 'memory3/state'));
  native.readAttributeSync(path.join(memory, 'memory3/state'));
  expectFailure('readAttributeSync', () => native.readAttributeSync(path.join(root, 'nope')));

  const dev = path.join(root, 'hotmem');
  expectFailure('open', () => new native.HotMemDevice(dev));
  fs.writeFileSync(dev, '');
  const file = new native.HotMemDevice(dev);
  expectFailure('version', () => file.version());
  expectFailure('partitionInfo', () => file.partitionInfo(1));
  expectFailure('setFlags', () => file.setFlags(1, 3));
  expectFailure('bad argument', () => file.partitionInfo('x'));
  await file.bind(0, 1, 5).catch(() => {});
  await file.reclaim(1).catch(() => {});
  file.close();
  expectFailure('closed', () => file.version());

  fs.rmSync(dev);
  execFileSync('mkfifo', [dev]);
  const fifo = new native.HotMemDevice(dev);
  const layout = native.abi.structs.hotmem_event;
  await new Promise((resolve, reject) => {
    fifo.watchEvents((error, events) => {
      if (error) reject(error);
      if (events.length === 2) resolve();
    });
    const writer = fs.openSync(dev, 'w');
    const records = Buffer.alloc(2 * layout.sizeof);
    for (const at of [0, layout.sizeof]) {
      records.writeUInt32LE(layout.sizeof, at + layout.fields.size);
      records.writeUInt32LE(1, at + layout.fields.type);
    }
    fs.writeSync(writer, records);
    fs.closeSync(writer);
  });
  fifo.unref();
  fifo.close();

  expectFailure('pidfdOpen', () => native.pidfdOpen(2 ** 23));
  let pidfd;
  try {
    pidfd = native.pidfdOpen(process.pid);
  } catch (error) {
    // Valgrind 3.19 (Debian 12) does not know pidfd_open; process.test.ts covers it natively.
    if (error.code !== 'ENOSYS') throw error;
  }
  if (pidfd !== undefined) {
    native.pidfdSendSignal(pidfd, 0);
    native.closeFd(pidfd);
  }
  native.reapOrphans([]);
}

main()
  .then(() => console.log('exercised'))
  .finally(() => fs.rmSync(root, { recursive: true, force: true }));
