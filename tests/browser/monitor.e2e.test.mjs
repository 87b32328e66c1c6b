// End to end: the real broker (--demo) and the monitor in headless Chromium.
// Watches a running execution grow, kills the broker, restarts it on the same
// port and data directory, and checks that the page resumes with every event
// exactly once; then replays the execution. Screenshots go to artifacts/.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startBroker, api, storedEvents, poll, REPO } from './broker.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARTIFACTS = join(REPO, 'tests/browser/artifacts')
/** Longest wait for anything the page should show. */
const UI_MS = 15_000
/** Demo executions take about 0.6 s at this pace: some are always running. */
const PACE_MS = 20
/** Executions to try before concluding the page does not update live. */
const ATTEMPTS = 5
/** A running execution with at most this many events has most of its run ahead. */
const FRESH_SEQ = 25
/** The page's next reconnect must be at least this far off before we post behind its back. */
const RETRY_WINDOW_MS = 1500

const cleanup = []
after(async () => {
  for (const step of cleanup.reverse()) await step()
})

test('the monitor follows a live execution and resumes across a broker restart', { timeout: 120_000 }, async (t) => {
  mkdirSync(ARTIFACTS, { recursive: true })
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-events-e2e-'))
  cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }))
  let broker = await startBroker({ port: 0, dataDir, paceMs: PACE_MS })
  cleanup.push(() => broker.kill())
  const port = broker.port

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  cleanup.push(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
  const problems = watchForProblems(page)
  const subscribes = watchSubscribes(page)
  t.after(() => {
    if (problems.length) t.diagnostic(`page problems:\n${problems.join('\n')}`)
  })

  await page.goto(`${broker.base}/?conversation=demo`)
  await waitForState(page, 'open')

  // ---- 1. a running execution, watched live: everything appears and grows
  const executionId = await openGrowingExecution(page, t)
  await page.screenshot({ path: join(ARTIFACTS, 'monitor-live.png'), fullPage: true })
  await page.waitForSelector('#quality [data-quality-point]', { timeout: UI_MS })
  await page.waitForSelector('#timeline [data-tool]', { timeout: UI_MS })
  await page.screenshot({ path: join(ARTIFACTS, 'monitor.png'), fullPage: true })

  // ---- 2. the execution ends; the page has exactly what the store has
  await page.waitForSelector('#execution:not([data-status="running"])', { timeout: UI_MS })
  const before = await poll(async () => {
    const stored = await storedEvents(broker.base, executionId)
    const shown = await shownLog(page)
    return shown.length > 0 && shown.length === stored.length && stored
  }, { what: 'the log to show every stored event', timeoutMs: UI_MS })
  assertSameEvents(await shownLog(page), before)
  const lastBefore = before.at(-1).seq

  // ---- 3. crash the broker; the page notices and backs off
  await broker.kill()
  await page.waitForFunction(
    (windowMs) => {
      const badge = document.getElementById('connection')
      const both = badge.dataset.liveState === 'reconnecting' && badge.dataset.logState === 'reconnecting'
      return both && Number(badge.dataset.retryAt) - Date.now() > windowMs
    },
    RETRY_WINDOW_MS,
    { timeout: 30_000 },
  )
  const subscribedBefore = await subscribedCounts(page)

  // ---- 4. same port, same data: events arrive before the page is back...
  broker = await startBroker({ port, dataDir, paceMs: PACE_MS })
  const missed = await postProbes(broker.base, executionId, 'while the page was away', 5)
  const postedInWindow = await page.evaluate(() => {
    const badge = document.getElementById('connection')
    return badge.dataset.connectionState !== 'open' && Date.now() < Number(badge.dataset.retryAt)
  })
  assert.deepEqual(missed, [1, 2, 3, 4, 5].map((i) => lastBefore + i), 'seq continues after the restart')

  // ...the page reconnects and resubscribes both views...
  await waitForState(page, 'open')
  await page.waitForFunction(
    (counts) => {
      const n = (id) => Number(document.getElementById(id).dataset.subscribedCount)
      return n('execution') > counts.execution && n('log') > counts.log
    },
    subscribedBefore,
    { timeout: UI_MS },
  )
  // ...and live events flow again.
  const live = await postProbes(broker.base, executionId, 'after the page came back', 3)
  const stored = await storedEvents(broker.base, executionId)
  assert.equal(stored.at(-1).seq, live.at(-1))
  await page.waitForSelector(`#log li[data-seq="${live.at(-1)}"]`, { timeout: UI_MS })
  await page.waitForSelector(`#execution[data-last-seq="${live.at(-1)}"]`, { timeout: UI_MS })

  assertSameEvents(await shownLog(page), stored)
  const resume = await page.evaluate(() => ({ ...document.getElementById('log').dataset }))
  t.diagnostic(`log resumed from seq ${resume.resumedFrom}, ${resume.replayed} replayed; posted in window: ${postedInWindow}`)
  assert.equal(Number(resume.resumedFrom), lastBefore, 'resumed from the last seq shown')
  if (postedInWindow) {
    assert.equal(Number(resume.replayed), missed.length, 'what was missed came back as a replay')
  } else {
    t.diagnostic('the page reconnected before the probes were stored; they arrived live instead')
  }
  await page.waitForSelector('#timeline [data-agent-id="e2e-probe"]', { timeout: UI_MS })
  await page.screenshot({ path: join(ARTIFACTS, 'monitor-resumed.png'), fullPage: true })

  // ---- 5. hovering a failed tool call shows its events
  // The demo runs on, so the timeline re-renders and its bars move: a hover
  // can land where a bar was, on another one. Hover again (from outside, so
  // that a mouseover fires) until the tooltip shows the failure, within UI_MS.
  const hoverDeadline = Date.now() + UI_MS
  for (;;) {
    const widest = await page.$$eval('#timeline [data-tool="failed"]', (bars) =>
      bars.reduce((a, b) => (b.getBBox().width > a.getBBox().width ? b : a)).dataset.seq,
    )
    await page.mouse.move(0, 0)
    await page.hover(`#timeline [data-tool="failed"][data-seq="${widest}"]`)
    const shown = await page
      .waitForSelector('#tooltip:not([hidden]) .tip-event.failure', { timeout: 1000 })
      .then(() => true, () => false)
    if (shown) break
    assert.ok(Date.now() < hoverDeadline, 'hovering a failed tool call never showed its failure')
  }

  // ---- 6. log filters are subscription filters: the broker applies them
  const department = await page.$eval('#cards .card[data-department]', (card) => card.dataset.department)
  await page.click('#type-filters input[value="quality-check"] + span')
  await page.click('#type-filters input[value="review-status"] + span')
  await page.selectOption('select[data-filter="department"]', department)
  const query = `types=quality-check,review-status&department=${department}&limit=1000`
  const filtered = (await api(broker.base, `/api/executions/${executionId}/events?${query}`)).events
  assert.ok(filtered.length > 0, 'the filter leaves something to show')
  await waitForLog(page, filtered)
  assert.ok(
    subscribes.some(
      (m) =>
        m.executionId === executionId &&
        m.fromSeq === 0 &&
        m.department === department &&
        JSON.stringify(m.types) === '["quality-check","review-status"]',
    ),
    `the filters went to the broker: ${JSON.stringify(subscribes.slice(-3))}`,
  )
  await page.click('#type-filters input[value="quality-check"] + span')
  await page.click('#type-filters input[value="review-status"] + span')
  await page.selectOption('select[data-filter="department"]', '')
  await waitForLog(page, stored)
  await page.click('#autoscroll')
  await page.waitForSelector('#autoscroll[data-paused="true"]', { timeout: UI_MS })
  await page.click('#autoscroll')
  await page.waitForSelector('#autoscroll[data-paused="false"]', { timeout: UI_MS })

  // ---- 7. replay the finished execution from history
  await page.click('#replay [data-action="replay"]')
  await page.waitForSelector('#replay[data-replay-state="paused"]', { timeout: UI_MS })
  assert.equal(await page.locator('#log li[data-seq]').count(), 0, 'a replay starts empty')
  for (let i = 0; i < 3; i++) await page.click('#replay [data-action="step"]')
  await page.waitForFunction(() => document.querySelectorAll('#log li[data-seq]').length === 3, null, { timeout: UI_MS })
  await page.click('#replay [data-action="play-10"]')
  await page.waitForSelector('#replay[data-replay-state="done"]', { timeout: 60_000 })
  assertSameEvents(await shownLog(page), stored)
  assert.ok((await page.locator('#cards .card[data-state="complete"]').count()) > 0, 'replayed cards complete')
  await page.screenshot({ path: join(ARTIFACTS, 'monitor-replay.png'), fullPage: true })

  assert.deepEqual(problems, [], 'no uncaught error or unexpected console error')
})

/**
 * Opens a running execution and waits to see its cards, lanes and log appear
 * and its log and timeline grow while it runs. A demo run lasts well under a
 * second, so both happen inside the page, without a round trip per step; a
 * run that ends before it grows on screen is no fault of the page: try the next.
 */
async function openGrowingExecution(page, t) {
  const tried = []
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    // Clicks (a DOM click: rows move as new runs start on top) as soon as a
    // run that has most of its work ahead is listed.
    const clicked = await page.waitForFunction(
      ({ skip, fresh }) => {
        const rows = [...document.querySelectorAll('#executions button[data-status="running"]')]
        const row = rows.find((b) => !skip.includes(b.dataset.executionId) && Number(b.dataset.lastSeq) <= fresh)
        row?.click()
        return row?.dataset.executionId
      },
      { skip: tried, fresh: FRESH_SEQ },
      { timeout: UI_MS },
    )
    const executionId = await clicked.jsonValue()
    tried.push(executionId)
    const outcome = await page
      .waitForFunction(watchGrowth, executionId, { timeout: UI_MS, polling: 'raf' })
      .then((h) => h.jsonValue())
    if (outcome !== 'ended') {
      t.diagnostic(`watching ${executionId}: ${JSON.stringify(outcome.first)} at first, then ${JSON.stringify(outcome.now)}`)
      return executionId
    }
    t.diagnostic(`${executionId} ended before it grew on screen; trying another`)
  }
  throw new Error(`none of ${tried.join(', ')} grew on screen while running`)
}

/**
 * In the page: the counts when cards, lanes, marks and log rows have all
 * appeared, then `{first, now}` once rows and timeline marks have grown, or
 * `'ended'` if the run finished first.
 */
function watchGrowth(executionId) {
  const section = document.getElementById('execution')
  if (section.dataset.executionId !== executionId) return false
  const now = {
    rows: document.querySelectorAll('#log li[data-seq]').length,
    marks: document.querySelectorAll('#timeline [data-seq]').length,
    lanes: document.querySelectorAll('#timeline [data-lane]').length,
    cards: document.querySelectorAll('#cards .card[data-department]').length,
  }
  window.e2eFirstSeen ??= {}
  const first = window.e2eFirstSeen[executionId]
  if (!first) {
    if (now.rows && now.marks && now.lanes && now.cards) window.e2eFirstSeen[executionId] = now
  } else if (now.rows > first.rows && now.marks > first.marks) {
    return { first, now }
  }
  return ['success', 'failed', 'partial'].includes(section.dataset.status) ? 'ended' : false
}

/** The log's rows as [seq, type, agentId], in screen order. */
function shownLog(page) {
  return page.$$eval('#log li[data-seq]', (rows) =>
    rows.map((r) => [Number(r.dataset.seq), r.dataset.type, r.dataset.agentId]),
  )
}

/** Each stored event exactly once, in order, no gap, no stranger. */
function assertSameEvents(shown, stored) {
  const expected = stored.map((e) => [e.seq, e.type, e.agentId ?? ''])
  assert.deepEqual(
    stored.map((e) => e.seq),
    stored.map((_, i) => i + 1),
    'the store has seqs 1..N',
  )
  assert.deepEqual(shown, expected)
}

/**
 * Waits until the log shows exactly `events`, then checks them one by one.
 * A timeout still fails, and says what the log held and its filters instead
 * of only that the wait ran out.
 */
async function waitForLog(page, events) {
  const seqs = events.map((e) => e.seq)
  await page
    .waitForFunction(
      (want) => {
        const shown = [...document.querySelectorAll('#log li[data-seq]')].map((r) => Number(r.dataset.seq))
        return shown.length === want.length && shown.every((seq, i) => seq === want[i])
      },
      seqs,
      { timeout: UI_MS },
    )
    .catch(async (timeout) => {
      const state = await page.evaluate(() => ({
        subscription: { ...document.getElementById('log').dataset },
        types: [...document.querySelectorAll('#type-filters input:checked')].map((input) => input.value),
        department: document.querySelector('select[data-filter="department"]')?.value,
      }))
      const shown = (await shownLog(page)).map(([seq]) => seq)
      timeout.message += `; wanted seqs ${JSON.stringify(seqs)}, the log shows ${JSON.stringify(shown)}; its state: ${JSON.stringify(state)}`
      throw timeout
    })
  assert.deepEqual(
    await shownLog(page),
    events.map((e) => [e.seq, e.type, e.agentId ?? '']),
  )
}

/** Every `subscribe` the page sends, on any of its connections. */
function watchSubscribes(page) {
  const sent = []
  page.on('websocket', (ws) =>
    ws.on('framesent', ({ payload }) => {
      const message = JSON.parse(String(payload))
      if (message.type === 'subscribe') sent.push(message)
    }),
  )
  return sent
}

function subscribedCounts(page) {
  return page.evaluate(() => ({
    execution: Number(document.getElementById('execution').dataset.subscribedCount),
    log: Number(document.getElementById('log').dataset.subscribedCount),
  }))
}

function waitForState(page, state) {
  return page.waitForSelector(`#connection[data-connection-state="${state}"]`, { timeout: UI_MS })
}

/** Posts `n` thinking steps of an extra agent; returns their seqs. */
async function postProbes(base, executionId, when, n) {
  const events = Array.from({ length: n }, (_, i) => ({
    type: 'agent-thinking',
    executionId,
    agentId: 'e2e-probe',
    thought: `probe ${i + 1}, posted ${when}`,
    step: i,
  }))
  const answer = await api(base, '/api/events', events)
  return answer.events.map((e) => e.seq)
}

/** Uncaught errors and console errors, except the refused connections of the outage. */
function watchForProblems(page) {
  const problems = []
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('console', (msg) => {
    const text = msg.text()
    const outage = /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(text)
    if (msg.type() === 'error' && !outage) problems.push(`console: ${text}`)
  })
  return problems
}
