// A browser's own EventSource against the SSE stream of an execution: events
// arrive with id = seq, and after the broker restarts the browser reconnects
// by itself with Last-Event-ID and misses nothing, doubles nothing.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startBroker, api } from './broker.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const EXECUTION = 'es-browser-1'
const cleanup = []
after(async () => {
  for (const step of cleanup.reverse()) await step()
})

/** Posts `count` agent-thinking events numbered from `first`. */
async function post(base, first, count) {
  const events = Array.from({ length: count }, (_, i) => ({
    type: 'agent-thinking',
    executionId: EXECUTION,
    agentId: 'writer',
    thought: `step ${first + i}`,
    step: first + i,
  }))
  await api(base, '/api/events', events)
}

/** Waits until the page's EventSource has received `count` events. */
async function received(page, count) {
  await page.waitForFunction((n) => window.received.length >= n, count, { timeout: 15_000 })
  return page.evaluate(() => window.received)
}

test('a browser EventSource streams an execution and resumes with Last-Event-ID', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ae-eventsource-'))
  cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }))
  let broker = await startBroker({ port: 0, dataDir, paceMs: 1000 })
  cleanup.push(() => broker.kill())
  const { port, base } = broker

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  cleanup.push(() => browser.close())
  const page = await browser.newPage()
  await page.goto(`${base}/`)
  await page.evaluate((execution) => {
    window.received = []
    const source = new EventSource(`/api/executions/${execution}/stream?fromSeq=0`)
    source.addEventListener('agent-thinking', (e) => {
      const message = JSON.parse(e.data)
      window.received.push({ id: e.lastEventId, seq: message.event.seq, thought: message.event.thought })
    })
  }, EXECUTION)

  await post(base, 1, 5)
  const first = await received(page, 5)
  assert.deepEqual(first.map((e) => e.seq), [1, 2, 3, 4, 5])
  assert.deepEqual(first.map((e) => e.id), ['1', '2', '3', '4', '5'], 'id: is the seq')

  // The broker goes away and comes back on the same port and data: the
  // browser reconnects on its own, sending Last-Event-ID: 5.
  await broker.kill()
  broker = await startBroker({ port, dataDir, paceMs: 1000 })
  await post(base, 6, 3)
  const all = await received(page, 8)
  assert.deepEqual(all.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8], 'nothing missed, nothing twice')
  assert.deepEqual(all.map((e) => e.thought), all.map((_, i) => `step ${i + 1}`))
})
