/**
 * The executions list: recent and running executions from
 * `GET /api/executions`, kept live by subscribing to their conversations.
 * @module agent-events/monitor/list
 */

import { h, clock } from './dom.js'

/** Executions the list shows. */
const LIMIT = 50

/**
 * Reads the list from the broker.
 * @param {string} httpBase
 * @param {{conversationId?: string, status?: string}} filters
 * @returns {Promise<object[]>}
 */
export async function fetchExecutions(httpBase, filters, fetchImpl = fetch) {
  const query = new URLSearchParams({ limit: String(LIMIT) })
  if (filters.conversationId) query.set('conversationId', filters.conversationId)
  if (filters.status) query.set('status', filters.status)
  const response = await fetchImpl(`${httpBase}api/executions?${query}`)
  if (!response.ok) throw new Error(`GET /api/executions: HTTP ${response.status}`)
  return (await response.json()).executions
}

/**
 * Folds a live event into the list's rows; returns whether anything changed.
 * New executions (their `orchestration-start`) go on top; a completion sets
 * the status.
 * @param {object[]} rows as from {@link fetchExecutions}, newest first
 * @param {{status?: string}} filters the list's status filter
 */
export function applyToList(rows, event, filters) {
  let row = rows.find((r) => r.executionId === event.executionId)
  if (!row) {
    if (filters.status && filters.status !== 'running') return false
    row = {
      executionId: event.executionId,
      conversationId: event.conversationId,
      status: 'running',
      startedAt: event.timestamp,
      endedAt: null,
      eventCount: 0,
      lastSeq: 0,
    }
    rows.unshift(row)
    if (rows.length > LIMIT) rows.pop()
  }
  if (event.seq <= row.lastSeq) return false
  row.lastSeq = event.seq
  row.eventCount = Math.max(row.eventCount + 1, event.seq)
  if (event.type === 'orchestration-complete') {
    row.status = event.status ?? 'success'
    row.endedAt = event.timestamp
  }
  return true
}

/**
 * Draws the rows as buttons that open an execution. Rows are kept and
 * updated in place, never rebuilt: a button replaced between mouse-down and
 * mouse-up would swallow the click, and rows change many times a second.
 * @param {HTMLElement} root
 * @param {object[]} rows
 * @param {string|undefined} selected the open execution
 * @param {(executionId: string) => void} onOpen
 */
export function renderList(root, rows, selected, onOpen) {
  const items = keptItems(root)
  const wanted = rows.map((row) => {
    if (!items.has(row.executionId)) items.set(row.executionId, item(row.executionId, onOpen))
    const li = items.get(row.executionId)
    update(li.firstElementChild, row, selected)
    return li
  })
  const ids = new Set(rows.map((r) => r.executionId))
  for (const id of items.keys()) if (!ids.has(id)) items.delete(id)
  if (wanted.length === 0) wanted.push(h('li', { class: 'empty' }, 'No execution matches.'))
  const shown = [...root.children]
  if (shown.length !== wanted.length || shown.some((el, i) => el !== wanted[i])) root.replaceChildren(...wanted)
}

/** The list items of `root` by execution ID, kept across renders. */
function keptItems(root) {
  root.agentEventsItems ??= new Map()
  return root.agentEventsItems
}

function item(executionId, onOpen) {
  return h(
    'li',
    {},
    h(
      'button',
      { type: 'button', class: 'execution', dataset: { executionId }, onclick: () => onOpen(executionId) },
      h('span', { class: 'status' }),
      h('span', { class: 'id' }, executionId),
      h('span', { class: 'meta' }),
    ),
  )
}

function update(button, row, selected) {
  const [status, , meta] = button.children
  const text = `${clock(Date.parse(row.startedAt))} · ${row.eventCount} events${
    row.conversationId ? ` · ${row.conversationId}` : ''
  }`
  button.dataset.status = row.status
  button.dataset.lastSeq = String(row.lastSeq)
  button.dataset.conversationId = row.conversationId ?? ''
  if (row.executionId === selected) button.setAttribute('aria-current', 'true')
  else button.removeAttribute('aria-current')
  if (status.textContent !== row.status) {
    status.textContent = row.status
    status.className = `status status-${row.status}`
  }
  if (meta.textContent !== text) meta.textContent = text
}
