// Protocol test: a small HTTP server on a unix socket plays the Cloud Hypervisor API and checks
// each request the client sends. No Cloud Hypervisor binary is involved.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CloudHypervisorApiError,
  CloudHypervisorClient,
  CloudHypervisorTimeoutError,
} from '../../../lib/host/vmm/cloud-hypervisor.js';

interface RecordedRequest {
  method: string;
  url: string;
  contentType: string | undefined;
  body: string;
}

type Reply = (request: RecordedRequest, response: http.ServerResponse) => void;

let dir: string;
let socketPath: string;
let server: http.Server;
let requests: RecordedRequest[];
let reply: Reply;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hotmem-ch-'));
  socketPath = path.join(dir, 'api.sock');
  requests = [];
  reply = (_request, response) => response.writeHead(204).end();
  server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const recorded = {
        method: request.method ?? '',
        url: request.url ?? '',
        contentType: request.headers['content-type'],
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(recorded);
      reply(recorded, response);
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

const json = (response: http.ServerResponse, status: number, value: unknown) =>
  response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));

describe('CloudHypervisorClient', () => {
  it('pings the VMM with GET /api/v1/vmm.ping and maps the answer', async () => {
    reply = (_request, response) =>
      json(response, 200, {
        version: 'v38.0',
        build_version: 'v38.0-dirty',
        pid: 42,
        features: ['kvm'],
      });
    const client = new CloudHypervisorClient({ socketPath });
    await expect(client.ping()).resolves.toEqual({
      version: 'v38.0',
      buildVersion: 'v38.0-dirty',
      pid: 42,
      features: ['kvm'],
    });
    expect(requests).toEqual([
      { method: 'GET', url: '/api/v1/vmm.ping', contentType: undefined, body: '' },
    ]);
  });

  it('reads vm.info including memory zones and the actual memory size', async () => {
    reply = (_request, response) =>
      json(response, 200, {
        state: 'Running',
        memory_actual_size: 3 * 2 ** 30,
        config: {
          payload: { kernel: '/boot/vmlinux' },
          memory: {
            size: 2 ** 30,
            hotplug_size: 8 * 2 ** 30,
            hotplug_method: 'VirtioMem',
            zones: [{ id: 'mem0', size: 0, hotplug_size: 2 ** 32, hotplugged_size: 2 ** 31 }],
          },
        },
      });
    const info = await new CloudHypervisorClient({ socketPath }).info();
    expect(info).toEqual({
      state: 'Running',
      memoryActualSize: 3 * 2 ** 30,
      memory: {
        size: 2 ** 30,
        hotplugSize: 8 * 2 ** 30,
        hotplugMethod: 'VirtioMem',
        zones: [{ id: 'mem0', size: 0, hotplugSize: 2 ** 32, hotpluggedSize: 2 ** 31 }],
      },
    });
    expect(requests[0]?.url).toBe('/api/v1/vm.info');
  });

  it('returns the counters as reported', async () => {
    const counters = { mem0: { plugged: 5 }, _net1: { rx_bytes: 10, tx_bytes: 20 } };
    reply = (_request, response) => json(response, 200, counters);
    await expect(new CloudHypervisorClient({ socketPath }).counters()).resolves.toEqual(counters);
    expect(requests[0]).toMatchObject({ method: 'GET', url: '/api/v1/vm.counters' });
  });

  it('sends PUT vm.resize with desired_ram as a JSON body', async () => {
    await new CloudHypervisorClient({ socketPath }).resize({ desiredRam: 3 * 2 ** 30 });
    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request).toMatchObject({
      method: 'PUT',
      url: '/api/v1/vm.resize',
      contentType: 'application/json',
    });
    expect(JSON.parse(request?.body ?? '')).toEqual({ desired_ram: 3 * 2 ** 30 });
  });

  it('sends PUT vm.resize-zone with the zone id and desired_ram', async () => {
    await new CloudHypervisorClient({ socketPath }).resizeZone({ id: 'mem0', desiredRam: 2 ** 31 });
    expect(requests[0]).toMatchObject({ method: 'PUT', url: '/api/v1/vm.resize-zone' });
    expect(JSON.parse(requests[0]?.body ?? '')).toEqual({ id: 'mem0', desired_ram: 2 ** 31 });
  });

  it('rejects invalid sizes and zone ids before sending anything', async () => {
    const client = new CloudHypervisorClient({ socketPath });
    await expect(client.resize({ desiredRam: 0 })).rejects.toThrow(/desiredRam/);
    await expect(client.resize({ desiredRam: 1.5 })).rejects.toThrow(/desiredRam/);
    await expect(client.resizeZone({ id: '', desiredRam: 2 ** 30 })).rejects.toThrow(/id/);
    expect(requests).toHaveLength(0);
  });

  it('carries the status and the body of an error answer', async () => {
    reply = (_request, response) =>
      response.writeHead(500).end('Error from API: The memory zone could not be resized');
    const error = await new CloudHypervisorClient({ socketPath })
      .resizeZone({ id: 'nope', desiredRam: 2 ** 30 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CloudHypervisorApiError);
    expect(error).toMatchObject({
      status: 500,
      method: 'PUT',
      path: '/api/v1/vm.resize-zone',
      body: 'Error from API: The memory zone could not be resized',
    });
  });

  it('rejects a 200 answer whose body does not match the API', async () => {
    reply = (_request, response) => json(response, 200, { state: 'Levitating', config: {} });
    await expect(new CloudHypervisorClient({ socketPath }).info()).rejects.toThrow(
      /vm\.info -> 200 \(state: /,
    );
  });

  it('rejects a hotplug_method in the CLI spelling, which the JSON API never uses', async () => {
    // vm_config.rs HotplugMethod is a plain serde enum (v53.0): "Acpi" | "VirtioMem".
    reply = (_request, response) =>
      json(response, 200, {
        state: 'Running',
        config: { memory: { size: 2 ** 30, hotplug_method: 'virtio-mem' } },
      });
    await expect(new CloudHypervisorClient({ socketPath }).info()).rejects.toThrow(
      /config\.memory\.hotplug_method: /,
    );
  });

  it('times out when the VMM does not answer', async () => {
    reply = () => {}; // never answers
    const client = new CloudHypervisorClient({ socketPath, timeoutMs: 100 });
    const started = Date.now();
    await expect(client.ping()).rejects.toBeInstanceOf(CloudHypervisorTimeoutError);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('fails with the socket error when nothing listens', async () => {
    const client = new CloudHypervisorClient({ socketPath: path.join(dir, 'missing.sock') });
    await expect(client.ping()).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
