/**
 * The analytics page: `GET /api/analytics` for the chosen window, drawn as
 * plain SVG charts, fetched again every few seconds (every 15 s for windows
 * over an hour) so it stays live.
 *
 * Why polling rather than a subscription: the figures are aggregates over
 * every execution in the window, which no single subscription covers; the
 * store computes them in one pass, so a re-fetch every few seconds is cheap.
 * @module agent-events/analytics
 */

import { h, s, duration, count } from './monitor/dom.js'

/** How often the figures are fetched again: often enough to read as live. */
const REFRESH_MS = 3000
/** For windows longer than an hour, whose scan costs more and whose picture moves slowly. */
const SLOW_REFRESH_MS = 15_000
/** The preset windows, in milliseconds. */
const WINDOWS = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000 }
/** Buckets the events-per-second chart aims for. */
const BUCKETS = 60
/** Execution statuses in the order of a run's life. */
const STATUSES = ['running', 'success', 'failed', 'partial']
/** Drawing widths of the charts' viewBoxes; CSS scales them to the panel. */
const BAR_WIDTH = 460
const RATE_WIDTH = 1080

const $ = (id) => document.getElementById(id)

/**
 * A token for a broker with auth on, from the page's `?token=`, as on the
 * monitor (the page sets no-referrer, so it goes nowhere else).
 */
const token = new URLSearchParams(location.search).get('token') || undefined

const state = {
  window: '1h',
  from: '',
  to: '',
  conversation: '',
  department: '',
  /** Numbers requests, so that a late answer to an older one is dropped. */
  request: 0,
  renders: 0,
  timer: 0,
}

// ------------------------------------------------------------------ start

function start() {
  readUrl()
  const form = $('window')
  form.elements.window.value = state.window
  form.elements.from.value = state.from
  form.elements.to.value = state.to
  form.elements.conversation.value = state.conversation
  form.elements.department.value = state.department
  form.dataset.window = state.window
  form.elements.window.addEventListener('change', () => {
    form.dataset.window = form.elements.window.value
    if (form.elements.window.value === 'custom') {
      // Starts from the window on screen, so "custom" is a small edit away.
      const { from, to } = range()
      form.elements.from.value = localInput(from)
      form.elements.to.value = localInput(to)
      return
    }
    apply()
  })
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    apply()
  })
  linkMonitor()
  refresh()
}

/** Takes the form's values, puts them in the URL, and fetches. */
function apply() {
  const form = $('window').elements
  state.window = form.window.value
  state.from = form.from.value
  state.to = form.to.value
  state.conversation = form.conversation.value.trim()
  state.department = form.department.value.trim()
  writeUrl()
  refresh()
}

function readUrl() {
  const params = new URLSearchParams(location.search)
  const window = params.get('window') ?? '1h'
  state.window = window in WINDOWS || window === 'custom' ? window : '1h'
  state.from = params.get('from') ?? ''
  state.to = params.get('to') ?? ''
  state.conversation = params.get('conversation') ?? ''
  state.department = params.get('department') ?? ''
}

/** The page's state in its URL, so a view can be bookmarked or shared. */
function writeUrl() {
  const params = new URLSearchParams()
  if (token) params.set('token', token)
  params.set('window', state.window)
  if (state.window === 'custom') {
    params.set('from', state.from)
    params.set('to', state.to)
  }
  if (state.conversation) params.set('conversation', state.conversation)
  if (state.department) params.set('department', state.department)
  history.replaceState(null, '', `?${params}`)
  linkMonitor()
}

/** The monitor link carries the token and the conversation along. */
function linkMonitor() {
  const params = new URLSearchParams()
  if (token) params.set('token', token)
  if (state.conversation) params.set('conversation', state.conversation)
  const query = String(params)
  $('to-monitor').href = query ? `/?${query}` : '/'
}

// ------------------------------------------------------------------ fetching

/** The window to ask for: a preset ends now (to the second); custom is as typed, in local time. */
function range() {
  if (state.window === 'custom') return { from: new Date(state.from), to: new Date(state.to) }
  const to = new Date(Math.floor(Date.now() / 1000) * 1000)
  return { from: new Date(to.getTime() - WINDOWS[state.window]), to }
}

/** `2025-10-01T12:00:00` in local time, for a datetime-local input. */
function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0')
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
}

async function refresh() {
  clearTimeout(state.timer)
  const request = ++state.request
  const { from, to } = range()
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
    showState('error', 'choose both ends of the custom window')
    return
  }
  const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() })
  query.set('bucketSecs', String(Math.max(1, Math.ceil((to - from) / 1000 / BUCKETS))))
  if (state.conversation) query.set('conversationId', state.conversation)
  if (state.department) query.set('department', state.department)
  showState('loading', 'updating…')
  try {
    const response = await fetch(`api/analytics?${query}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    })
    const body = await response.json()
    if (request !== state.request) return
    if (!response.ok) throw new Error(body?.error?.message ?? `HTTP ${response.status}`)
    render(body)
    showState('ok', `updated ${new Date().toLocaleTimeString()}`)
  } catch (err) {
    if (request !== state.request) return
    showState('error', err.message)
  }
  // The next fetch is scheduled after this one ends, so they never pile up.
  state.timer = setTimeout(refresh, to - from > WINDOWS['1h'] ? SLOW_REFRESH_MS : REFRESH_MS)
}

function showState(name, text) {
  const badge = $('refresh')
  badge.dataset.state = name
  // The badge reuses the monitor's connection colours.
  badge.dataset.connectionState = { ok: 'open', loading: 'connecting', error: 'closed' }[name]
  badge.querySelector('.text').textContent = text
}

// ------------------------------------------------------------------ drawing

/** `—` for a figure that has no value (no values, no ratio). */
const maybe = (format) => (value) => (value === null || value === undefined ? '—' : format(value))
const percent = maybe((ratio) => `${(ratio * 100).toFixed(ratio > 0 && ratio < 0.1 ? 1 : 0)}%`)
const ms = maybe(duration)
const number = maybe(count)

function render(a) {
  state.renders += 1
  const main = document.querySelector('main.analytics')
  main.dataset.renders = String(state.renders)
  main.dataset.from = a.from
  main.dataset.to = a.to
  main.dataset.bucketSecs = String(a.bucketSecs)
  const filters = [a.conversationId && `conversation ${a.conversationId}`, a.department && `department ${a.department}`]
  $('window-note').textContent = [
    `${new Date(a.from).toLocaleString()} – ${new Date(a.to).toLocaleString()}`,
    `buckets of ${a.bucketSecs} s`,
    ...filters.filter(Boolean),
  ].join(' · ')
  renderTiles(a)
  renderRate($('rate'), a.events.series, a.bucketSecs)
  barChart($('statuses'), STATUSES.map((status) => ({
    key: status, label: status, value: a.executions.byStatus[status] ?? 0,
    text: number(a.executions.byStatus[status] ?? 0), cls: `status-bar-${status}`,
  })))
  barChart($('types'), Object.entries(a.events.byType)
    .sort((x, y) => y[1] - x[1])
    .map(([type, n]) => ({ key: type, label: type, value: n, text: number(n) })))
  barChart($('tools'), a.tools.byTool.map((t) => ({
    key: t.toolName,
    label: t.toolName,
    value: t.calls,
    text: `${number(t.calls)} · ${percent(t.failureRate)} failed · ${ms(t.latencyMs.p50)} / ${ms(t.latencyMs.p95)}`,
    cls: t.failures > 0 ? 'has-failures' : '',
  })))
  barChart($('agents'), a.agents.map((agent) => ({
    key: agent.agentId, label: agent.agentId, value: agent.calls, text: number(agent.calls),
  })))
  barChart($('quality'), Object.entries(a.quality).map(([department, q]) => ({
    key: department,
    label: department,
    value: q.avg,
    range: [q.min, q.max],
    text: `${q.avg.toFixed(1)} · ${q.min}–${q.max} · ${percent(q.shareBelowThreshold)} below`,
    cls: q.belowThreshold > 0 ? 'has-failures' : '',
  })), { max: 100 })
  barChart($('rounds'), Object.entries(a.reviews.subjectsByRounds).map(([rounds, n]) => ({
    key: rounds,
    label: rounds === '1' ? '1 round' : `${rounds} rounds`,
    value: n,
    text: number(n),
  })))
}

function renderTiles(a) {
  const e = a.executions
  const tiles = [
    ['executions', 'Executions', e.total, number],
    ['running', 'Running', e.byStatus.running, number],
    ['duration-p50', 'Duration p50', e.durationMs.p50, ms],
    ['duration-p95', 'Duration p95', e.durationMs.p95, ms],
    ['events', 'Events', a.events.total, number],
    ['tool-calls', 'Tool calls', a.tools.calls, number],
    ['failure-rate', 'Tool failures', a.tools.failureRate, percent],
    ['latency-p50', 'Tool latency p50', a.tools.latencyMs.p50, ms],
    ['latency-p95', 'Tool latency p95', a.tools.latencyMs.p95, ms],
    ['first-pass', 'Approved first pass', a.reviews.firstPassRate, percent],
    ['revision-rounds', 'Revision rounds', a.reviews.revisionRounds, number],
  ]
  $('tiles').replaceChildren(...tiles.map(([key, label, value, format]) =>
    h('div', { dataset: { figure: key, value: value ?? '' } }, h('dt', {}, label), h('dd', {}, format(value)))))
}

/**
 * Horizontal bars, one row each: `{key, label, value, text, cls?, range?}`;
 * `range` adds a min–max whisker. Bars scale to `max`, or the largest value.
 */
function barChart(svg, rows, { max } = {}) {
  const rowHeight = 24
  const left = 165
  const right = 205
  const height = Math.max(rows.length, 1) * rowHeight + 6
  svg.replaceChildren()
  svg.setAttribute('viewBox', `0 0 ${BAR_WIDTH} ${height}`)
  svg.dataset.rows = String(rows.length)
  if (rows.length === 0) {
    svg.append(s('text', { x: 6, y: 18, class: 'empty' }, 'nothing in this window'))
    return
  }
  const top = max ?? Math.max(...rows.map((r) => r.value), 1)
  const scale = (v) => ((BAR_WIDTH - left - right) * v) / top
  rows.forEach((row, i) => {
    const y = 3 + i * rowHeight
    const width = scale(row.value)
    const whisker = row.range && s('line', {
      x1: left + scale(row.range[0]), x2: left + scale(row.range[1]),
      y1: y + rowHeight / 2, y2: y + rowHeight / 2, class: 'whisker',
    })
    svg.append(s('g', { class: `bar ${row.cls ?? ''}`, dataset: { key: row.key, value: row.value } },
      s('title', {}, `${row.label}: ${row.text}`),
      s('text', { x: left - 8, y: y + 15, 'text-anchor': 'end', class: 'bar-name' }, clip(row.label)),
      s('rect', { x: left, y: y + 4, width: row.value > 0 ? Math.max(width, 2) : 0, height: rowHeight - 8, rx: 2 }),
      whisker,
      s('text', { x: left + Math.max(width, row.range ? scale(row.range[1]) : 0) + 6, y: y + 15, class: 'bar-value' }, row.text)))
  })
}

/** Long names (agent IDs) cut to what the label column holds; the row's title has them whole. */
function clip(label) {
  return label.length > 24 ? `${label.slice(0, 23)}…` : label
}

/** Events per second as columns over the window, with its scale and times. */
function renderRate(svg, series, bucketSecs) {
  const height = 190
  const [left, right, top, bottom] = [48, 10, 10, 24]
  svg.replaceChildren()
  svg.setAttribute('viewBox', `0 0 ${RATE_WIDTH} ${height}`)
  svg.dataset.buckets = String(series.length)
  svg.dataset.total = String(series.reduce((sum, b) => sum + b.count, 0))
  const peak = Math.max(...series.map((b) => b.perSecond), 0)
  const ceiling = peak > 0 ? niceCeiling(peak) : 1
  const plotWidth = RATE_WIDTH - left - right
  const plotHeight = height - top - bottom
  const step = plotWidth / Math.max(series.length, 1)
  const y = (v) => top + plotHeight - (plotHeight * v) / ceiling
  for (const v of [0, ceiling / 2, ceiling]) {
    svg.append(
      s('line', { x1: left, x2: RATE_WIDTH - right, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: left - 6, y: y(v) + 3, 'text-anchor': 'end', class: 'tick' }, rate(v)),
    )
  }
  series.forEach((bucket, i) => {
    if (bucket.count === 0) return
    svg.append(s('rect', {
      x: left + i * step + step * 0.1, y: y(bucket.perSecond),
      width: Math.max(step * 0.8, 1), height: top + plotHeight - y(bucket.perSecond),
      class: 'rate-bar', dataset: { bucket: i, count: bucket.count },
    }, s('title', {}, `${new Date(bucket.start).toLocaleTimeString()}: ${count(bucket.count)} events, ${rate(bucket.perSecond)}/s`)))
  })
  const labelled = series.length > 1 ? [0, Math.floor(series.length / 2), series.length - 1] : [0]
  for (const i of labelled) {
    if (!series[i]) continue
    const anchor = i === 0 ? 'start' : i === series.length - 1 ? 'end' : 'middle'
    const x = left + i * step + (anchor === 'end' ? step : anchor === 'middle' ? step / 2 : 0)
    const at = new Date(series[i].start)
    const text = bucketSecs >= 3600 ? at.toLocaleString([], { hour: '2-digit', minute: '2-digit', day: 'numeric', month: 'short' }) : at.toLocaleTimeString()
    svg.append(s('text', { x, y: height - 6, 'text-anchor': anchor, class: 'tick' }, text))
  }
  if (peak === 0) svg.append(s('text', { x: left + 8, y: top + 18, class: 'empty' }, 'no events in this window'))
}

/** 1, 2 or 5 times a power of ten, at or above `v`: round figures for the axis. */
function niceCeiling(v) {
  const power = 10 ** Math.floor(Math.log10(v))
  return [1, 2, 5, 10].map((m) => m * power).find((c) => c >= v)
}

function rate(v) {
  if (v === 0) return '0'
  return v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)
}

start()
