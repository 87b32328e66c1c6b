// The broker's Server-Sent Events through real Node clients: the `eventsource`
// package (the EventSource of browsers, for Node), reconnecting with
// Last-Event-ID after a dropped connection and after a broker restart, and the
// AG-UI stream checked event by event with the zod schemas that the official
// `@ag-ui/core` package ships.
//
// Each test starts the broker binary (AGENT_EVENTS_BIN, set by run-tests.sh)
// on 127.0.0.1 with WS_PORT=0 and a fresh DATA_DIR, and reads its port from
// the `listening on http://127.0.0.1:PORT` line on stderr. Nothing sleeps to
// synchronise: every wait is for an event or an answer, with a timeout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EventSource } from 'eventsource';
import { EventSchemas } from '@ag-ui/core/schemas';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.AGENT_EVENTS_BIN ?? path.resolve(HERE, '../../target/debug/agent-events');
/** How long one awaited thing may take before the test fails. */
const STEP_MS = 10_000;
/** The broker's line on stderr once it listens. */
const READY = /listening on http:\/\/127\.0\.0\.1:(\d+)/;

// ------------------------------------------------------------------ the broker

class Broker {
  /** Starts the binary and resolves once it says it is listening. */
  static async start({ port = 0, dataDir, env = {}, args = [] } = {}) {
    const broker = new Broker();
    broker.dataDir = dataDir ?? mkdtempSync(path.join(tmpdir(), 'agent-events-sse-'));
    broker.ownsDataDir = dataDir === undefined;
    broker.log = [];
    broker.child = spawn(BIN, args, {
      env: {
        ...process.env,
        WS_PORT: String(port),
        BIND_ADDR: '127.0.0.1',
        DATA_DIR: broker.dataDir,
        RUST_LOG: 'info',
        REDIS_URL: '',
        MONGODB_URI: '',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    broker.exited = new Promise((resolve) => broker.child.on('exit', (code, signal) => resolve({ code, signal })));
    broker.port = await broker.#listening();
    return broker;
  }

  #listening() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "listening on" within 30 s:\n${this.output()}`)), 30_000);
      let pending = '';
      const lines = (stream) => stream.on('data', (chunk) => {
        pending += chunk;
        const parts = pending.split('\n');
        pending = parts.pop();
        for (const line of parts) {
          this.log.push(line);
          if (this.log.length > 300) this.log.shift();
          const ready = READY.exec(line);
          if (ready) {
            clearTimeout(timer);
            resolve(Number(ready[1]));
          }
        }
      });
      lines(this.child.stderr);
      lines(this.child.stdout);
      this.exited.then(({ code }) => reject(new Error(`the broker exited (${code}) before listening:\n${this.output()}`)));
    });
  }

  output() {
    return this.log.join('\n');
  }

  url(p) {
    return `http://127.0.0.1:${this.port}${p}`;
  }

  /** POSTs one event, which must be accepted; resolves with its seq. */
  async postEvent(event) {
    const response = await fetch(this.url('/api/events'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(event),
      signal: AbortSignal.timeout(STEP_MS),
    });
    const body = await response.json();
    assert.equal(response.status, 202, JSON.stringify(body));
    return body.events[0].seq;
  }

  async getJson(p) {
    const response = await fetch(this.url(p), { signal: AbortSignal.timeout(STEP_MS) });
    return { status: response.status, body: await response.json() };
  }

  /** SIGTERM (a graceful stop), and waits for the exit. */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const exit = await withTimeout(this.exited, STEP_MS, 'the broker did not exit');
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
    return exit;
  }
}

/** Runs `body` with a fresh broker, always stopped afterwards. */
async function withBroker(options, body) {
  const broker = await Broker.start(options);
  try {
    return await body(broker);
  } catch (err) {
    err.message += `\n--- broker output ---\n${broker.output()}`;
    throw err;
  } finally {
    await broker.stop();
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ events

function thinking(executionId, n, extra = {}) {
  return { type: 'agent-thinking', executionId, agentId: 'agent-1', thought: `step ${n}`, step: n, ...extra };
}

/** A run in the order an orchestrator emits it. */
function knownRun(executionId, conversationId) {
  const e = (type, fields) => ({ type, executionId, conversationId, ...fields });
  return [
    e('orchestration-start', { userPrompt: 'Create a dramatic scene', complexity: 'medium' }),
    e('department-start', { department: 'story', agentId: 'story-head', relevance: 1 }),
    e('agent-start', { agentId: 'writer-1', department: 'story' }),
    e('agent-thinking', { agentId: 'writer-1', thought: 'Consider the setting', step: 0 }),
    e('tool-call', { agentId: 'writer-1', toolName: 'search', toolCallId: 'call-1', input: { q: 'noir' } }),
    e('tool-result', { agentId: 'writer-1', toolName: 'search', toolCallId: 'call-1', output: { hits: 3 }, success: true }),
    e('quality-check', { qualityScore: 85, department: 'story', passed: true, threshold: 80 }),
    e('review-status', { department: 'story', status: 'approved', qualityScore: 90 }),
    e('agent-complete', { agentId: 'writer-1', department: 'story', success: true }),
    e('department-complete', { department: 'story', qualityScore: 85 }),
    e('orchestration-complete', { status: 'partial', result: { scenes: 1 } }),
  ];
}

const TYPES = [
  'orchestration-start', 'orchestration-complete', 'department-start', 'department-complete',
  'agent-start', 'agent-thinking', 'agent-complete', 'tool-call', 'tool-result',
  'quality-check', 'review-status',
];

// ------------------------------------------------------------------ the client

/** Messages of an EventSource as an async queue. */
class Inbox {
  constructor(source, names) {
    this.source = source;
    this.items = [];
    this.waiters = [];
    for (const name of names) {
      source.addEventListener(name, (e) => this.#push({ name, id: e.lastEventId, data: e.data }));
    }
  }

  #push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  /** The next message, or a failure after STEP_MS. */
  next() {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    const item = new Promise((resolve) => this.waiters.push(resolve));
    return withTimeout(item, STEP_MS, 'no message');
  }
}

/** Opens an EventSource and resolves once it is open (the subscription is then in force). */
async function open(url, names) {
  const source = new EventSource(url);
  const inbox = new Inbox(source, names);
  await withTimeout(new Promise((resolve) => source.addEventListener('open', resolve, { once: true })), STEP_MS, 'not open');
  return inbox;
}

/** The next server-sent `event: error` (a MessageEvent with data; connection errors have none). */
function serverError(source) {
  const error = new Promise((resolve) => {
    source.addEventListener('error', (e) => {
      if (typeof e.data === 'string') resolve(JSON.parse(e.data));
    });
  });
  return withTimeout(error, STEP_MS, 'no error event');
}

/** The source's next `open` (a reconnection succeeded). */
function nextOpen(source) {
  const opened = new Promise((resolve) => source.addEventListener('open', resolve, { once: true }));
  return withTimeout(opened, STEP_MS, 'not reopened');
}

// ------------------------------------------------------------------ tests

test('EventSource gets every event by its type, with the seq as id and the WebSocket message as data', { timeout: 60_000 }, async () => {
  await withBroker({}, async (broker) => {
    const inbox = await open(broker.url('/api/executions/node-1/stream'), TYPES);
    try {
      const posted = knownRun('node-1', 'conv-node');
      for (const e of posted) await broker.postEvent(e);
      for (const [i, e] of posted.entries()) {
        const m = await inbox.next();
        assert.equal(m.name, e.type);
        assert.equal(m.id, String(i + 1));
        const message = JSON.parse(m.data);
        assert.equal(message.type, 'event');
        assert.equal(message.executionId, 'node-1');
        assert.equal(message.event.seq, i + 1);
        assert.equal(message.event.type, e.type);
        assert.equal(message.event.conversationId, 'conv-node');
      }
    } finally {
      inbox.source.close();
    }
  });
});

/**
 * A TCP relay between the client and the broker that can cut every
 * connection, as a flaky network would. It also records each request's
 * Last-Event-ID header, to show how the client resumed.
 */
async function relay(port) {
  const sockets = new Set();
  const lastEventIds = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.once('data', (head) => {
      const header = /^last-event-id:\s*(.*?)\r$/im.exec(head.toString('latin1'));
      lastEventIds.push(header ? header[1] : null);
    });
    client.pipe(upstream).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: (p) => `http://127.0.0.1:${server.address().port}${p}`,
    lastEventIds,
    cut: () => sockets.forEach((s) => s.destroy()),
    close: () => new Promise((resolve) => { sockets.forEach((s) => s.destroy()); server.close(resolve); }),
  };
}

test('after a dropped connection EventSource resumes with Last-Event-ID: every seq once, in order, while a producer posts', { timeout: 60_000 }, async () => {
  // The producer posts thoughts flat-out: past the per-execution rate they
  // would be coalesced, and what is under test here is the resume.
  await withBroker({ env: { AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_EXECUTION: '0' } }, async (broker) => {
    const network = await relay(broker.port);
    // `?fromSeq=0` stays in the URL on every reconnection; the header must win over it.
    const inbox = await open(network.url('/api/executions/node-2/stream?fromSeq=0'), ['agent-thinking']);
    let producing = true;
    const producer = (async () => {
      for (let n = 0; producing; n += 1) await broker.postEvent(thinking('node-2', n));
    })();
    const seqs = [];
    const read = async (count) => {
      for (let i = 0; i < count; i += 1) seqs.push(Number((await inbox.next()).id));
    };
    try {
      for (let cut = 0; cut < 3; cut += 1) {
        await read(15);
        // Each cut must hit a live connection: wait until the client is back.
        const reopened = nextOpen(inbox.source);
        network.cut();
        await reopened;
      }
      await read(15);
      producing = false;
      await producer;
      const last = await broker.postEvent(thinking('node-2', 0, { metadata: { end: true } }));
      while (seqs.at(-1) !== last) await read(1);
      assert.deepEqual(seqs, Array.from({ length: last }, (_, i) => i + 1), 'every seq once, in order');
      assert.equal(network.lastEventIds[0], null, 'the first request has no Last-Event-ID');
      assert.equal(network.lastEventIds.length, 4, `one request and three reconnections: ${network.lastEventIds}`);
      assert.ok(network.lastEventIds.slice(1).every((id) => /^\d+$/.test(id)), `resumed by id: ${network.lastEventIds}`);
    } finally {
      producing = false;
      inbox.source.close();
      await network.close();
    }
  });
});

test('EventSource resumes with Last-Event-ID across a broker restart', { timeout: 90_000 }, async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'agent-events-sse-restart-'));
  try {
    const first = await Broker.start({ dataDir });
    const port = first.port;
    let inbox;
    let told;
    try {
      inbox = await open(first.url('/api/executions/node-3/stream?fromSeq=0'), ['agent-thinking']);
      told = serverError(inbox.source);
      for (let n = 1; n <= 5; n += 1) assert.equal(await first.postEvent(thinking('node-3', n)), n);
      for (let n = 1; n <= 5; n += 1) assert.equal((await inbox.next()).id, String(n));
    } finally {
      const exit = await first.stop();
      assert.equal(exit.code, 0, `a graceful stop: ${JSON.stringify(exit)}\n${first.output()}`);
    }
    assert.equal((await told).code, 'shutting-down', 'told why the stream ended');

    // The same port and data: the client, retrying meanwhile, finds it again.
    const second = await Broker.start({ dataDir, port });
    try {
      for (let n = 6; n <= 10; n += 1) assert.equal(await second.postEvent(thinking('node-3', n)), n, 'seq survives the restart');
      const ids = [];
      for (let n = 6; n <= 10; n += 1) ids.push((await inbox.next()).id);
      assert.deepEqual(ids, ['6', '7', '8', '9', '10']);
    } finally {
      inbox.source.close();
      await second.stop();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/** Reads an AG-UI stream until the run ends; every event must pass @ag-ui/core's schema. */
async function agUiRun(url) {
  const inbox = await open(url, ['message']);
  const events = [];
  try {
    for (;;) {
      const m = await inbox.next();
      const parsed = EventSchemas.safeParse(JSON.parse(m.data));
      assert.ok(parsed.success, `id ${m.id}: ${m.data}\n${parsed.error}`);
      events.push({ id: m.id, event: parsed.data });
      if (['RUN_FINISHED', 'RUN_ERROR'].includes(parsed.data.type)) return events;
    }
  } finally {
    inbox.source.close();
  }
}

/** The rules the AG-UI protocol sets on the order of events, checked on one run. */
function assertWellFormedRun(events) {
  const types = events.map((e) => e.event.type);
  assert.equal(types[0], 'RUN_STARTED', types.join(' '));
  const open = { steps: new Set(), calls: new Set(), reasoning: new Set() };
  const called = new Set();
  for (const { id, event } of events.slice(1)) {
    const where = `${id} ${event.type}`;
    switch (event.type) {
      case 'STEP_STARTED': open.steps.add(event.stepName); break;
      case 'STEP_FINISHED': assert.ok(open.steps.delete(event.stepName), where); break;
      case 'TOOL_CALL_START': open.calls.add(event.toolCallId); called.add(event.toolCallId); break;
      case 'TOOL_CALL_ARGS': assert.ok(open.calls.has(event.toolCallId), where); JSON.parse(event.delta); break;
      case 'TOOL_CALL_END': assert.ok(open.calls.delete(event.toolCallId), where); break;
      case 'TOOL_CALL_RESULT': assert.ok(called.has(event.toolCallId), `${where}: a result for a call made`); break;
      case 'REASONING_START': open.reasoning.add(event.messageId); break;
      case 'REASONING_END': assert.ok(open.reasoning.delete(event.messageId), where); break;
      default: break;
    }
  }
  assert.equal(open.calls.size + open.reasoning.size, 0, 'every tool call and thought closed');
}

test('the AG-UI stream of a known run passes the @ag-ui/core schemas, in the documented order', { timeout: 60_000 }, async () => {
  await withBroker({}, async (broker) => {
    for (const e of knownRun('node-4', 'conv-node')) await broker.postEvent(e);
    const events = await agUiRun(broker.url('/api/executions/node-4/ag-ui'));
    assert.deepEqual(events.map((e) => `${e.id} ${e.event.type}`), [
      '1.0 RUN_STARTED', '2.0 STEP_STARTED', '3.0 CUSTOM',
      '4.0 REASONING_START', '4.1 REASONING_MESSAGE_START', '4.2 REASONING_MESSAGE_CONTENT',
      '4.3 REASONING_MESSAGE_END', '4.4 REASONING_END',
      '5.0 TOOL_CALL_START', '5.1 TOOL_CALL_ARGS', '5.2 TOOL_CALL_END', '6.0 TOOL_CALL_RESULT',
      '7.0 CUSTOM', '8.0 CUSTOM', '9.0 CUSTOM', '10.0 STEP_FINISHED', '11.0 RUN_FINISHED',
    ]);
    assertWellFormedRun(events);
    const [started] = events;
    assert.equal(started.event.threadId, 'conv-node');
    assert.equal(started.event.runId, 'node-4');
    assert.equal(events.at(-1).event.rawEvent.status, 'partial', 'a partial run keeps its status in rawEvent');

    await broker.postEvent({ type: 'orchestration-start', executionId: 'node-5' });
    await broker.postEvent({ type: 'orchestration-complete', executionId: 'node-5', status: 'failed', result: 'no budget' });
    const failed = await agUiRun(broker.url('/api/executions/node-5/ag-ui'));
    assert.deepEqual(failed.map((e) => e.event.type), ['RUN_STARTED', 'RUN_ERROR']);
    assert.equal(failed[1].event.message, 'no budget');
  });
});

test("the AG-UI streams of the demo's simulated runs pass the @ag-ui/core schemas", { timeout: 90_000 }, async () => {
  const env = { AGENT_EVENTS_DEMO_PACE_MS: '2' };
  await withBroker({ env, args: ['--demo'] }, async (broker) => {
    // Wait (polling the list, bounded) for two runs of the demo to finish.
    const deadline = Date.now() + 60_000;
    let finished = [];
    while (finished.length < 2) {
      assert.ok(Date.now() < deadline, 'the demo finished no two runs within 60 s');
      const { body } = await broker.getJson('/api/executions?conversationId=demo');
      finished = body.executions.filter((e) => e.status !== 'running');
      if (finished.length < 2) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const execution of finished.slice(0, 2)) {
      const events = await agUiRun(broker.url(`/api/executions/${execution.executionId}/ag-ui`));
      assertWellFormedRun(events);
      assert.equal(events[0].event.threadId, 'demo');
      assert.equal(events.at(-1).event.type, execution.status === 'failed' ? 'RUN_ERROR' : 'RUN_FINISHED');
    }
  });
});
