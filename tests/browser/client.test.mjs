// Unit tests of /client.js: reconnect, resume and dedupe, driven through a
// fake WebSocket and a fake clock, so no server and no real time is involved.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AgentEventsClient, backoffDelay, shouldReconnect } from '../../web/client.js'
import { fakeWebSocket, fakeTimers, scriptedRandom, event, fakeHistory } from './fakes.mjs'

const WS_URL = 'ws://127.0.0.1:9/ws'
const BACKOFF = { initialDelayMs: 500, maxDelayMs: 15000, factor: 2, jitter: 0.5 }

function setup(options = {}) {
  const ws = fakeWebSocket()
  const timers = fakeTimers()
  const client = new AgentEventsClient(WS_URL, {
    WebSocket: ws.FakeSocket,
    timers,
    random: () => 0.5,
    ...BACKOFF,
    ...options,
  })
  const states = []
  client.on('state', (s) => states.push(s))
  return { ws, timers, client, states }
}

/** Subscribes and plays the broker's confirmation on the current socket. */
function subscribed(ws, client, options, replayed = 0) {
  const sub = client.subscribe(options)
  const socket = ws.last()
  if (socket.sent.length === 0) socket.accept()
  socket.message({ type: 'subscribed', ...target(options), replayed })
  return sub
}

function target(options) {
  return options.executionId ? { executionId: options.executionId } : { conversationId: options.conversationId }
}

/** Lets the client's promises run until `condition` holds (a bounded number of turns). */
async function until(condition, turns = 100) {
  for (let i = 0; i < turns && !condition(); i++) await new Promise((resolve) => setImmediate(resolve))
  assert.ok(condition(), 'condition not reached')
}

function seqsOf(sub) {
  const seqs = []
  sub.on('event', (e) => seqs.push(e.seq))
  return seqs
}

test('backoff doubles up to the cap, with jitter inside [base × (1 − jitter), base]', () => {
  const bases = [500, 1000, 2000, 4000, 8000, 15000, 15000]
  bases.forEach((base, attempt) => {
    assert.equal(backoffDelay(attempt, BACKOFF, () => 0), base)
    const low = backoffDelay(attempt, BACKOFF, () => 0.999999)
    assert.ok(low >= base * 0.5 && low < base * 0.5 + 0.01, `attempt ${attempt}: ${low}`)
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, BACKOFF, Math.random)
      assert.ok(d > base * 0.5 - 1e-9 && d <= base, `attempt ${attempt}: ${d} outside [${base / 2}, ${base}]`)
    }
  })
})

test('reconnect delays grow with jitter while the broker stays away, and reset after a success', () => {
  const randoms = [0, 0.9, 0.2, 0.5, 0.99, 0.1, 0.3]
  const { ws, timers, client, states } = setup({ random: scriptedRandom(randoms) })
  client.connect()
  const observed = []
  for (let attempt = 0; attempt < randoms.length; attempt++) {
    ws.last().drop(1006)
    const [delay] = timers.delays()
    observed.push(delay)
    const base = Math.min(500 * 2 ** attempt, 15000)
    assert.equal(delay, base * (1 - 0.5 * randoms[attempt]), `attempt ${attempt}`)
    assert.ok(delay >= base / 2 && delay <= base)
    const sockets = ws.sockets.length
    timers.advance(delay - 1)
    assert.equal(ws.sockets.length, sockets, 'no attempt before the delay is over')
    timers.advance(1)
    assert.equal(ws.sockets.length, sockets + 1, 'an attempt once the delay is over')
  }
  assert.ok(observed[4] > observed[0], 'delays grow')
  assert.equal(states.at(-1).state, 'connecting')
  ws.last().accept()
  ws.last().drop(1006)
  assert.ok(timers.delays()[0] <= 500, 'a connection that opened resets the backoff')
})

test('resumes each execution with fromSeq = the last seq delivered, and shows no event twice', () => {
  const { ws, timers, client } = setup()
  const sub = subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
  assert.deepEqual(ws.last().sentOfType('subscribe'), [{ type: 'subscribe', executionId: 'exec-1', fromSeq: 0 }])
  const seqs = seqsOf(sub)
  for (const seq of [1, 2, 3, 4, 5]) ws.last().message(event('exec-1', seq))
  ws.last().message(event('exec-1', 5)) // a duplicate on the same connection
  ws.last().drop(4000, 'slow-consumer')
  timers.advance(500)
  const second = ws.last()
  second.accept()
  assert.deepEqual(second.sentOfType('subscribe'), [{ type: 'subscribe', executionId: 'exec-1', fromSeq: 5 }])
  const infos = []
  sub.on('subscribed', (info) => infos.push(info))
  second.message({ type: 'subscribed', executionId: 'exec-1', replayed: 3 })
  // A broker replaying a little too much must still not double anything.
  for (const seq of [4, 5, 6, 7, 8]) second.message(event('exec-1', seq))
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8])
  assert.deepEqual(infos, [{ replayed: 3, fromSeq: 5, resumed: true, mayHaveMissed: false }])
  assert.equal(sub.lastSeq(), 8)
})

test('1001 and 4000–4499 reconnect; 4500–4999 do not', () => {
  for (const code of [1001, 1006, 4000, 4001, 4499]) {
    assert.equal(shouldReconnect(code), true, `${code}`)
    const { ws, timers, client } = setup()
    client.connect()
    ws.last().accept()
    ws.last().drop(code)
    assert.equal(client.state, 'reconnecting', `${code}`)
    timers.advance(500)
    assert.equal(ws.sockets.length, 2, `${code} reconnects`)
  }
  for (const code of [4500, 4503, 4999]) {
    assert.equal(shouldReconnect(code), false, `${code}`)
    const { ws, timers, client, states } = setup()
    subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
    ws.last().drop(code, 'bad-request')
    assert.equal(client.state, 'closed', `${code}`)
    assert.deepEqual(states.at(-1), { state: 'closed', attempt: 0, code, reason: 'bad-request' })
    assert.deepEqual(timers.delays(), [], `${code} leaves no timer behind`)
    timers.advance(60_000)
    assert.equal(ws.sockets.length, 1, `${code} never reconnects`)
  }
})

test('events before `subscribed` or for other targets are not delivered', () => {
  const { ws, client } = setup()
  const sub = client.subscribe({ executionId: 'exec-1', fromSeq: 0 })
  const seqs = seqsOf(sub)
  ws.last().accept()
  ws.last().message(event('exec-1', 9)) // from an earlier subscription, still in flight
  ws.last().message({ type: 'subscribed', executionId: 'exec-1', replayed: 1 })
  ws.last().message(event('exec-1', 1))
  ws.last().message(event('exec-2', 2))
  assert.deepEqual(seqs, [1])
})

test('filters are sent to the broker and applied to what arrives', () => {
  const { ws, client } = setup()
  const options = { executionId: 'exec-1', fromSeq: 0, types: ['tool-call'], agentId: 'a', department: 'story' }
  const sub = subscribed(ws, client, options)
  assert.deepEqual(ws.last().sentOfType('subscribe')[0], { type: 'subscribe', ...options })
  const typed = []
  sub.on('tool-call', (e) => typed.push(e.seq))
  const seqs = seqsOf(sub)
  // The broker routes an execution's events once per connection; another
  // subscription of this connection may bring events this one filters out.
  ws.last().message(event('exec-1', 1, 'agent-thinking', { agentId: 'a', department: 'story' }))
  ws.last().message(event('exec-1', 2, 'tool-call', { agentId: 'a', department: 'story', toolName: 't' }))
  ws.last().message(event('exec-1', 3, 'tool-call', { agentId: 'b', department: 'story', toolName: 't' }))
  assert.deepEqual(seqs, [2])
  assert.deepEqual(typed, [2])
})

test('a conversation resubscribes without fromSeq and says it may have missed events', () => {
  const { ws, timers, client } = setup()
  const sub = subscribed(ws, client, { conversationId: 'conv' })
  const seqs = seqsOf(sub)
  ws.last().message(event('exec-1', 1))
  ws.last().message(event('exec-2', 1))
  ws.last().message(event('exec-1', 1))
  assert.deepEqual(seqs, [1, 1], 'deduped per execution')
  const infos = []
  sub.on('subscribed', (info) => infos.push(info))
  ws.last().drop(1001, 'shutting-down')
  timers.advance(500)
  ws.last().accept()
  assert.deepEqual(ws.last().sentOfType('subscribe'), [{ type: 'subscribe', conversationId: 'conv' }])
  ws.last().message({ type: 'subscribed', conversationId: 'conv', replayed: 0 })
  assert.equal(infos[0].mayHaveMissed, true)
})

test('a missing pong is a dead connection: it is dropped without waiting and resumed', () => {
  const { ws, timers, client } = setup({ idleMs: 20_000, pongTimeoutMs: 10_000 })
  const sub = subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
  ws.last().message(event('exec-1', 1))
  const first = ws.last()
  timers.advance(19_999)
  assert.deepEqual(first.sentOfType('ping'), [], 'no ping while not idle')
  timers.advance(1)
  assert.deepEqual(first.sentOfType('ping'), [{ type: 'ping' }])
  first.message({ type: 'pong' })
  timers.advance(15_000)
  assert.equal(client.state, 'open', 'a pong keeps it alive')
  timers.advance(5_000) // idle again: the second ping
  assert.equal(first.sentOfType('ping').length, 2)
  timers.advance(10_000) // and no answer
  assert.notEqual(first.closedWith, null, 'the dead socket is closed')
  assert.equal(client.state, 'reconnecting')
  timers.advance(500)
  ws.last().accept()
  assert.equal(ws.last().sentOfType('subscribe')[0].fromSeq, sub.lastSeq())
})

test('unsubscribe then subscribe to the same target waits for `unsubscribed`', () => {
  const { ws, client } = setup()
  const old = subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
  old.unsubscribe()
  const fresh = client.subscribe({ executionId: 'exec-1', fromSeq: 0, types: ['tool-call'] })
  const seqs = seqsOf(fresh)
  const socket = ws.last()
  assert.equal(socket.sentOfType('subscribe').length, 1, 'not sent while the unsubscribe is unanswered')
  socket.message(event('exec-1', 7, 'tool-call', { toolName: 't' })) // the old subscription's
  socket.message({ type: 'unsubscribed', executionId: 'exec-1' })
  assert.equal(socket.sentOfType('subscribe').length, 2)
  socket.message({ type: 'subscribed', executionId: 'exec-1', replayed: 1 })
  socket.message(event('exec-1', 3, 'tool-call', { toolName: 't' }))
  assert.deepEqual(seqs, [3])
})

test('a gap in an unfiltered execution resubscribes from the last seq', () => {
  const { ws, client } = setup()
  const sub = subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
  const seqs = seqsOf(sub)
  const errors = []
  sub.on('error', (e) => errors.push(e.code))
  const socket = ws.last()
  socket.message(event('exec-1', 1))
  socket.message(event('exec-1', 3))
  assert.deepEqual(errors, ['gap'])
  assert.deepEqual(socket.sent.at(-1), { type: 'unsubscribe', executionId: 'exec-1' })
  socket.message({ type: 'unsubscribed', executionId: 'exec-1' })
  assert.deepEqual(socket.sent.at(-1), { type: 'subscribe', executionId: 'exec-1', fromSeq: 1 })
  socket.message({ type: 'subscribed', executionId: 'exec-1', replayed: 2 })
  socket.message(event('exec-1', 2))
  socket.message(event('exec-1', 3))
  assert.deepEqual(seqs, [1, 2, 3])
})

test('a resync moves the position back and tells listeners what to drop', () => {
  const { ws, client } = setup()
  const sub = subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
  const other = subscribed(ws, client, { executionId: 'exec-2', fromSeq: 0 })
  const seqs = seqsOf(sub)
  const resyncs = []
  sub.on('resync', (info) => resyncs.push(info))
  other.on('resync', (info) => resyncs.push({ other: info }))
  const socket = ws.last()
  for (const seq of [1, 2, 3, 4]) socket.message(event('exec-1', seq))
  socket.message({ type: 'resync', executionId: 'exec-1', fromSeq: 3 })
  assert.deepEqual(resyncs, [{ executionId: 'exec-1', fromSeq: 3 }], 'only its watchers hear it')
  assert.equal(sub.lastSeq(), 2)
  // The seqs from 3 are taken again, in order, not dropped as duplicates.
  socket.message(event('exec-1', 3))
  socket.message(event('exec-1', 4))
  socket.message(event('exec-1', 5))
  assert.deepEqual(seqs, [1, 2, 3, 4, 3, 4, 5])
  assert.equal(sub.lastSeq(), 5)
})

test('a refused replay is read over HTTP, then the subscription resumes from its end', async () => {
  const history = [1, 2, 3, 4, 5].map((seq) => event('exec-1', seq).event)
  const { fetch, calls } = fakeHistory(history, 2)
  const { ws, client } = setup({ fetch })
  const sub = client.subscribe({ executionId: 'exec-1', fromSeq: 0 })
  const seqs = seqsOf(sub)
  const socket = ws.last()
  socket.accept()
  socket.message({ type: 'error', code: 'replay-unavailable', message: 'too far back', executionId: 'exec-1' })
  await until(() => socket.sentOfType('subscribe').length === 2)
  assert.deepEqual(
    calls.map((u) => new URL(u).searchParams.get('afterSeq')),
    ['0', '2', '4'],
  )
  assert.equal(calls[0], 'http://127.0.0.1:9/api/executions/exec-1/events?afterSeq=0&limit=1000')
  assert.deepEqual(seqs, [1, 2, 3, 4, 5])
  assert.deepEqual(socket.sent.at(-1), { type: 'subscribe', executionId: 'exec-1', fromSeq: 5 })
  socket.message({ type: 'subscribed', executionId: 'exec-1', replayed: 1 })
  socket.message(event('exec-1', 5))
  socket.message(event('exec-1', 6))
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6])
})

test('bad subscriptions fail at the call, as the broker would refuse them', () => {
  const { client } = setup()
  assert.throws(() => client.subscribe({}), /exactly one/)
  assert.throws(() => client.subscribe({ executionId: 'a', conversationId: 'b' }), /exactly one/)
  assert.throws(() => client.subscribe({ executionId: 'bad id' }), /invalid ID/)
  assert.throws(() => client.subscribe({ conversationId: 'c', fromSeq: 1 }), /fromSeq/)
  assert.throws(() => client.subscribe({ executionId: 'e', types: ['tool_call'] }), /not an event type/)
  client.subscribe({ executionId: 'e' })
  assert.throws(() => client.subscribe({ executionId: 'e' }), /already subscribed/)
})

test('close() stops for good: no reconnect, no timers', () => {
  const { ws, timers, client } = setup()
  subscribed(ws, client, { executionId: 'exec-1', fromSeq: 0 })
  client.close()
  assert.equal(client.state, 'closed')
  assert.deepEqual(ws.last().closedWith, { code: 1000, reason: 'client closed' })
  assert.deepEqual(timers.delays(), [])
})

test('a WebSocket that cannot even be constructed is not retried', () => {
  const timers = fakeTimers()
  class Refusing {
    constructor() {
      throw new SyntaxError('invalid URL')
    }
  }
  const client = new AgentEventsClient(WS_URL, { WebSocket: Refusing, timers })
  const errors = []
  client.on('error', (e) => errors.push(e.code))
  client.connect()
  assert.equal(client.state, 'closed')
  assert.deepEqual(errors, ['bad-url'])
  assert.deepEqual(timers.delays(), [])
})

test('a token is sent first on every connection, fetched anew each time', async () => {
  const tokens = ['t1', 't2']
  const calls = []
  const token = async () => {
    calls.push(tokens[calls.length])
    return calls.at(-1)
  }
  const { ws, timers, client } = setup({ token })
  client.subscribe({ executionId: 'exec-1', fromSeq: 0 })
  ws.last().accept()
  await until(() => ws.last().sent.length === 2)
  assert.deepEqual(ws.last().sent, [
    { type: 'auth', token: 't1' },
    { type: 'subscribe', executionId: 'exec-1', fromSeq: 0 },
  ])
  ws.last().drop(4002, 'token-expired')
  assert.equal(client.state, 'reconnecting', 'token-expired reconnects')
  timers.advance(500)
  ws.last().accept()
  await until(() => ws.last().sent.length === 2)
  assert.deepEqual(ws.last().sent[0], { type: 'auth', token: 't2' }, 'a refreshed token')
  const plain = setup({ token: 'secret' })
  assert.deepEqual(await plain.client.httpHeaders(), { authorization: 'Bearer secret' })
  assert.deepEqual(await setup().client.httpHeaders(), {})
})
