// The HTTP side of the fake VMMs: an API server on a unix socket in a temporary directory that
// records every request and answers it with the fake's own routing.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface RecordedRequest {
  method: string;
  url: string;
  body: string;
}

export interface Reply {
  status: number;
  json?: unknown;
}

export interface FakeApiServer {
  readonly socketPath: string;
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

export async function startFakeApiServer(
  dirPrefix: string,
  socketName: string,
  route: (request: RecordedRequest) => Reply,
): Promise<FakeApiServer> {
  const dir = await mkdtemp(path.join(tmpdir(), dirPrefix));
  const socketPath = path.join(dir, socketName);
  const requests: RecordedRequest[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const recorded = {
        method: request.method ?? '',
        url: request.url ?? '',
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(recorded);
      const reply = route(recorded);
      if (reply.json === undefined) response.writeHead(reply.status).end();
      else {
        response
          .writeHead(reply.status, { 'content-type': 'application/json' })
          .end(JSON.stringify(reply.json));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
