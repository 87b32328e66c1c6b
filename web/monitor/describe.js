/**
 * One line of text per event, for the log and the tooltips, and the tooltip itself.
 * @module agent-events/monitor/describe
 */

import { h, brief, clock, duration } from './dom.js'

const SUMMARY = {
  'orchestration-start': (e) =>
    `${e.projectId ? `${e.projectId}: ` : ''}${brief(e.userPrompt ?? '', 100)}${
      e.departments ? ` [${e.departments.join(', ')}]` : ''
    }`,
  'orchestration-complete': (e) => `${e.status ?? 'success'}${e.result ? ` ${brief(e.result, 80)}` : ''}`,
  'department-start': (e) =>
    `${e.departmentName ?? e.department}${e.relevance !== undefined ? `, relevance ${e.relevance}` : ''}`,
  'department-complete': (e) =>
    `${e.department}${e.qualityScore !== undefined ? `, quality ${e.qualityScore}` : ''}${
      e.executionTime !== undefined ? ` in ${duration(e.executionTime)}` : ''
    }`,
  'agent-start': (e) => `${e.agentName ?? e.agentId}: ${brief(e.prompt ?? '', 90)}`,
  'agent-thinking': (e) => brief(e.thought, 120),
  'agent-complete': (e) =>
    e.success === false ? `failed: ${e.error ?? 'no reason given'}` : `done ${brief(e.output ?? '', 80)}`,
  'tool-call': (e) => `${e.toolName}(${brief(e.input ?? '', 80)})`,
  'tool-result': (e) =>
    e.success === false || e.error
      ? `${e.toolName} failed: ${e.error ?? ''}`
      : `${e.toolName} → ${brief(e.output ?? '', 80)}${e.executionTime !== undefined ? ` (${duration(e.executionTime)})` : ''}`,
  'quality-check': (e) =>
    `${e.qualityScore}${e.threshold !== undefined ? ` vs bar ${e.threshold}` : ''} ${
      e.passed === false ? 'FAILED' : 'passed'
    }${e.issues?.length ? `: ${e.issues.join('; ')}` : ''}`,
  'review-status': (e) =>
    `${e.status}${e.specialistId ? ` for ${e.specialistId}` : ''}${e.feedback ? `: ${brief(e.feedback, 90)}` : ''}`,
}

/** What happened, in one line. */
export function summarize(event) {
  return (SUMMARY[event.type] ?? ((e) => brief(e, 100)))(event)
}

/** Whether an event reports a failure: shown in the failure colour everywhere. */
export function isFailure(event) {
  return (
    ((event.type === 'tool-result' || event.type === 'agent-complete') &&
      (event.success === false || Boolean(event.error))) ||
    (event.type === 'quality-check' && event.passed === false) ||
    (event.type === 'review-status' && event.status === 'rejected') ||
    (event.type === 'orchestration-complete' && event.status === 'failed')
  )
}

/**
 * Shows a tooltip for any element under `root` with `data-seq` (and
 * optionally `data-result-seq`), describing those events of the current model.
 * @param {HTMLElement} root
 * @param {HTMLElement} tip the tooltip element (positioned fixed)
 * @param {() => {events: Map<number, object>}|null} currentModel
 */
export function attachTooltip(root, tip, currentModel) {
  root.addEventListener('mouseover', (ev) => {
    const target = ev.target.closest?.('[data-seq]')
    const model = currentModel()
    if (!target || !model) return hide(tip)
    const seqs = [target.dataset.seq, target.dataset.resultSeq].filter(Boolean).map(Number)
    const events = seqs.map((seq) => model.events.get(seq)).filter(Boolean)
    if (events.length === 0) return hide(tip)
    tip.replaceChildren(...events.map(eventBlock))
    tip.hidden = false
    place(tip, ev)
  })
  root.addEventListener('mousemove', (ev) => {
    if (!tip.hidden) place(tip, ev)
  })
  root.addEventListener('mouseleave', () => hide(tip))
}

function eventBlock(event) {
  return h(
    'div',
    { class: `tip-event${isFailure(event) ? ' failure' : ''}` },
    h('strong', {}, `#${event.seq} ${event.type}`),
    ' ',
    h('span', { class: 'muted' }, clock(Date.parse(event.timestamp))),
    event.agentId && h('div', { class: 'muted' }, event.agentId),
    h('div', {}, summarize(event)),
  )
}

function place(tip, ev) {
  const pad = 14
  const { innerWidth, innerHeight } = window
  const rect = tip.getBoundingClientRect()
  const x = Math.min(ev.clientX + pad, innerWidth - rect.width - pad)
  const y = ev.clientY + pad + rect.height > innerHeight ? ev.clientY - rect.height - pad : ev.clientY + pad
  tip.style.setProperty('left', `${Math.max(pad, x)}px`)
  tip.style.setProperty('top', `${Math.max(pad, y)}px`)
}

function hide(tip) {
  tip.hidden = true
}
