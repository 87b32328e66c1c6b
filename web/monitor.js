/**
 * The live execution monitor: wires the list, the detail views, the log and
 * the replay to two connections of `/client.js`.
 *
 * Why two connections: the broker allows one subscription per target and
 * connection, and the log's filters are server-side. The cards, timeline and
 * chart need every event of the execution, so they keep an unfiltered
 * subscription on one connection while the log subscribes with its filters
 * on the other.
 * @module agent-events/monitor
 */

import { AgentEventsClient, EVENT_TYPES } from './client.js'
import { h, duration, count, usd } from './monitor/dom.js'
import { createExecution, applyEvent, matchesFilters } from './monitor/model.js'
import { renderCards } from './monitor/cards.js'
import { renderTimeline } from './monitor/timeline.js'
import { renderQuality } from './monitor/quality.js'
import { EventLog } from './monitor/log.js'
import { attachTooltip } from './monitor/describe.js'
import { fetchExecutions, applyToList, renderList } from './monitor/list.js'
import { readHistory, Player } from './monitor/replay.js'

/** Conversations the list follows live when no conversation is chosen. */
const MAX_LIST_CONVERSATIONS = 20
/** Shortest time between two redraws: ten a second reads as live. */
const MIN_REDRAW_MS = 100

const $ = (id) => document.getElementById(id)

/**
 * A token for a broker with auth on, from the page's `?token=`: the page has
 * no login of its own. (It is sent nowhere else: the page sets no-referrer.)
 */
const token = new URLSearchParams(location.search).get('token') || undefined
const live = new AgentEventsClient(undefined, { token })
const logClient = new AgentEventsClient(undefined, { token })
const httpBase = live.httpUrl

/** fetch with the token, for the list and the replay's history. */
async function authedFetch(url) {
  return fetch(url, { headers: await live.httpHeaders() })
}

const ui = {
  /** @type {object[]} */ rows: [],
  listFilters: { conversationId: '', status: '' },
  /** @type {Map<string, import('./client.js').Subscription>} */ listSubs: new Map(),
  /** @type {ReturnType<typeof createExecution>|null} */ model: null,
  detailSub: null,
  logSub: null,
  logFilters: { types: [], agentId: '', department: '' },
  /** @type {Player|null} */ player: null,
  framePending: false,
  detailDirty: false,
  lastRender: -Infinity,
  connection: new Map(),
}

const log = new EventLog($('log-scroller'), $('log'), showAutoScroll)

// ------------------------------------------------------------------ start

function start() {
  // The analytics page needs the token too; the page's query carries it.
  if (token) $('to-analytics').search = `?token=${encodeURIComponent(token)}`
  readListFiltersFromUrl()
  wireConnectionBadge()
  wireListFilters()
  wireLogFilters()
  wireReplay()
  attachTooltip($('timeline').parentElement, $('tooltip'), () => ui.model)
  attachTooltip($('quality').parentElement, $('tooltip'), () => ui.model)
  window.addEventListener('hashchange', openFromHash)
  window.addEventListener('resize', scheduleRender)
  // Both connections up front, so opening an execution costs no handshake.
  live.connect()
  logClient.connect()
  refreshList()
  openFromHash()
}

// ------------------------------------------------------------- connection

/** Which state the badge shows when the two connections differ: the worse. An idle one is not in use. */
const STATE_RANK = { closed: 4, reconnecting: 3, connecting: 2, open: 1, idle: 0 }

function wireConnectionBadge() {
  for (const [name, client] of [['live', live], ['log', logClient]]) {
    client.on('state', (info) => {
      // When the next attempt is due, for people and for the end-to-end test.
      const retryAt = info.state === 'reconnecting' ? Date.now() + info.delayMs : undefined
      ui.connection.set(name, { ...info, retryAt })
      showConnection()
    })
    client.on('error', (err) => console.warn(`agent-events (${name}): ${err.code}: ${err.message}`))
  }
  $('reconnect-now').addEventListener('click', () => {
    live.connect()
    logClient.connect()
  })
}

/** Shows the worse of the two connections' states. */
function showConnection() {
  const infos = [...ui.connection.values()]
  const worst = infos.reduce((a, b) => (STATE_RANK[b.state] > STATE_RANK[a.state] ? b : a))
  const badge = $('connection')
  badge.dataset.connectionState = worst.state
  for (const [name, info] of ui.connection) badge.dataset[`${name}State`] = info.state
  const retries = infos.map((i) => i.retryAt).filter(Boolean)
  if (retries.length > 0) badge.dataset.retryAt = String(Math.min(...retries))
  else delete badge.dataset.retryAt
  badge.querySelector('.text').textContent = connectionText(worst)
  $('reconnect-now').hidden = worst.state !== 'reconnecting' && worst.state !== 'closed'
}

function connectionText(info) {
  switch (info.state) {
    case 'open':
      return 'live'
    case 'connecting':
      return info.attempt > 0 ? `connecting (attempt ${info.attempt + 1})` : 'connecting'
    case 'reconnecting':
      return `connection lost (${info.code}); retrying in ${(info.delayMs / 1000).toFixed(1)} s`
    case 'closed':
      return info.code ? `closed by the broker (${info.code} ${info.reason ?? ''}); not retrying` : 'closed'
    default:
      return 'not connected'
  }
}

// ------------------------------------------------------------------- list

function readListFiltersFromUrl() {
  const params = new URLSearchParams(location.search)
  ui.listFilters.conversationId = params.get('conversation') ?? ''
  ui.listFilters.status = params.get('status') ?? ''
  const form = $('list-filters')
  form.conversation.value = ui.listFilters.conversationId
  form.status.value = ui.listFilters.status
}

function wireListFilters() {
  const form = $('list-filters')
  const apply = () => {
    ui.listFilters.conversationId = form.conversation.value.trim()
    ui.listFilters.status = form.status.value
    const params = new URLSearchParams(location.search)
    for (const [key, value] of [['conversation', ui.listFilters.conversationId], ['status', ui.listFilters.status]]) {
      if (value) params.set(key, value)
      else params.delete(key)
    }
    history.replaceState(null, '', `${location.pathname}${params.size ? `?${params}` : ''}${location.hash}`)
    refreshList()
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    apply()
  })
  form.status.addEventListener('change', apply)
  form.conversation.addEventListener('change', apply)
}

async function refreshList() {
  try {
    ui.rows = await fetchExecutions(httpBase, ui.listFilters, authedFetch)
    $('list-note').textContent = ''
  } catch (err) {
    $('list-note').textContent = `Cannot read the list: ${err.message}`
    return
  }
  followConversations()
  showConversationChoices()
  renderListNow()
}

/** Subscribes to the conversations on screen, so new and finished runs show up live. */
function followConversations() {
  const wanted = new Set(
    ui.listFilters.conversationId
      ? [ui.listFilters.conversationId]
      : ui.rows.map((r) => r.conversationId).filter(Boolean).slice(0, MAX_LIST_CONVERSATIONS),
  )
  for (const [id, sub] of ui.listSubs) {
    if (!wanted.has(id)) {
      sub.unsubscribe()
      ui.listSubs.delete(id)
    }
  }
  for (const id of wanted) {
    if (ui.listSubs.has(id)) continue
    const sub = live.subscribe({ conversationId: id })
    sub.on('event', (event) => {
      if (applyToList(ui.rows, event, ui.listFilters)) scheduleRender('list')
    })
    // A conversation cannot resume: after a reconnect, read the list again.
    sub.on('subscribed', (info) => info.mayHaveMissed && refreshList())
    ui.listSubs.set(id, sub)
  }
  $('list-note').textContent =
    wanted.size === 0 ? 'These executions have no conversation; refresh to update the list.' : ''
}

function showConversationChoices() {
  const ids = [...new Set(ui.rows.map((r) => r.conversationId).filter(Boolean))]
  $('conversations').replaceChildren(...ids.map((id) => h('option', { value: id })))
}

function renderListNow() {
  renderList($('executions'), ui.rows, ui.model?.executionId, (id) => {
    const hash = `#execution=${encodeURIComponent(id)}`
    // The same hash fires no hashchange: reopen directly (e.g. to leave a replay).
    if (location.hash === hash) openExecution(id)
    else location.hash = hash
  })
}

// ----------------------------------------------------------------- detail

function openFromHash() {
  const match = /execution=([^&]+)/.exec(location.hash)
  if (match) openExecution(decodeURIComponent(match[1]))
}

/** Shows one execution, live: every stored event first, then as they happen. */
function openExecution(executionId) {
  if (ui.model?.executionId !== executionId) forgetAgentFilters()
  closeDetail()
  ui.model = createExecution(executionId)
  $('placeholder').hidden = true
  $('execution').hidden = false
  Object.assign($('execution').dataset, { executionId, source: 'live', status: '', lastSeq: '0' })
  ui.detailSub = live.subscribe({ executionId, fromSeq: 0 })
  ui.detailSub.on('event', (event) => {
    if (applyEvent(ui.model, event)) scheduleRender()
  })
  // The cluster re-sequenced part of it (docs/cluster.md): read it again.
  ui.detailSub.on('resync', () => openExecution(executionId))
  showSubscribed($('execution'), ui.detailSub)
  openLog()
  scheduleRender()
}

function closeDetail() {
  ui.player?.stop()
  ui.player = null
  ui.detailSub?.unsubscribe()
  ui.logSub?.unsubscribe()
  ui.detailSub = ui.logSub = null
  showReplayState('off')
}

/** (Re)subscribes the log with its filters; the broker does the filtering. */
function openLog() {
  ui.logSub?.unsubscribe()
  log.clear()
  const { types, agentId, department } = ui.logFilters
  ui.logSub = logClient.subscribe({ executionId: ui.model.executionId, fromSeq: 0, types, agentId, department })
  showSubscribed($('log'), ui.logSub)
  ui.logSub.on('event', (event) => {
    if (log.add(event)) scheduleRender()
  })
}

/**
 * Records on `el` how the subscription was last confirmed: how often, from
 * which seq it resumed and how many events the broker replayed.
 */
function showSubscribed(el, sub) {
  el.dataset.subscribed = 'false'
  el.dataset.subscribedCount = '0'
  sub.on('subscribed', (info) => {
    el.dataset.subscribed = 'true'
    el.dataset.subscribedCount = String(Number(el.dataset.subscribedCount) + 1)
    el.dataset.resumedFrom = info.fromSeq ?? ''
    el.dataset.replayed = String(info.replayed)
  })
}

// ----------------------------------------------------------------- render

/**
 * Redraws at most every MIN_REDRAW_MS, in an animation frame, however fast
 * events come: a busy run sends hundreds a second, and redrawing charts that
 * often only costs battery.
 */
function scheduleRender(part = 'all') {
  if (part !== 'list') ui.detailDirty = true
  if (ui.framePending) return
  ui.framePending = true
  const wait = Math.max(0, ui.lastRender + MIN_REDRAW_MS - performance.now())
  setTimeout(() => requestAnimationFrame(renderNow), wait)
}

function renderNow() {
  ui.framePending = false
  ui.lastRender = performance.now()
  renderListNow()
  // Charts are redrawn only when their execution changed, not for every
  // event of the conversation the list follows.
  if (ui.model && ui.detailDirty) renderDetail(ui.model)
  ui.detailDirty = false
}

function renderDetail(model) {
  // Measured before any change, so that drawing forces no extra layout.
  const width = $('timeline').parentElement.clientWidth
  const qualityWidth = $('quality').parentElement.clientWidth
  const section = $('execution')
  section.dataset.status = model.status
  section.dataset.lastSeq = model.lastSeq
  $('execution-id').textContent = model.executionId
  $('execution-status').textContent = model.status
  $('execution-status').className = `status status-${model.status}`
  $('execution-prompt').textContent = [model.projectId, model.prompt].filter(Boolean).join(': ')
  renderTotals($('totals'), model)
  renderCards($('cards'), model)
  renderTimeline($('timeline'), model, width)
  renderQuality({ chart: $('quality'), legend: $('quality-legend'), failures: $('failed-checks') }, model, qualityWidth)
  updateFilterChoices(model)
  $('replay').querySelector('[data-action="replay"]').disabled = model.status === 'running' || !!ui.player
  log.follow()
}

function renderTotals(root, model) {
  const t = model.totals
  const end = model.completedMs ?? model.endMs
  const items = [
    ['duration', 'Duration', `${duration(end - model.startMs)}${model.completedMs ? '' : ' so far'}`],
    ['events', 'Events', count(model.events.size)],
    ['tools', 'Tool calls', `${count(t.toolCalls)}${t.toolFailures ? ` (${t.toolFailures} failed)` : ''}`],
  ]
  // Usage only when some event reported it: zeros would claim a free run.
  if (t.usageReports > 0) {
    items.push(
      ['tokens', 'Tokens', `${count(t.inputTokens)} in / ${count(t.outputTokens)} out`],
      ['cost', 'Cost', usd(t.costUsd)],
    )
  }
  if (t.models.size > 0) items.push(['models', 'Models', [...t.models].join(', ')])
  root.replaceChildren(
    ...items.map(([key, label, value]) =>
      h('div', { dataset: { total: key } }, h('dt', {}, label), h('dd', {}, value)),
    ),
  )
}

// ------------------------------------------------------------ log filters

function wireLogFilters() {
  const fieldset = $('type-filters')
  for (const type of EVENT_TYPES) {
    fieldset.append(
      h(
        'label',
        { class: 'chip' },
        h('input', { type: 'checkbox', value: type, dataset: { filter: 'type' } }),
        h('span', {}, type),
      ),
    )
  }
  $('log-filters').addEventListener('change', changeLogFilters)
  $('autoscroll').addEventListener('click', () => log.setPaused(!log.paused))
}

function changeLogFilters() {
  const form = $('log-filters')
  ui.logFilters = {
    types: [...form.querySelectorAll('[data-filter="type"]:checked')].map((el) => el.value),
    agentId: form.agent.value,
    department: form.department.value,
  }
  if (!ui.model) return
  if (ui.player) refilterLog()
  else openLog()
}

/** Agents and departments differ between executions: their filters do not carry over. */
function forgetAgentFilters() {
  const form = $('log-filters')
  form.agent.value = ''
  form.department.value = ''
  ui.logFilters = { ...ui.logFilters, agentId: '', department: '' }
}

/** In a replay there is no subscription: filter what was played so far. */
function refilterLog() {
  log.clear()
  for (const event of ui.model.events.values()) {
    if (matchesFilters(event, ui.logFilters)) log.add(event)
  }
  scheduleRender()
}

/** Keeps the agent and department choices in step with what has appeared. */
function updateFilterChoices(model) {
  const form = $('log-filters')
  syncOptions(form.agent, [...model.agents.values()].map((a) => [a.id, a.name]))
  syncOptions(form.department, [...model.departments.values()].map((d) => [d.key, d.name]))
}

function syncOptions(select, pairs) {
  const have = [...select.options].slice(1).map((o) => o.value)
  if (have.length === pairs.length && have.every((v, i) => v === pairs[i][0])) return
  const value = select.value
  select.replaceChildren(h('option', { value: '' }, 'any'), ...pairs.map(([v, label]) => h('option', { value: v }, label)))
  select.value = value
}

function showAutoScroll(paused, unseen) {
  const button = $('autoscroll')
  button.dataset.paused = String(paused)
  button.textContent = paused ? `Resume auto-scroll${unseen ? ` (${unseen} new)` : ''}` : 'Pause auto-scroll'
}

// ----------------------------------------------------------------- replay

function wireReplay() {
  $('replay').addEventListener('click', (ev) => {
    const action = ev.target.closest('[data-action]')?.dataset.action
    if (action === 'replay') startReplay()
    else if (action === 'play-1') ui.player?.play(1)
    else if (action === 'play-10') ui.player?.play(10)
    else if (action === 'pause') ui.player?.pause()
    else if (action === 'step') ui.player?.step()
    else if (action === 'exit') openExecution(ui.model.executionId)
  })
}

/** Plays the stored events into a fresh view; the live subscriptions stop meanwhile. */
async function startReplay() {
  const executionId = ui.model.executionId
  closeDetail()
  showReplayState('loading')
  let events
  try {
    events = await readHistory(httpBase, executionId, authedFetch)
  } catch (err) {
    $('replay-progress').textContent = `Cannot read the history: ${err.message}`
    return showReplayState('off')
  }
  ui.model = createExecution(executionId)
  $('execution').dataset.source = 'replay'
  log.clear()
  ui.player = new Player(events, {
    onEvent: (event) => {
      applyEvent(ui.model, event)
      if (matchesFilters(event, ui.logFilters)) log.add(event)
      scheduleRender()
    },
    onState: (state, position, total) => {
      showReplayState(state)
      $('replay-progress').textContent = `${position} / ${total} events`
    },
  })
  scheduleRender()
}

function showReplayState(state) {
  $('replay').dataset.replayState = state
  if (state === 'off') $('replay-progress').textContent = ''
}

start()
