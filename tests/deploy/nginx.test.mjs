// The shipped nginx configuration (deploy/nginx/agent-events.conf) in front of
// a real broker with auth on: the wscat subscribe-and-receive flow of docs/getting-started.md, a
// `fromSeq` resume and a Server-Sent Events stream, all through nginx.
//
// run-tests.sh installs nginx when it is missing and passes NGINX_BIN. The
// broker listens on a free port of 127.0.0.1 with a fresh DATA_DIR; nginx is
// a child process (daemon off) with its own prefix, pid file and logs in a
// temporary directory, on another free port. Only the `listen` and `server`
// lines of the shipped file are rewritten. Every wait is for a message or an
// answer, with a deadline; nothing sleeps.

import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { WebSocket } from 'ws'
import { BIN, REPO, freePort, startBroker, poll } from '../browser/broker.mjs'

const NGINX = process.env.NGINX_BIN ?? 'nginx'
const SHIPPED = path.join(REPO, 'deploy/nginx/agent-events.conf')
const STEP_MS = 10_000
const SECRET = 'deploy-test-secret-0123456789-abcdefghij'

let broker
let nginx
let dataDir
let nginxDir
let base
let wsBase
const tokens = {}

/** The shipped file with its listen and upstream lines pointed at the test's ports. */
export function renderConfig(text, { listen, upstream }) {
  let listens = 0
  let servers = 0
  const rendered = text
    .replace(/^(\s*)listen 80;$/m, (_, indent) => {
      listens++
      return `${indent}listen 127.0.0.1:${listen};`
    })
    .replace(/^(\s*)server 127\.0\.0\.1:3001;$/m, (_, indent) => {
      servers++
      return `${indent}server ${upstream};`
    })
  assert.equal(listens, 1, 'deploy/nginx/agent-events.conf has no `listen 80;` line to rewrite')
  assert.equal(servers, 1, 'deploy/nginx/agent-events.conf has no `server 127.0.0.1:3001;` line to rewrite')
  return rendered
}

function mint(...args) {
  return execFileSync(BIN, ['token', ...args], {
    env: { ...process.env, AGENT_EVENTS_AUTH_HMAC_SECRET: SECRET },
    encoding: 'utf8',
  }).trim()
}

/** A WebSocket client that queues every message, so none is missed between awaits. */
class Client {
  static open(url, token) {
    const client = new Client()
    client.ws = new WebSocket(url, ['agent-events', `bearer.${token}`])
    client.queue = []
    client.waiters = []
    client.ws.on('message', (data) => {
      const message = JSON.parse(data.toString())
      const waiter = client.waiters.shift()
      if (waiter) waiter(message)
      else client.queue.push(message)
    })
    client.closed = new Promise((resolve) => client.ws.once('close', (code) => resolve(code)))
    return new Promise((resolve, reject) => {
      client.ws.once('open', () => resolve(client))
      client.ws.once('error', reject)
    })
  }

  next(what = 'a message') {
    if (this.queue.length) return Promise.resolve(this.queue.shift())
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${STEP_MS} ms`)), STEP_MS)
      this.waiters.push((message) => {
        clearTimeout(timer)
        resolve(message)
      })
    })
  }

  send(message) {
    this.ws.send(JSON.stringify(message))
  }

  async close() {
    this.ws.close()
    await this.closed
  }
}

async function post(body, token = tokens.producer) {
  const response = await fetch(`${base}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_MS),
  })
  return { status: response.status, body: await response.json() }
}

/** The example event of docs/protocol.md, with the department changed per step so each is recognisable. */
function seedEvent(department) {
  return {
    type: 'department-start',
    executionId: 'exec-123',
    department,
    departmentName: 'Story Department',
    agentId: 'story-head-001',
    relevance: 1.0,
    timestamp: '2025-10-01T12:00:00Z',
  }
}

before(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'agent-events-deploy-data-'))
  nginxDir = mkdtempSync(path.join(tmpdir(), 'agent-events-deploy-nginx-'))
  // nginx's workers may run as another user: they must reach the prefix.
  chmodSync(nginxDir, 0o755)
  broker = await startBroker({
    port: 0,
    dataDir,
    demo: false,
    env: { AGENT_EVENTS_AUTH_HMAC_SECRET: SECRET, REDIS_URL: '', MONGODB_URI: '' },
  })
  tokens.subscriber = mint('--role', 'subscriber', '--executions', 'exec-123')
  tokens.producer = mint('--role', 'producer')

  const listen = await freePort()
  const site = renderConfig(readFileSync(SHIPPED, 'utf8'), { listen, upstream: `127.0.0.1:${broker.port}` })
  writeFileSync(path.join(nginxDir, 'agent-events.conf'), site)
  writeFileSync(
    path.join(nginxDir, 'nginx.conf'),
    [
      'worker_processes 1;',
      `error_log ${nginxDir}/error.log info;`,
      'events { worker_connections 256; }',
      'http {',
      `  access_log ${nginxDir}/access.log;`,
      `  client_body_temp_path ${nginxDir}/client_body;`,
      `  proxy_temp_path ${nginxDir}/proxy;`,
      `  fastcgi_temp_path ${nginxDir}/fastcgi;`,
      `  uwsgi_temp_path ${nginxDir}/uwsgi;`,
      `  scgi_temp_path ${nginxDir}/scgi;`,
      `  include ${nginxDir}/agent-events.conf;`,
      '}',
      '',
    ].join('\n'),
  )
  execFileSync(NGINX, ['-t', '-p', nginxDir, '-c', `${nginxDir}/nginx.conf`, '-g', `pid ${nginxDir}/nginx.pid;`], {
    stdio: 'pipe',
  })
  nginx = spawn(NGINX, ['-p', nginxDir, '-c', `${nginxDir}/nginx.conf`, '-g', `daemon off; pid ${nginxDir}/nginx.pid;`], {
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  nginx.exited = new Promise((resolve) => nginx.once('exit', (code, signal) => resolve({ code, signal })))
  base = `http://127.0.0.1:${listen}`
  wsBase = `ws://127.0.0.1:${listen}`
  // Ready when /health answers through nginx (a question, not a pause).
  await poll(
    async () => {
      if (nginx.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(`${nginxDir}/error.log`, 'utf8')}`)
      try {
        const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(1000) })
        return response.status === 200
      } catch {
        return false
      }
    },
    { timeoutMs: STEP_MS, what: 'nginx to answer /health' },
  )
})

after(async () => {
  if (nginx && nginx.exitCode === null && nginx.signalCode === null) {
    nginx.kill('SIGQUIT')
    await nginx.exited
  }
  if (broker) await broker.kill()
  if (process.env.KEEP_NGINX_DIR) console.log(`nginx files kept in ${nginxDir}`)
  else if (nginxDir) rmSync(nginxDir, { recursive: true, force: true })
  if (dataDir) rmSync(dataDir, { recursive: true, force: true })
})

test('the proxy timeouts outlast the broker heartbeat timeout', () => {
  const defaults = readFileSync(path.join(REPO, 'config/default.toml'), 'utf8')
  const clientTimeoutMs = Number(/^client_timeout_ms = (\d+)$/m.exec(defaults)[1])
  const heartbeatMs = Number(/^heartbeat_interval_ms = (\d+)$/m.exec(defaults)[1])
  const conf = readFileSync(SHIPPED, 'utf8')
  const timeouts = [...conf.matchAll(/^\s*proxy_read_timeout (\d+)s;/gm)].map((m) => Number(m[1]) * 1000)
  assert.ok(timeouts.length >= 2, 'a proxy_read_timeout for the WebSocket and for SSE')
  for (const timeout of timeouts) {
    assert.ok(timeout > clientTimeoutMs, `proxy_read_timeout ${timeout} ms must exceed client_timeout_ms ${clientTimeoutMs}`)
    assert.ok(timeout > heartbeatMs, `proxy_read_timeout ${timeout} ms must exceed heartbeat_interval_ms ${heartbeatMs}`)
  }
  assert.match(conf, /proxy_set_header Upgrade \$http_upgrade;/)
  assert.match(conf, /proxy_buffering off;/)
})

test('auth is enforced through nginx', async () => {
  const refused = await post(seedEvent('story'), 'not-a-token')
  assert.equal(refused.status, 401, JSON.stringify(refused.body))
  assert.equal(refused.body.error.code, 'unauthorized')
})

test("subscribe and receive, a fromSeq resume and SSE, through nginx", async (t) => {
  await t.test('subscribe, then receive an event posted over HTTP', async () => {
    const client = await Client.open(`${wsBase}/`, tokens.subscriber)
    assert.equal((await client.next('connected')).type, 'connected')
    client.send({ type: 'subscribe', executionId: 'exec-123' })
    assert.deepEqual(await client.next('subscribed'), { type: 'subscribed', executionId: 'exec-123', replayed: 0 })
    const accepted = await post(seedEvent('story'))
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body))
    assert.deepEqual(accepted.body, { accepted: 1, events: [{ executionId: 'exec-123', seq: 1 }] })
    const message = await client.next('the event')
    assert.equal(message.type, 'event')
    assert.equal(message.executionId, 'exec-123')
    assert.deepEqual(message.event, {
      ...seedEvent('story'),
      relevance: 1,
      timestamp: '2025-10-01T12:00:00.000Z',
      seq: 1,
    })
    await client.close()
  })

  await t.test('reconnect with fromSeq: exactly the rest, then live', async () => {
    for (const department of ['art', 'sound']) {
      const accepted = await post(seedEvent(department))
      assert.equal(accepted.status, 202, JSON.stringify(accepted.body))
    }
    const client = await Client.open(`${wsBase}/ws`, tokens.subscriber)
    assert.equal((await client.next('connected')).type, 'connected')
    client.send({ type: 'subscribe', executionId: 'exec-123', fromSeq: 1 })
    assert.deepEqual(await client.next('subscribed'), { type: 'subscribed', executionId: 'exec-123', replayed: 2 })
    const replayed = [await client.next('seq 2'), await client.next('seq 3')]
    assert.deepEqual(
      replayed.map((m) => [m.event.seq, m.event.department]),
      [
        [2, 'art'],
        [3, 'sound'],
      ],
    )
    const accepted = await post(seedEvent('music'))
    assert.deepEqual(accepted.body.events, [{ executionId: 'exec-123', seq: 4 }])
    const live = await client.next('seq 4')
    assert.deepEqual([live.event.seq, live.event.department], [4, 'music'])
    client.send({ type: 'ping' })
    // Nothing doubled: the next message is the pong, not a repeat.
    assert.deepEqual(await client.next('pong'), { type: 'pong' })
    await client.close()
  })

  await t.test('SSE through nginx arrives unbuffered', async () => {
    const controller = new AbortController()
    const response = await fetch(`${base}/api/executions/exec-123/stream`, {
      headers: { authorization: `Bearer ${tokens.subscriber}`, 'last-event-id': '3' },
      signal: controller.signal,
    })
    assert.equal(response.status, 200)
    assert.match(response.headers.get('content-type'), /^text\/event-stream/)
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    let text = ''
    /** Reads until `pattern` appears; a buffering proxy would hold these bytes and miss the deadline. */
    const readUntil = async (pattern, what) => {
      const deadline = Date.now() + STEP_MS
      while (!pattern.test(text)) {
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`no ${what} within ${STEP_MS} ms; got:\n${text}`)
        let timer
        const chunk = await Promise.race([
          reader.read(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no ${what} within ${STEP_MS} ms; got:\n${text}`)), left)
          }),
        ])
        clearTimeout(timer)
        if (chunk.done) throw new Error(`the stream ended before ${what}:\n${text}`)
        text += decoder.decode(chunk.value, { stream: true })
      }
    }
    await readUntil(/id: 4\nevent: department-start\ndata: .*"seq":4/, 'the replayed seq 4')
    assert.doesNotMatch(text, /id: [123]\n/, 'Last-Event-ID 3: nothing at or before seq 3')
    const accepted = await post(seedEvent('lighting'))
    assert.deepEqual(accepted.body.events, [{ executionId: 'exec-123', seq: 5 }])
    await readUntil(/id: 5\nevent: department-start\ndata: .*"department":"lighting"/, 'the live seq 5')
    controller.abort()
  })

  await t.test('nginx logged the upgrade and the POSTs it proxied', async () => {
    const log = readFileSync(path.join(nginxDir, 'access.log'), 'utf8')
    assert.match(log, /"GET \/ HTTP\/1\.1" 101 /, 'the WebSocket upgrade went through nginx')
    assert.match(log, /"POST \/api\/events HTTP\/1\.1" 202 /)
  })
})
