// Starts and kills the real broker binary for the end-to-end test, and talks
// to its HTTP API. Only 127.0.0.1; every wait has a deadline.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import net from 'node:net'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))

/** The workspace root. */
export const REPO = resolve(HERE, '../..')

/** The binary `cargo test` built, unless TEST_BROKER_BIN names another. */
export const BIN = process.env.TEST_BROKER_BIN ?? resolve(REPO, 'target/debug/agent-events')

/** How long the broker may take to say it listens. */
const STARTUP_MS = 30_000

/** The line the broker writes to stderr once it listens. */
const READY = /listening on http:\/\/127\.0\.0\.1:(\d+)/

/** Lines of broker output kept for a failure message. */
const KEEP_LINES = 300

/**
 * Starts `agent-events --demo` (or without the demo, for a test that needs
 * only its own events) and resolves once it listens.
 * @param {{port: number, dataDir: string, paceMs?: number, demo?: boolean, env?: Record<string, string>}} options
 *   port 0 picks a free one; `env` adds settings (`AGENT_EVENTS_…`)
 */
export function startBroker({ port, dataDir, paceMs = 20, demo = true, env = {} }) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`cargo build\` first`)
  const child = spawn(BIN, demo ? ['--demo'] : [], {
    cwd: REPO,
    env: {
      ...process.env,
      WS_PORT: String(port),
      BIND_ADDR: '127.0.0.1',
      DATA_DIR: dataDir,
      AGENT_EVENTS_DEMO_PACE_MS: String(paceMs),
      RUST_LOG: 'info',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  const lines = []
  const exited = new Promise((done) => child.once('exit', (code, signal) => done({ code, signal })))
  const ready = new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`no "listening" line within ${STARTUP_MS} ms:\n${lines.join('\n')}`)), STARTUP_MS)
    let partial = ''
    child.stderr.on('data', (chunk) => {
      const text = partial + chunk
      const parts = text.split('\n')
      partial = parts.pop()
      for (const line of parts) {
        lines.push(line)
        if (lines.length > KEEP_LINES) lines.shift()
        const match = READY.exec(line)
        if (match) {
          clearTimeout(timer)
          done(Number(match[1]))
        }
      }
    })
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      fail(new Error(`the broker exited (${code ?? signal}) before listening:\n${lines.join('\n')}`))
    })
  })
  return ready.then((boundPort) => ({
    port: boundPort,
    base: `http://127.0.0.1:${boundPort}`,
    output: () => lines.join('\n'),
    /** SIGKILL, as a crash would: no close frames, nothing flushed. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      return exited
    },
  }))
}

/** GET or POST JSON; throws with the body on a non-2xx answer. */
export async function api(base, path, body) {
  const init = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
  const response = await fetch(`${base}${path}`, init)
  const text = await response.text()
  if (!response.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${response.status} ${text}`)
  return JSON.parse(text)
}

/** Every stored event of an execution, following `nextAfterSeq`. */
export async function storedEvents(base, executionId) {
  const events = []
  let after = 0
  for (;;) {
    const page = await api(base, `/api/executions/${encodeURIComponent(executionId)}/events?afterSeq=${after}&limit=1000`)
    events.push(...page.events)
    if (page.nextAfterSeq === null) return events
    after = page.nextAfterSeq
  }
}

/**
 * Retries `check` until it returns a truthy value or `timeoutMs` passes: for
 * state the test can only observe by asking (the store), never for timing.
 */
export async function poll(check, { timeoutMs = 10_000, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((done) => setTimeout(done, 50))
  }
}

/** A port of 127.0.0.1 nobody listens on right now, for a server that must be given a number (nginx). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}
