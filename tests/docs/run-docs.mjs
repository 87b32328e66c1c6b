// Runs every example of docs/*.md against real processes, page by page, in
// the order a reader would: the docs are the test script.
//
// A fenced block says what it is in its info string (after the language):
//
//   ```sh test              run in bash; `# => TEXT` lines are output the block
//                           must print (a whole line; `…` matches anything);
//                           with `stop=NAME`, after stopping that server (Ctrl-C)
//   ```sh server[=NAME]     start in the background and wait until it says it
//                           listens (the broker, redis-server), or with
//                           `ready=URL` until URL answers 200 (nginx); a later
//                           block with the same NAME stops this one first (Ctrl-C)
//   ```text wscat           a wscat session: `$ wscat -c URL [-s P] [-H H]`,
//                           `> message` sent, `< message` expected in order
//                           (`…` matches anything); the page goes on once the
//                           session has sent every message and got the answer
//                           to the last, and its remaining messages must arrive
//                           before the page ends
//   ```javascript browser   a browser-console snippet (or ```html browser: a page's
//                           <script type="module">, its http imports fetched), run in Node with `ws` as
//                           WebSocket and `eventsource` as EventSource (relative
//                           URLs against the page's broker); console.log output
//                           must show `subscribed` (or `ready=TEXT`) before the
//                           page goes on, and an `event` (or `until=TEXT`)
//                           before it ends
//   ```sh stream=NAME       a long-lived reader (`curl -N` of an SSE route): started in
//                           the background; the page goes on once it printed
//                           `retry:` (the stream began), and it is stopped at the end
//   ```jsx browser render=NAME props=JSON until=TEXT
//                           a React module: JSX compiled by esbuild, `./client.js`
//                           fetched from the broker, component NAME rendered with
//                           react-test-renderer; its rendered tree must come to
//                           contain TEXT before the page ends
//   ```text output          what the block before printed (each line in order; `…`)
//   ```text output=NAME     what stream NAME printed, waited for (each line in order; `…`)
//   ```text usage           `agent-events --help`, exactly
//   ```toml file=NAME       written to NAME in the page's directory
//   ```rust copied=PATH     must appear verbatim in PATH, a test that runs it
//   ```sh operator          changes the machine (useradd, systemctl, /etc): not
//                           run here; tests/deploy runs what it installs
//
// A block without one of these fails the run, so no example goes untested.
//
// Each page runs in a fresh temporary directory (the `./data` of its
// commands, with a copy of deploy/ as in a checkout) with its own free ports: the examples' 3001, 3002, 6379 and 8080
// are replaced by them, and WS_PORT is set to the first, so `cargo run
// --release -- …` (a shim runs the binary cargo test built) listens where the
// examples look. Variables a block exports or assigns are seen by the next
// blocks, as in one terminal. Every wait has a deadline; nothing sleeps.

import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { WebSocket } from 'ws'
import { freePort } from '../browser/broker.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const REPO = path.resolve(HERE, '../..')
const BIN = process.env.TEST_BROKER_BIN ?? path.join(REPO, 'target/debug/agent-events')
const STEP_MS = 20_000
const READY = /listening on http:\/\/|Ready to accept connections/
/** Example ports, and the placeholders the runner gives each page. */
const PORTS = ['3001', '3002', '6379', '8080']

const only = process.argv.slice(2)

// ------------------------------------------------------------------ parsing

/** The fenced blocks of a Markdown page: language, markers, text, line. */
export function blocks(markdown) {
  const found = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*(.*)$/.exec(lines[i])
    if (!open) continue
    const [, indent, lang, rest] = open
    const body = []
    let j = i + 1
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) {
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j])
      j++
    }
    const markers = {}
    for (const word of rest.split(/\s+/).filter(Boolean)) {
      // Values may not hold spaces: write them as %20.
      const [key, ...value] = word.split('=')
      markers[key] = value.length ? decodeURIComponent(value.join('=')) : true
    }
    found.push({ lang, markers, text: body.join('\n') + '\n', line: i + 1 })
    i = j
  }
  return found
}

/** A line pattern: `…` matches anything, the rest literally. */
function pattern(text) {
  const escaped = text
    .split('…')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*')
  return new RegExp(`^${escaped}$`)
}

/** Whether `actual` matches the expected JSON, where strings with `…` are patterns and `"…"` is any value. */
function jsonMatches(expected, actual) {
  if (expected === '…') return true
  if (typeof expected === 'string') {
    return typeof actual === 'string' && (expected.includes('…') ? pattern(expected).test(actual) : expected === actual)
  }
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => jsonMatches(e, actual[i]))
  }
  if (expected && typeof expected === 'object') {
    if (!actual || typeof actual !== 'object' || Array.isArray(actual)) return false
    const keys = Object.keys(expected)
    return keys.length === Object.keys(actual).length && keys.every((k) => k in actual && jsonMatches(expected[k], actual[k]))
  }
  return expected === actual
}

function messageMatches(expectedText, raw) {
  try {
    // A bare `…` as a value (`"uptimeSecs":…`) is any value, like `"…"`.
    const expected = JSON.parse(expectedText.replace(/([:,[]\s*)…(?=\s*[,}\]])/g, '$1"…"'))
    if (jsonMatches(expected, JSON.parse(raw))) return true
  } catch {
    // not JSON on one side: compare as text
  }
  // `[…]` and other elisions inside the text: `…` matches any characters.
  return pattern(expectedText).test(raw)
}

// ------------------------------------------------------------------ helpers

function deadline(promise, what, ms = STEP_MS) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** Runs a bash script to its end; resolves with its status and output. */
function bash(script, { cwd, env }) {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', script], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_MS * 3)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code: code ?? signal, stdout, stderr })
    })
  })
}

// ------------------------------------------------------------------ a page

class Page {
  constructor(name) {
    this.name = name
    this.servers = new Map()
    this.sessions = []
    this.lastOutput = null
    this.counts = { run: 0, operator: 0 }
    this.cleanups = []
  }

  async setUp() {
    this.dir = mkdtempSync(path.join(tmpdir(), `agent-events-docs-${this.name.replace(/\W/g, '-')}-`))
    chmodSync(this.dir, 0o755)
    this.bin = path.join(this.dir, '.bin')
    mkdirSync(this.bin)
    // `cargo run --release -- ARGS` in an example runs the binary under test.
    writeFileSync(
      path.join(this.bin, 'cargo'),
      `#!/bin/sh\nif [ "$1" = run ] && [ "$2" = --release ] && [ "$3" = -- ]; then shift 3; exec "${BIN}" "$@"; fi\n` +
        `if [ "$1" = run ] && [ "$2" = --release ] && [ "$#" = 2 ]; then exec "${BIN}"; fi\n` +
        `echo "docs runner: only \\"cargo run --release -- …\\" runs in examples, not: cargo $*" >&2; exit 97\n`,
    )
    chmodSync(path.join(this.bin, 'cargo'), 0o755)
    this.ports = {}
    for (const port of PORTS) this.ports[port] = String(await freePort())
    // Examples run from a checkout: deploy/ is there, with the example ports.
    for (const dir of ['deploy', 'deploy/nginx']) mkdirSync(path.join(this.dir, dir), { recursive: true })
    for (const file of ['deploy/agent-events.service', 'deploy/nginx/agent-events.conf']) {
      writeFileSync(path.join(this.dir, file), this.localize(readFileSync(path.join(REPO, file), 'utf8')))
    }
    this.state = path.join(this.dir, '.state.env')
    writeFileSync(this.state, '')
    this.env = {
      ...process.env,
      PATH: `${this.bin}:${process.env.PATH}:/usr/sbin:/sbin`,
      WS_PORT: this.ports['3001'],
      BIND_ADDR: '127.0.0.1',
      REDIS_URL: '',
      MONGODB_URI: '',
      RUST_LOG: 'info',
      DOCS_STATE: this.state,
    }
    delete this.env.AGENT_EVENTS_AUTH_HMAC_SECRET
  }

  /** The example's text with its ports replaced by this page's. */
  localize(text) {
    return text.replace(new RegExp(`\\b(${PORTS.join('|')})\\b`, 'g'), (port) => this.ports[port])
  }

  where(block) {
    return `docs/${this.name}:${block.line}`
  }

  async run(block) {
    const m = block.markers
    const text = this.localize(block.text)
    if (m.operator) {
      this.counts.operator++
      return
    }
    this.counts.run++
    if (m.test) {
      if (typeof m.stop === 'string') {
        await deadline(Promise.all(this.sessions), `the sessions open before ${this.where(block)}`)
        if (!this.servers.has(m.stop)) throw new Error(`${this.where(block)}: stop=${m.stop}, but no server of that name runs`)
        await this.stop(m.stop)
      }
      return this.shell(block, text)
    }
    if (m.server) return this.server(block, text, m.server === true ? `server@${block.line}` : m.server)
    if (m.stream) return this.stream(block, text, m.stream === true ? `stream@${block.line}` : m.stream)
    if (m.wscat) return this.wscat(block, text)
    if (m.browser && block.lang === 'jsx') return this.react(block, text)
    if (m.browser) return this.browser(block, text)
    if (m.output === true) return this.output(block, text)
    if (m.output) return this.streamOutput(block, text, m.output)
    if (m.usage) return this.usage(block)
    if (m.file) return writeFileSync(path.join(this.dir, m.file), text)
    if (m.copied) {
      const source = readFileSync(path.join(REPO, m.copied), 'utf8')
      if (!source.includes(block.text.trimEnd())) throw new Error(`${this.where(block)}: this block is not in ${m.copied} word for word`)
      return
    }
    throw new Error(`${this.where(block)}: a \`\`\`${block.lang} block without a marker (test, server, wscat, browser, output, usage, file=, copied=, operator): every example must be run`)
  }

  async shell(block, text) {
    const script = `set -a; source "$DOCS_STATE"; set -eo pipefail\n${text}\nexport -p | grep -v '^declare -[a-zA-Z]*r' > "$DOCS_STATE.new"; mv "$DOCS_STATE.new" "$DOCS_STATE"\n`
    const result = await bash(script, { cwd: this.dir, env: this.env })
    if (result.code !== 0) {
      throw new Error(`${this.where(block)}: exited ${result.code}\n--- block\n${text}--- stdout\n${result.stdout}--- stderr\n${result.stderr}`)
    }
    const lines = result.stdout.split('\n').map((l) => l.trim())
    for (const want of text.split('\n').filter((l) => /^\s*# => /.test(l))) {
      const expected = want.replace(/^\s*# => /, '').trim()
      if (!lines.some((line) => line === expected || messageMatches(expected, line))) {
        throw new Error(`${this.where(block)}: no output line matches \`${expected}\`\n--- stdout\n${result.stdout}--- stderr\n${result.stderr}`)
      }
    }
    this.lastOutput = result.stdout
  }

  async server(block, text, name) {
    if (this.servers.has(name)) {
      // As a reader would: see the open sessions through before restarting what they talk to.
      await deadline(Promise.all(this.sessions), `the sessions open before ${this.where(block)}`)
      await this.stop(name)
    }
    const child = spawn('bash', ['-c', `set -a; source "$DOCS_STATE"; set +a\n${text.trim()}`], {
      cwd: this.dir,
      env: this.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const server = { child, log: '', exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal))) }
    this.servers.set(name, server)
    // `ready=URL`: for a server that prints nothing (nginx), ready once URL answers 200.
    const url = typeof block.markers.ready === 'string' ? this.localize(block.markers.ready) : null
    await deadline(
      new Promise((resolve, reject) => {
        const watch = (chunk) => {
          server.log += chunk
          if (!url && READY.test(server.log)) resolve()
        }
        const ask = () =>
          fetch(url, { signal: AbortSignal.timeout(1000) })
            .then((r) => (r.status === 200 ? resolve() : setTimeout(ask, 100)))
            .catch(() => server.child.exitCode === null && setTimeout(ask, 100))
        if (url) ask()
        child.stdout.on('data', watch)
        child.stderr.on('data', watch)
        server.exited.then((code) => reject(new Error(`${this.where(block)}: exited ${code} before it listened:\n${server.log}`)))
      }),
      `${this.where(block)} to listen`,
    ).catch((err) => {
      throw new Error(`${err.message}\n--- output\n${server.log}`)
    })
  }

  /** Stops a server this page started (SIGTERM to its process group, as Ctrl-C would). */
  async stop(name) {
    const server = this.servers.get(name)
    if (!server) return
    this.servers.delete(name)
    // The group may have ended already (a stream whose server went away).
    const signal = (sig) => {
      try {
        process.kill(-server.child.pid, sig)
      } catch (err) {
        if (err.code !== 'ESRCH') throw err
      }
    }
    if (server.child.exitCode === null && server.child.signalCode === null) {
      signal('SIGTERM')
      await deadline(server.exited, `${name} to stop`).catch(() => signal('SIGKILL'))
    }
  }

  /** The shell words of `$ wscat …`, expanded as the terminal would (variables). */
  async words(line) {
    const result = await bash(`set -a; source "$DOCS_STATE"; eval "set -- ${line.replace(/"/g, '\\"')}" || exit 97; printf '%s\\0' "$@"`, {
      cwd: this.dir,
      env: this.env,
    })
    // An empty expansion once made wscat open `undefined` (a CI run, not
    // reproduced): say what the shell did instead.
    if (result.code !== 0) {
      throw new Error(`the shell did not expand \`${line}\` (exit ${result.code}): ${result.stderr.trim()}`)
    }
    return result.stdout.split('\0').filter(Boolean)
  }

  async wscat(block, text) {
    const lines = text.split('\n').filter((l) => l.trim())
    const command = lines.shift()
    if (!command.startsWith('$ wscat ')) throw new Error(`${this.where(block)}: a wscat session starts with \`$ wscat -c URL\``)
    const words = await this.words(command.slice('$ wscat '.length))
    let url
    const protocols = []
    const headers = {}
    for (let i = 0; i < words.length; i++) {
      if (words[i] === '-c') url = words[++i]
      else if (words[i] === '-s') protocols.push(words[++i])
      else if (words[i] === '-H') {
        const [key, ...value] = words[++i].split(':')
        headers[key.trim()] = value.join(':').trim()
      } else throw new Error(`${this.where(block)}: wscat option ${words[i]} is not supported by the runner`)
    }
    if (!url) throw new Error(`${this.where(block)}: no URL after -c in \`${command}\`; the shell gave ${JSON.stringify(words)}`)
    const steps = lines.map((l) => ({ dir: l.slice(0, 1), text: l.slice(1).trim() }))
    if (steps.some((s) => s.dir !== '<' && s.dir !== '>')) throw new Error(`${this.where(block)}: session lines start with > or <`)
    const lastSend = steps.map((s) => s.dir).lastIndexOf('>')
    const answer = steps.findIndex((s, i) => i > lastSend && s.dir === '<')
    const readyAt = answer === -1 ? lastSend : answer
    const ws = new WebSocket(url, protocols, { headers })
    const received = []
    const waiters = []
    ws.on('message', (data) => {
      received.push(data.toString())
      waiters.splice(0).forEach((w) => w())
    })
    const next = () =>
      received.length
        ? Promise.resolve(received.shift())
        : new Promise((resolve) => waiters.push(() => resolve(received.shift())))
    let markReady
    const ready = new Promise((resolve) => (markReady = resolve))
    const where = this.where(block)
    const done = (async () => {
      await deadline(new Promise((resolve, reject) => {
        ws.once('open', resolve)
        ws.once('error', reject)
      }), `${where}: the connection`)
      for (let i = 0; i < steps.length; i++) {
        const step = steps[i]
        if (step.dir === '>') ws.send(step.text)
        else {
          const got = await deadline(next(), `${where}: \`< ${step.text}\``)
          if (!messageMatches(step.text, got)) throw new Error(`${where}: expected\n  < ${step.text}\ngot\n  < ${got}`)
        }
        if (i === readyAt) markReady()
      }
      ws.close()
    })()
    this.sessions.push(done)
    await Promise.race([ready, done])
  }

  async browser(block, text) {
    if (block.lang === 'html') {
      // A page's module script: run its code; `import … from 'http://…'` is
      // fetched from the broker, as the browser would.
      const script = /<script type="module">\n([\s\S]*?)<\/script>/.exec(text)
      if (!script) throw new Error(`${this.where(block)}: an html example needs a <script type="module">`)
      text = script[1]
      for (const [, url] of text.matchAll(/from '(http:\/\/[^']+)'/g)) {
        const response = await fetch(url, { signal: AbortSignal.timeout(STEP_MS) })
        if (response.status !== 200) throw new Error(`${this.where(block)}: GET ${url} answered ${response.status}`)
        const copy = path.join(this.dir, `.import-${block.line}-${path.basename(new URL(url).pathname)}`)
        writeFileSync(copy, await response.text())
        text = text.replace(`'${url}'`, `'${pathToFileURL(copy).href}'`)
      }
    }
    const file = path.join(this.dir, `.snippet-${block.line}.mjs`)
    const ws = pathToFileURL(path.join(HERE, 'node_modules/ws/wrapper.mjs')).href
    const es = pathToFileURL(path.join(HERE, 'node_modules/eventsource/dist/index.js')).href
    const origin = `http://localhost:${this.ports['3001']}`
    writeFileSync(
      file,
      `import { WebSocket } from '${ws}'\nimport { EventSource as NodeEventSource } from '${es}'\n` +
        `globalThis.WebSocket = WebSocket\n` +
        // As on a page the broker served: relative URLs are the broker's.
        `globalThis.EventSource = class extends NodeEventSource { constructor(url, init) { super(new URL(url, '${origin}'), init) } }\n` +
        `console.log = (...a) => process.stdout.write(JSON.stringify(a.length === 1 ? a[0] : a) + '\\n')\n${text}`,
    )
    const child = spawn(process.execPath, [file], { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] })
    const snippet = { child, log: '', changed: [], exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) }
    child.stdout.on('data', (d) => {
      snippet.log += d
      snippet.changed.splice(0).forEach((wake) => wake())
    })
    child.stderr.on('data', (d) => (snippet.err = (snippet.err ?? '') + d))
    // `ready=`/`until=` name text a logged line must contain; by default the
    // `subscribed` answer, then an `event`.
    const ready = typeof block.markers.ready === 'string' ? block.markers.ready : '"type":"subscribed"'
    const until = typeof block.markers.until === 'string' ? block.markers.until : '"type":"event"'
    const waitFor = (needle) =>
      this.until(snippet, () => snippet.log.includes(needle), `${this.where(block)} to log a line with ${needle}`)
    await waitFor(ready)
    this.sessions.push(waitFor(until).finally(() => child.kill('SIGTERM')))
  }

  async stream(block, text, name) {
    const child = spawn('bash', ['-c', `set -a; source "$DOCS_STATE"; set +a\n${text.trim()}`], {
      cwd: this.dir,
      env: this.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const stream = { child, log: '', changed: [], exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal))) }
    child.stdout.on('data', (d) => {
      stream.log += d
      stream.changed.splice(0).forEach((wake) => wake())
    })
    child.stderr.on('data', (d) => (stream.err = (stream.err ?? '') + d))
    this.servers.set(name, stream)
    await this.until(stream, () => /^retry: /m.test(stream.log), `${this.where(block)} to begin (retry:)`)
  }

  /** Waits until `check()` holds for a stream's output, woken by each chunk, with a deadline. */
  until(stream, check, what) {
    return deadline(
      new Promise((resolve, reject) => {
        const test = () => (check() ? resolve() : stream.changed.push(test))
        stream.exited.then((code) => reject(new Error(`exited ${code}:\n${stream.log}${stream.err ?? ''}`)))
        test()
      }),
      what,
    ).catch((err) => {
      throw new Error(`${err.message}\n--- output so far\n${stream.log}${stream.err ?? ''}`)
    })
  }

  async streamOutput(block, text, name) {
    const stream = this.servers.get(name)
    if (!stream) throw new Error(`${this.where(block)}: output=${name}, but no stream of that name runs`)
    const wanted = text.split('\n').filter((l) => l.trim()).map((l) => pattern(l.trim()))
    const inOrder = () => {
      const got = stream.log.split('\n').map((l) => l.trim())
      let at = 0
      return wanted.every((p) => {
        while (at < got.length && !p.test(got[at])) at++
        return at++ < got.length
      })
    }
    await this.until(stream, inOrder, `${this.where(block)}: the lines of this block from stream ${name}`)
  }

  async react(block, text) {
    const { transformSync } = await import('esbuild')
    // Inside tests/docs, so that `react` resolves from its node_modules.
    const dir = mkdtempSync(path.join(HERE, '.run-'))
    this.cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    const client = await fetch(`http://127.0.0.1:${this.ports['3001']}/client.js`, { signal: AbortSignal.timeout(STEP_MS) })
    writeFileSync(path.join(dir, 'client.js'), await client.text())
    writeFileSync(path.join(dir, 'page.mjs'), transformSync(text, { loader: 'jsx', jsx: 'automatic', format: 'esm' }).code)
    const { render, props = '{}', until } = block.markers
    if (typeof render !== 'string' || typeof until !== 'string') throw new Error(`${this.where(block)}: a jsx example names render=COMPONENT and until=TEXT`)
    writeFileSync(
      path.join(dir, 'main.mjs'),
      [
        "import { WebSocket } from 'ws'",
        'globalThis.WebSocket = WebSocket',
        "const { createElement } = await import('react')",
        "const { default: TestRenderer } = await import('react-test-renderer')",
        "const page = await import('./page.mjs')",
        `const tree = TestRenderer.create(createElement(page[${JSON.stringify(render)}], ${props}))`,
        // The rendered text whenever it changes: what a user would see.
        'const text = (node) => (node == null ? "" : typeof node === "string" ? node : Array.isArray(node) ? node.map(text).join("") : text(node.children))',
        'let shown = ""',
        'setInterval(() => { const now = text(tree.toJSON()); if (now !== shown) { shown = now; console.log(now) } }, 20)',
        '',
      ].join('\n'),
    )
    const child = spawn(process.execPath, [path.join(dir, 'main.mjs')], { cwd: dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] })
    const rendered = { child, log: '', changed: [], exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) }
    child.stdout.on('data', (d) => {
      rendered.log += d
      rendered.changed.splice(0).forEach((wake) => wake())
    })
    child.stderr.on('data', (d) => (rendered.err = (rendered.err ?? '') + d))
    this.sessions.push(
      this.until(rendered, () => rendered.log.includes(until), `${this.where(block)}: ${render} to show ${until}`).finally(() =>
        child.kill('SIGTERM'),
      ),
    )
  }

  output(block, text) {
    if (this.lastOutput === null) throw new Error(`${this.where(block)}: an output block needs a \`sh test\` block before it`)
    const got = this.lastOutput.split('\n')
    let at = 0
    for (const want of text.split('\n').filter((l) => l.trim())) {
      const p = pattern(want.trim())
      while (at < got.length && !p.test(got[at].trim())) at++
      if (at === got.length) throw new Error(`${this.where(block)}: the output lacks \`${want}\` (in order):\n${this.lastOutput}`)
      at++
    }
  }

  async usage(block) {
    const result = await bash(`"${BIN}" --help`, { cwd: this.dir, env: this.env })
    if (result.stderr.trim() !== block.text.trim()) {
      throw new Error(`${this.where(block)}: \`agent-events --help\` says:\n${result.stderr}`)
    }
  }

  async tearDown() {
    try {
      await deadline(Promise.all(this.sessions), `the sessions of docs/${this.name} to finish`)
    } finally {
      // Last started, first stopped: readers before what they read.
      for (const name of [...this.servers.keys()].reverse()) await this.stop(name)
      for (const cleanup of this.cleanups) cleanup()
      rmSync(this.dir, { recursive: true, force: true })
    }
  }
}

// ------------------------------------------------------------------ main

const pages = readdirSync(path.join(REPO, 'docs'))
  .filter((f) => f.endsWith('.md'))
  .filter((f) => only.length === 0 || only.includes(f))
  .sort()
let failed = 0
let ran = 0
for (const name of pages) {
  const page = new Page(name)
  ran++
  await page.setUp()
  try {
    for (const block of blocks(readFileSync(path.join(REPO, 'docs', name), 'utf8'))) await page.run(block)
    await page.tearDown()
    console.log(`ok   docs/${name}: ${page.counts.run} examples run${page.counts.operator ? `, ${page.counts.operator} operator steps shown only (tests/deploy covers what they install)` : ''}`)
  } catch (err) {
    failed++
    console.log(`FAIL docs/${name}: ${err.message}`)
    await page.tearDown().catch(() => {})
  }
}
console.log(failed ? `${failed} of ${ran} pages failed` : `every example of ${ran} pages ran${ran < pages.length ? ` (${pages.length - ran} not run)` : ''}`)
process.exit(failed ? 1 : 0)
