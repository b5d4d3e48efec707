// A serverless function as the trace replay runs it in the guest: one instance of it is one
// process serving invocations over HTTP on 127.0.0.1:$PORT (the agent relays to it).
//
// Its memory is that of a warm runtime: at start it allocates and touches FOOTPRINT_MIB (the
// code, heap and caches a real function keeps between invocations), then listens; the time
// that takes is its cold start. Each invocation is `POST /` with a JSON body
// `{"durationMs": N, "memoryMiB": M}`: it touches M MiB of scratch memory (capped at the
// footprint it already holds, which it reuses) and computes for N ms, then answers
// `{"ok": true, "computeMs": …}`. Dependency-free: it runs on the guest's bare Node.js.
import { createServer } from 'node:http';

const MiB = 1024 * 1024;
const PAGE = 4096;
const port = Number(process.env.PORT);
const footprintMiB = Number(process.env.FOOTPRINT_MIB ?? 64);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`function: PORT must be a TCP port, not '${process.env.PORT}'`);
  process.exit(2);
}
if (!Number.isFinite(footprintMiB) || footprintMiB < 0) {
  console.error(
    `function: FOOTPRINT_MIB must be a number of MiB, not '${process.env.FOOTPRINT_MIB}'`,
  );
  process.exit(2);
}

// Outside V8's heap (an ArrayBuffer's store is malloc'ed and faulted in page by page), so the
// footprint is the process's anonymous memory: what lands in its partition.
const footprint = Buffer.allocUnsafeSlow(Math.max(footprintMiB * MiB, PAGE));
const touch = (bytes) => {
  for (let offset = 0; offset < bytes; offset += PAGE) footprint[offset] = offset & 0xff;
};
touch(footprint.length);

/** Busy work for `ms` milliseconds: a function's compute, not a sleep. */
function compute(ms) {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) for (let i = 0; i < 10_000; i++) x = (x * 31 + i) | 0;
  return x;
}

function parse(body) {
  const request = body.length ? JSON.parse(body) : {};
  const durationMs = Number(request.durationMs ?? 0);
  const memoryMiB = Number(request.memoryMiB ?? 0);
  if (!(durationMs >= 0 && durationMs <= 600_000)) throw new RangeError('durationMs: 0-600000');
  if (!(memoryMiB >= 0)) throw new RangeError('memoryMiB: a number of MiB, at least 0');
  return { durationMs, memoryMiB };
}

createServer((request, response) => {
  let body = '';
  request.setEncoding('utf8');
  request.on('data', (chunk) => {
    body += chunk;
  });
  request.on('end', () => {
    let asked;
    try {
      asked = parse(body);
    } catch (error) {
      response.writeHead(400, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ ok: false, error: String(error.message ?? error) }));
      return;
    }
    const started = performance.now();
    touch(Math.min(asked.memoryMiB * MiB, footprint.length));
    compute(asked.durationMs);
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ ok: true, computeMs: performance.now() - started }));
  });
}).listen(port, '127.0.0.1', () => console.log(`function ready on ${port}`));
