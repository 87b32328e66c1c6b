// The broker's API reference, checked by the reference validators: the
// AsyncAPI 3.0 document of GET /api/ws with @asyncapi/parser (the parser of
// the AsyncAPI tools, with its Spectral ruleset), and the OpenAPI 3.1
// document of GET /api/openapi.json with @apidevtools/swagger-parser. The
// documents are fetched from the running binary (started on 127.0.0.1 with
// WS_PORT=0), not from a file: what is validated is what clients get.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import SwaggerParser from '@apidevtools/swagger-parser';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.AGENT_EVENTS_BIN ?? path.resolve(HERE, '../../target/debug/agent-events');
const READY = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
const STEP_MS = 10_000;

let broker;

/** Starts the binary and resolves once it says it is listening. */
function start() {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'agent-events-api-spec-'));
  const child = spawn(BIN, [], {
    env: {
      ...process.env,
      WS_PORT: '0',
      BIND_ADDR: '127.0.0.1',
      DATA_DIR: dataDir,
      RUST_LOG: 'info',
      REDIS_URL: '',
      MONGODB_URI: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" within 30 s:\n${log.join('\n')}`)), 30_000);
    let pending = '';
    for (const stream of [child.stdout, child.stderr]) {
      stream.on('data', (chunk) => {
        pending += chunk;
        const lines = pending.split('\n');
        pending = lines.pop();
        for (const line of lines) {
          log.push(line);
          const ready = READY.exec(line);
          if (ready) {
            clearTimeout(timer);
            resolve(Number(ready[1]));
          }
        }
      });
    }
    exited.then((code) => reject(new Error(`the broker exited (${code}) before listening:\n${log.join('\n')}`)));
  });
  return { child, dataDir, exited, port };
}

async function getJson(p) {
  const port = await broker.port;
  const response = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(STEP_MS) });
  assert.equal(response.status, 200, `${p}: ${response.status}`);
  assert.match(response.headers.get('content-type'), /^application\/json/);
  return response.json();
}

before(async () => {
  broker = start();
  await broker.port;
});

after(async () => {
  if (broker.child.exitCode === null) broker.child.kill('SIGTERM');
  await broker.exited;
  rmSync(broker.dataDir, { recursive: true, force: true });
});

test('GET /api/ws is a valid AsyncAPI 3.0 document', async () => {
  const doc = await getJson('/api/ws');
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(JSON.stringify(doc));
  for (const d of diagnostics) {
    const where = d.path?.join('.') ?? '';
    console.log(`asyncapi ${['error', 'warning', 'info', 'hint'][d.severity]}: ${d.code} ${where}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  assert.deepEqual(errors.map((d) => `${d.code} ${d.path?.join('.')}: ${d.message}`), []);
  assert.ok(document, 'the parser returned no document');
  assert.equal(document.version(), '3.0.0');

  // What the parser understood, not only that it did not complain.
  const addresses = document.channels().all().map((c) => c.address()).sort();
  assert.deepEqual(addresses, ['/', '/ws']);
  const names = document.messages().all().map((m) => m.name());
  for (const name of ['subscribe', 'unsubscribe', 'ping', 'auth', 'connected', 'subscribed', 'unsubscribed', 'event', 'resync', 'error', 'pong', 'authenticated']) {
    assert.ok(names.includes(name), `message ${name} is missing`);
  }
  const receive = document.operations().all().filter((o) => o.action() === 'receive');
  assert.ok(receive.length >= 1 && receive.every((o) => o.messages().all().some((m) => m.name() === 'subscribe')));
  const event = document.messages().all().find((m) => m.name() === 'event');
  const variants = event.payload().properties().event.oneOf();
  assert.equal(variants.length, 11, 'one schema per event type');
  const toolCall = variants.find((s) => s.properties().type.const() === 'tool-call');
  assert.ok(toolCall.required().includes('toolName'));
});

test('GET /api/openapi.json is a valid OpenAPI 3.1 document', async () => {
  const doc = await getJson('/api/openapi.json');
  assert.equal(doc.openapi, '3.1.0');
  // validate() checks the document against the OpenAPI 3.1 JSON Schema and
  // the rules the schema cannot express, then resolves every $ref; it throws
  // on the first problem. It mutates its argument, hence the copy.
  const api = await SwaggerParser.validate(structuredClone(doc));
  for (const p of ['/api/events', '/api/executions/{id}/events', '/api/ws', '/api/openapi.json', '/health', '/client.js']) {
    assert.ok(api.paths[p], `${p} is missing`);
  }
  // After dereferencing, the error body and the event schemas are real objects.
  const error = api.paths['/api/events'].post.responses['400'].content['application/json'].schema;
  assert.ok(error.properties.error.properties.code.enum.includes('invalid-event'));
  const body = api.paths['/api/events'].post.requestBody.content['application/json'].schema;
  assert.equal(body.oneOf[0].oneOf.length, 11);
  assert.deepEqual(api.paths['/admin/stats'].get.security, [{ bearer: [] }, { queryToken: [] }]);
});

// Negative controls: a validator that accepted anything would pass the two
// tests above; these show both catch a broken document of each kind.
test('the validators refuse a broken document', async () => {
  const asyncapi = await getJson('/api/ws');
  asyncapi.operations.rootClientMessages.messages.push({ $ref: '#/channels/root/messages/nothing' });
  const { diagnostics } = await new Parser().parse(JSON.stringify(asyncapi));
  assert.ok(diagnostics.some((d) => d.severity === DiagnosticSeverity.Error), 'a dangling $ref passed');

  const openapi = await getJson('/api/openapi.json');
  openapi.paths['/health'].get.responses['200'].content['application/json'].schema = { $ref: '#/components/schemas/Nothing' };
  await assert.rejects(SwaggerParser.validate(openapi), 'a dangling $ref passed');
  const bad = await getJson('/api/openapi.json');
  bad.paths['/health'].get.parameters = [{ name: 'x', in: 'nowhere' }];
  await assert.rejects(SwaggerParser.validate(bad), 'a parameter in: nowhere passed');
});
