// The unix socket: whoever can connect to it can start processes as root, so nobody but the
// agent's user may connect to it, not even in the instant after it is created.
import { statSync } from 'node:fs';
import { chmod, chown, mkdir, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { type Harness, makeTempTree, startHarness } from './harness.js';

let harness: Harness | undefined;
const restore: Array<() => void> = [];

afterEach(async () => {
  for (const undo of restore.splice(0)) undo();
  await harness?.close();
  harness = undefined;
});

/** Records the socket's mode at the moment the server starts listening, before anything else. */
function recordModeWhenListening(socketPath: string): number[] {
  const modes: number[] = [];
  type Emit = (this: net.Server, event: string | symbol, ...args: unknown[]) => boolean;
  const prototype = net.Server.prototype as unknown as { emit: Emit };
  const original = prototype.emit;
  prototype.emit = function (event, ...args) {
    if (event === 'listening') modes.push(statSync(socketPath).mode & 0o777);
    return original.call(this, event, ...args);
  };
  restore.push(() => {
    prototype.emit = original;
  });
  return modes;
}

it('creates the socket 0600 from the start, under umask 000 in an existing 0755 directory', async () => {
  const tree = await makeTempTree();
  const socketDir = path.join(tree.dir, 'run');
  await mkdir(socketDir);
  await chmod(socketDir, 0o755);
  const socketPath = path.join(socketDir, 'agent.sock');
  const umask = process.umask(0);
  restore.push(() => process.umask(umask));
  const modes = recordModeWhenListening(socketPath);
  harness = await startHarness({ tree, endpoint: { socketPath } });
  expect(modes.map((mode) => mode.toString(8))).toEqual(['600']);
  expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
  expect(process.umask()).toBe(0);
  await expect(harness.client.health()).resolves.toMatchObject({ status: 'ok' });
});

it('refuses a socket directory others can write to', async () => {
  const tree = await makeTempTree();
  const socketDir = path.join(tree.dir, 'shared');
  await mkdir(socketDir);
  await chmod(socketDir, 0o1777);
  await expect(
    startHarness({ tree, endpoint: { socketPath: path.join(socketDir, 'agent.sock') } }),
  ).rejects.toThrow(/shared: the socket directory is writable by group or others \(mode 1777\)/);
});

it.skipIf(process.getuid?.() !== 0)('refuses a socket directory another user owns', async () => {
  const tree = await makeTempTree();
  const socketDir = path.join(tree.dir, 'theirs');
  await mkdir(socketDir, { mode: 0o700 });
  await chown(socketDir, 65534, 65534);
  await expect(
    startHarness({ tree, endpoint: { socketPath: path.join(socketDir, 'agent.sock') } }),
  ).rejects.toThrow(
    /theirs: the socket directory is owned by uid 65534, not by the agent \(uid 0\)/,
  );
});
