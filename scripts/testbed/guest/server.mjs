// The test bed's hands inside the guest: a small HTTP/JSON server that the host-side tests
// reach through QEMU's user-mode network (forwarded to the host's 127.0.0.1 only). It runs
// programs by argv (never a shell), keeps background processes, and reads and writes files
// such as sysfs attributes. Dependency-free: it runs on the guest's bare Node.js.
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 7070);
const PACKAGE = new URL('../../../', import.meta.url);
/** /dev/hotmem through the package's own wrapper, opened on first use. */
let hotmemDevice;
const OUTPUT_LIMIT = 1 << 20;
/** @type {Map<number, {child: import('node:child_process').ChildProcess, stdout: string, stderr: string, exit: Promise<{code: number|null, signal: string|null}>}>} */
const background = new Map();

class BadRequest extends Error {}

function argvOf(body) {
  const { argv } = body;
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string')) {
    throw new BadRequest('argv must be a non-empty array of strings');
  }
  return argv;
}

function start(argv) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  const entry = { child, stdout: '', stderr: '' };
  child.stdout.on('data', (d) => {
    entry.stdout = (entry.stdout + d).slice(-OUTPUT_LIMIT);
  });
  child.stderr.on('data', (d) => {
    entry.stderr = (entry.stderr + d).slice(-OUTPUT_LIMIT);
  });
  entry.exit = new Promise((resolve) => {
    child.on('error', (err) => {
      entry.stderr += String(err);
      resolve({ code: null, signal: null, error: String(err) });
    });
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return entry;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitForOutput(entry, text, ms) {
  const deadline = Date.now() + ms;
  while (!entry.stdout.includes(text)) {
    const exited = await Promise.race([
      entry.exit.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 20)),
    ]);
    if (exited && !entry.stdout.includes(text)) {
      throw new Error(`process exited before printing '${text}': ${entry.stderr.trim()}`);
    }
    if (Date.now() > deadline) throw new Error(`'${text}' not printed within ${ms} ms`);
  }
}

const routes = {
  'GET /health': async () => ({ ok: true, uptime: process.uptime() }),
  'POST /run': async (body) => {
    const entry = start(argvOf(body));
    if (typeof body.input === 'string') entry.child.stdin.end(body.input);
    else entry.child.stdin.end();
    const t0 = process.hrtime.bigint();
    const result = await withTimeout(entry.exit, body.timeoutMs ?? 120_000, body.argv[0]).catch(
      (err) => {
        entry.child.kill('SIGKILL');
        throw err;
      },
    );
    const durationMs = Number(process.hrtime.bigint() - t0) / 1e6;
    return { ...result, stdout: entry.stdout, stderr: entry.stderr, durationMs };
  },
  'POST /spawn': async (body) => {
    const entry = start(argvOf(body));
    background.set(entry.child.pid, entry);
    if (typeof body.waitFor === 'string') {
      await waitForOutput(entry, body.waitFor, body.timeoutMs ?? 120_000);
    }
    return { pid: entry.child.pid };
  },
  'POST /wait': async (body) => {
    const entry = background.get(body.pid);
    if (!entry) throw new BadRequest(`no background process ${body.pid}`);
    const result = await withTimeout(entry.exit, body.timeoutMs ?? 120_000, `pid ${body.pid}`);
    background.delete(body.pid);
    return { ...result, stdout: entry.stdout, stderr: entry.stderr };
  },
  'POST /signal': async (body) => {
    const entry = background.get(body.pid);
    if (!entry) throw new BadRequest(`no background process ${body.pid}`);
    entry.child.kill(body.signal ?? 'SIGTERM');
    return { ok: true };
  },
  'POST /read': async (body) => ({ data: await readFile(String(body.path), 'utf8') }),
  'POST /write': async (body) => {
    await writeFile(String(body.path), String(body.data));
    return { ok: true };
  },
  // In-process, so that a measurement of the reclaim does not include starting a Node.js CLI.
  'POST /hotmem/reclaim': async (body) => {
    if (!hotmemDevice) {
      const { HotMemDevice } = await import(new URL('dist/lib/hotmem-device.js', PACKAGE).href);
      hotmemDevice = HotMemDevice.open();
    }
    // The kernel's durationNs covers the offlining only; elapsedNs is the whole ioctl (claim,
    // emptiness check, offlining) as a userspace caller waits for it.
    const start = process.hrtime.bigint();
    const report = await hotmemDevice.reclaim(Number(body.partition));
    const elapsedNs = Number(process.hrtime.bigint() - start);
    return { ...report, durationNs: Number(report.durationNs), elapsedNs };
  },
  'POST /shutdown': async (body) => {
    setImmediate(() => {
      for (const { child } of background.values()) child.kill('SIGKILL');
      hotmemDevice?.close();
      server.close();
      process.exitCode = Number.isInteger(body.code) ? body.code : 0;
    });
    return { ok: true };
  },
};

const server = createServer(async (req, res) => {
  let status = 200;
  let payload;
  try {
    const route = routes[`${req.method} ${req.url}`];
    if (!route) {
      status = 404;
      throw new Error(`no route ${req.method} ${req.url}`);
    }
    let raw = '';
    for await (const chunk of req) raw += chunk;
    payload = await route(raw ? JSON.parse(raw) : {});
  } catch (err) {
    if (status === 200)
      status = err instanceof BadRequest || err instanceof SyntaxError ? 400 : 500;
    payload = { error: { code: err.code, message: err.message } };
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(payload));
});

server.listen(port, '0.0.0.0', () => {
  console.log(`HOTMEM_GUEST_READY port=${port}`);
});
