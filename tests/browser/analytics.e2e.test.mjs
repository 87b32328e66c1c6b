// End to end: the analytics page in headless Chromium against the real broker
// (no demo, so every figure comes from the fixture posted here). Checks the
// figures shown against ones worked out by hand, changes the window, and sees
// a live update. Screenshots go to artifacts/; with DOCS_SCREENSHOT=1 the page
// is also saved as docs/analytics.png for the README and docs/analytics.md.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startBroker, api, REPO } from './broker.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARTIFACTS = join(REPO, 'tests/browser/artifacts')
/** Longest wait for anything the page should show (it refreshes every 3 s). */
const UI_MS = 15_000

const cleanup = []
after(async () => {
  for (const step of cleanup.reverse()) await step()
})

/**
 * Two executions, placed `agoMs` before now: run-1 (conv-a) ends with success
 * after 30 s; run-2 (conv-b) is still running. Tool results: search 40 ms ok,
 * search 80 ms failed, draw 20 ms ok. Reviews: writer approved at once,
 * painter after one revision round. 15 events.
 */
function fixture(agoMs) {
  const base = Date.now() - agoMs
  const at = (s) => new Date(base + s * 1000).toISOString()
  const r1 = (type, s, fields) => ({ type, executionId: 'run-1', conversationId: 'conv-a', timestamp: at(s), ...fields })
  const r2 = (type, s, fields) => ({ type, executionId: 'run-2', conversationId: 'conv-b', timestamp: at(s), ...fields })
  return [
    r1('orchestration-start', 0, {}),
    r1('agent-start', 5, { agentId: 'writer', department: 'story' }),
    r1('tool-call', 10, { agentId: 'writer', toolName: 'search' }),
    r1('tool-result', 12, { agentId: 'writer', toolName: 'search', success: true, executionTime: 40 }),
    r1('tool-call', 14, { agentId: 'writer', toolName: 'search' }),
    r1('tool-result', 16, { agentId: 'writer', toolName: 'search', success: false, executionTime: 80 }),
    r1('quality-check', 20, { qualityScore: 55, threshold: 60, department: 'story' }),
    r1('review-status', 25, { department: 'story', status: 'approved', specialistId: 'writer' }),
    r1('orchestration-complete', 30, { status: 'success' }),
    r2('orchestration-start', 60, {}),
    r2('agent-start', 65, { agentId: 'painter', department: 'art' }),
    r2('tool-call', 70, { agentId: 'painter', toolName: 'draw' }),
    r2('tool-result', 75, { agentId: 'painter', toolName: 'draw', success: true, executionTime: 20 }),
    r2('review-status', 80, { department: 'art', status: 'revision-requested', specialistId: 'painter' }),
    r2('review-status', 85, { department: 'art', status: 'approved', specialistId: 'painter' }),
  ]
}

/** The figures of the fixture, worked out by hand: [raw value, text shown]. */
const EXPECTED = {
  executions: ['2', '2'],
  running: ['1', '1'],
  'duration-p50': ['30000', '30.0 s'],
  events: ['15', '15'],
  'tool-calls': ['3', '3'],
  'failure-rate': [String(1 / 3), '33%'],
  // 20, 40, 80: p50 at rank 2, p95 at rank 3.
  'latency-p50': ['40', '40 ms'],
  'latency-p95': ['80', '80 ms'],
  'first-pass': ['0.5', '50%'],
  'revision-rounds': ['1', '1'],
}

/** A broker of its own, without the demo, removed after the tests. */
async function quietBroker(env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-events-analytics-'))
  cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }))
  const broker = await startBroker({ port: 0, dataDir, demo: false, env })
  cleanup.push(() => broker.kill())
  return broker
}

let chromiumInstance
async function browserOnce() {
  chromiumInstance ??= await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  })
  return chromiumInstance
}
after(() => chromiumInstance?.close())

test('the analytics page shows the store\'s figures, follows the window and updates live', { timeout: 120_000 }, async (t) => {
  mkdirSync(ARTIFACTS, { recursive: true })
  const broker = await quietBroker()
  await api(broker.base, '/api/events', fixture(5 * 60_000))
  const browser = await browserOnce()
  // UTC, so that the custom window typed below means the same on any machine.
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 }, timezoneId: 'UTC' })
  const problems = []
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('console', (msg) => msg.type() === 'error' && problems.push(`console: ${msg.text()}`))
  const asked = []
  page.on('request', (request) => request.url().includes('/api/analytics') && asked.push(new URL(request.url())))

  // ---- 1. the default window (last hour): the fixture's figures
  await page.goto(`${broker.base}/analytics`)
  await waitForFigures(page, EXPECTED)
  assert.equal(await page.getAttribute('main.analytics', 'data-bucket-secs'), '60')
  assert.deepEqual(await barKeys(page, 'tools'), ['search', 'draw'])
  assert.deepEqual(await barKeys(page, 'agents'), ['writer', 'painter'])
  assert.deepEqual(await barKeys(page, 'statuses'), ['running', 'success', 'failed', 'partial'])
  assert.deepEqual(await barKeys(page, 'quality'), ['story'])
  assert.deepEqual(await barKeys(page, 'rounds'), ['0', '1'])
  assert.equal(await page.getAttribute('#rate', 'data-total'), '15')
  assert.equal(await page.getAttribute('#rate', 'data-buckets'), '60')
  assert.match(await page.textContent('#tools [data-key="search"]'), /50% failed · 40 ms \/ 80 ms/)
  await page.screenshot({ path: join(ARTIFACTS, 'analytics.png'), fullPage: true })

  // ---- 2. other windows: 15 minutes and 24 hours still hold the fixture
  await page.selectOption('#window select[name="window"]', '15m')
  await page.waitForSelector('main.analytics[data-bucket-secs="15"]', { timeout: UI_MS })
  await waitForFigures(page, EXPECTED)
  await page.selectOption('#window select[name="window"]', '24h')
  await page.waitForSelector('main.analytics[data-bucket-secs="1440"]', { timeout: UI_MS })
  await waitForFigures(page, EXPECTED)
  assert.match(page.url(), /window=24h/)

  // ---- 3. a custom window before the fixture: nothing in it
  await page.selectOption('#window select[name="window"]', 'custom')
  const hoursAgo = (h) => new Date(Date.now() - h * 3_600_000).toISOString().slice(0, 19)
  const [from, to] = [hoursAgo(3), hoursAgo(2)]
  await page.fill('#window input[name="from"]', from)
  await page.fill('#window input[name="to"]', to)
  await page.click('#window button[type="submit"]')
  await waitForFigures(page, { events: ['0', '0'], executions: ['0', '0'], 'latency-p50': ['', '—'] })
  await page.waitForSelector('#tools text.empty', { timeout: UI_MS })
  const custom = asked.at(-1).searchParams
  assert.deepEqual([custom.get('from'), custom.get('to')], [`${from}.000Z`, `${to}.000Z`])

  // ---- 4. a conversation filter, then live: a new execution shows up without a reload
  await page.selectOption('#window select[name="window"]', '1h')
  await page.fill('#window input[name="conversation"]', 'conv-a')
  await page.click('#window button[type="submit"]')
  await waitForFigures(page, { executions: ['1', '1'], events: ['9', '9'], 'tool-calls': ['2', '2'] })
  assert.equal(asked.at(-1).searchParams.get('conversationId'), 'conv-a')
  assert.equal(await page.getAttribute('#to-monitor', 'href'), '/?conversation=conv-a')
  const rendersBefore = Number(await page.getAttribute('main.analytics', 'data-renders'))
  await api(broker.base, '/api/events', [
    { type: 'orchestration-start', executionId: 'run-3', conversationId: 'conv-a' },
    { type: 'tool-call', executionId: 'run-3', conversationId: 'conv-a', agentId: 'critic', toolName: 'search' },
  ])
  await waitForFigures(page, { executions: ['2', '2'], events: ['11', '11'], 'tool-calls': ['3', '3'], running: ['1', '1'] })
  const rendersAfter = Number(await page.getAttribute('main.analytics', 'data-renders'))
  t.diagnostic(`live update after ${rendersAfter - rendersBefore} refreshes`)
  assert.deepEqual(await barKeys(page, 'agents'), ['writer', 'critic'])

  assert.deepEqual(problems, [], 'no uncaught error or console error')
  if (process.env.DOCS_SCREENSHOT) await docsScreenshot(browser)
})

test('with auth on, the page reads with its ?token= and hands it to the monitor link', { timeout: 60_000 }, async () => {
  const secret = 'analytics-e2e-secret-0123456789abcdef'
  const broker = await quietBroker({ AGENT_EVENTS_AUTH_HMAC_SECRET: secret })
  const token = (role) => jwt({ sub: 'e2e', exp: Math.floor(Date.now() / 1000) + 600, roles: [role] }, secret)
  const admin = token('admin')
  const posted = await fetch(`${broker.base}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
    body: JSON.stringify(fixture(5 * 60_000)),
  })
  assert.equal(posted.status, 202)
  const browser = await browserOnce()

  const page = await browser.newPage()
  await page.goto(`${broker.base}/analytics?token=${admin}`)
  await waitForFigures(page, EXPECTED)
  assert.equal(await page.getAttribute('#to-monitor', 'href'), `/?token=${admin}`)
  await page.click('#to-monitor')
  await page.waitForSelector(`#to-analytics[href$="?token=${admin}"]`, { timeout: UI_MS })

  // A subscriber's token does not open the figures; the page says why.
  const refused = await browser.newPage()
  await refused.goto(`${broker.base}/analytics?token=${token('subscriber')}`)
  await refused.waitForSelector('#refresh[data-state="error"]', { timeout: UI_MS })
  assert.match(await refused.textContent('#refresh .text'), /admin/)
})

/** An HS256 JWT, as `agent-events token` would sign it. */
function jwt(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`
}

/** The README's picture: the page over a demo broker's last 15 minutes. */
async function docsScreenshot(browser) {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-events-analytics-demo-'))
  cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }))
  const demo = await startBroker({ port: 0, dataDir, paceMs: 20 })
  cleanup.push(() => demo.kill())
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } })
  await page.goto(`${demo.base}/analytics?window=15m`)
  // Until a few dozen demo executions have run, so every chart has something.
  await page.waitForFunction(
    () => Number(document.querySelector('#tiles [data-figure="executions"]')?.dataset.value) >= 40,
    null,
    { timeout: 60_000 },
  )
  await page.screenshot({ path: join(REPO, 'docs/analytics.png'), fullPage: true })
}

/** Waits until every tile named in `expected` shows `[raw value, text]`. */
async function waitForFigures(page, expected) {
  try {
    await page.waitForFunction(
      (want) => Object.entries(want).every(([key, [value, text]]) => {
        const tile = document.querySelector(`#tiles [data-figure="${key}"]`)
        return tile && tile.dataset.value === value && tile.querySelector('dd').textContent === text
      }),
      expected,
      { timeout: UI_MS },
    )
  } catch (err) {
    const shown = await page.$$eval('#tiles [data-figure]', (tiles) =>
      tiles.map((t) => `${t.dataset.figure}=${t.dataset.value} (${t.querySelector('dd').textContent})`))
    throw new Error(`${err.message}\nshown: ${shown.join(', ')}\nwanted: ${JSON.stringify(expected)}`)
  }
}

/** The keys of a bar chart's rows, top to bottom. */
function barKeys(page, id) {
  return page.$$eval(`#${id} g.bar`, (bars) => bars.map((b) => b.dataset.key))
}
