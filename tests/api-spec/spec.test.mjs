// The broker's API reference, checked by the reference validators: the
// AsyncAPI 3.0 document of GET /api/ws with @asyncapi/parser (the parser of
// the AsyncAPI tools, with its Spectral ruleset), and the OpenAPI 3.1
// document of GET /api/openapi.json with @apidevtools/swagger-parser. The
// documents are fetched from the running binary (started on 127.0.0.1 with
// WS_PORT=0), not from a file: what is validated is what clients get. Then
// the broker's real answers are checked against the documented schemas with
// Ajv, and events built from the schemas alone must be accepted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import SwaggerParser from '@apidevtools/swagger-parser';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

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

async function request(method, p, body) {
  const port = await broker.port;
  const response = await fetch(`http://127.0.0.1:${port}${p}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_MS),
  });
  return { status: response.status, body: await response.json() };
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

/** A value the schema accepts, as small as it gets: only required fields. */
function sample(schema, { full = false } = {}) {
  if (schema.const !== undefined) return schema.const;
  if (schema.enum) return schema.enum[0];
  if (schema.oneOf) return sample(schema.oneOf[0], { full });
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'object': {
      const names = full ? Object.keys(schema.properties ?? {}) : (schema.required ?? []);
      return Object.fromEntries(names.map((n) => [n, sample(schema.properties[n], { full })]));
    }
    case 'array': return schema.items ? [sample(schema.items, { full })] : [];
    case 'string': return schema.format === 'date-time' ? new Date().toISOString() : 'x';
    case 'integer': case 'number': return schema.minimum ?? 1;
    case 'boolean': return true;
    default: return { any: 'json' };
  }
}

test("the broker accepts events built from the schemas, and its answers match theirs", async () => {
  const api = await SwaggerParser.dereference(await getJson('/api/openapi.json'));
  const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
  addFormats(ajv);
  const check = (schema, value, what) => {
    const validate = ajv.compile(schema);
    assert.ok(validate(value), `${what}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(value)}`);
  };
  const ingest = api.paths['/api/events'].post;
  const newEvents = ingest.requestBody.content['application/json'].schema.oneOf[0].oneOf;
  assert.equal(newEvents.length, 11);
  const accepted = ingest.responses['202'].content['application/json'].schema;
  const error = ingest.responses['400'].content['application/json'].schema;
  for (const [i, schema] of newEvents.entries()) {
    for (const full of [false, true]) {
      const event = sample(schema, { full });
      event.executionId = `exec-${i}`;
      check(schema, event, 'the sample');
      const { status, body } = await request('POST', '/api/events', event);
      assert.equal(status, 202, `${event.type} (${full ? 'every field' : 'required fields'}): ${JSON.stringify(body)}`);
      check(accepted, body, 'POST /api/events 202');
    }
    // One required field fewer is refused, in the documented error shape.
    for (const field of schema.required.filter((f) => f !== 'executionId')) {
      const event = { ...sample(schema), executionId: `exec-${i}` };
      delete event[field];
      const { status, body } = await request('POST', '/api/events', event);
      assert.equal(status, 400, `${schema.properties.type.const} without ${field} was accepted`);
      check(error, body, 'POST /api/events 400');
    }
  }

  const answers = [
    ['/api/executions/exec-0/events', '200'],
    ['/api/executions/exec-10/stats', '200'],
    ['/api/executions?limit=2', '200'],
    ['/api/analytics', '200'],
    ['/health', '200'],
    ['/api/executions/no-such/stats', '404'],
    ['/api/executions/exec-0/events?types=nope', '400'],
  ];
  for (const [uri, status] of answers) {
    const route = uri.split('?')[0].replace(/^\/api\/executions\/[^/]+/, '/api/executions/{id}');
    const documented = api.paths[route].get.responses[status].content['application/json'].schema;
    const answer = await request('GET', uri);
    assert.equal(String(answer.status), status, `${uri}: ${JSON.stringify(answer.body)}`);
    check(documented, answer.body, `GET ${uri}`);
  }
  // Stored events passed the OpenAPI schema above (`events` of the page);
  // the AsyncAPI document's `event` message carries the very same schemas.
  const [rawAsync, rawOpen] = [await getJson('/api/ws'), await getJson('/api/openapi.json')];
  for (const name of ['AgentEvent', 'ToolCall', 'ReviewStatus', 'ErrorCode', 'EventType']) {
    assert.deepEqual(rawAsync.components.schemas[name], rawOpen.components.schemas[name], name);
  }
  const { body } = await request('GET', '/api/executions/exec-6/events');
  assert.equal(body.events.length, 2, 'both samples of the 7th type were stored');
});

test('a keyed retry, a reused key and a malformed key answer as documented', async () => {
  const api = await SwaggerParser.dereference(await getJson('/api/openapi.json'));
  const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
  addFormats(ajv);
  const ingest = api.paths['/api/events'].post;
  const header = ingest.parameters.find((p) => p.name === 'Idempotency-Key');
  assert.equal(header?.in, 'header', 'the Idempotency-Key header is documented');
  const validKey = ajv.compile(header.schema);
  assert.ok(validKey('batch-1') && !validKey('with space') && !validKey('') && !validKey('k'.repeat(129)));
  const port = await broker.port;
  const post = async (key, body) => {
    const response = await fetch(`http://127.0.0.1:${port}/api/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(STEP_MS),
    });
    return { status: response.status, replayed: response.headers.get('idempotent-replayed'), body: await response.json() };
  };
  const event = { type: 'agent-start', executionId: 'exec-keyed', agentId: 'a-1' };
  const first = await post('spec-key', event);
  const retry = await post('spec-key', event);
  assert.equal(first.status, 202);
  assert.deepEqual([retry.status, retry.replayed, retry.body], [202, 'true', first.body]);
  assert.deepEqual(Object.keys(ingest.responses['202'].headers), ['Idempotent-Replayed']);
  const accepted = ajv.compile(ingest.responses['202'].content['application/json'].schema);
  assert.ok(accepted(retry.body), JSON.stringify(accepted.errors));
  for (const [status, key, body] of [['422', 'spec-key', { ...event, agentId: 'a-2' }], ['400', 'with space', event]]) {
    const answer = await post(key, body);
    assert.equal(String(answer.status), status, JSON.stringify(answer.body));
    const error = ajv.compile(ingest.responses[status].content['application/json'].schema);
    assert.ok(error(answer.body), JSON.stringify(error.errors));
  }
});
