/**
 * Department progress cards: state, relevance, agents, quality and time.
 * @module agent-events/monitor/cards
 */

import { h, duration, departmentColour } from './dom.js'
import { departmentState, departmentScore, departmentTime, rejectedCount } from './model.js'

const STATE_LABELS = {
  pending: 'pending',
  running: 'running',
  'in-review': 'in review',
  'revision-requested': 'revision requested',
  approved: 'approved',
  complete: 'complete',
}

/**
 * Draws one card per department into `root`.
 * @param {HTMLElement} root
 * @param {ReturnType<import('./model.js').createExecution>} model
 */
export function renderCards(root, model) {
  const cards = [...model.departments.values()].map((dept) => card(model, dept))
  root.replaceChildren(...cards)
  if (cards.length === 0) root.append(h('p', { class: 'empty' }, 'No department has started yet.'))
}

function card(model, dept) {
  const state = departmentState(dept)
  const score = departmentScore(dept)
  const rejected = rejectedCount(dept)
  return h(
    'article',
    {
      class: 'card',
      dataset: { department: dept.key, state },
      style: { '--dept': departmentColour(model, dept.key) },
    },
    h(
      'header',
      {},
      h('span', { class: 'swatch', 'aria-hidden': 'true' }),
      h('h3', {}, dept.name),
      h('span', { class: `state state-${state}` }, STATE_LABELS[state]),
    ),
    h(
      'dl',
      {},
      h('dt', {}, 'Relevance'),
      h('dd', {}, relevance(dept.relevance)),
      h('dt', {}, 'Quality'),
      h('dd', { class: scoreClass(score, dept.threshold) }, scoreText(score, dept.threshold)),
      h('dt', {}, 'Time'),
      h('dd', {}, duration(departmentTime(dept))),
    ),
    rejected > 0 && h('p', { class: 'rejected' }, `${rejected} deliverable${rejected > 1 ? 's' : ''} rejected`),
    agentList(model, dept),
  )
}

function relevance(value) {
  if (value === undefined) return '—'
  const bar = h('meter', { min: 0, max: 1, value, title: value.toFixed(2) })
  return h('span', { class: 'relevance' }, bar, ` ${value.toFixed(2)}`)
}

function scoreText(score, threshold) {
  if (score === undefined) return '—'
  const rounded = Math.round(score * 10) / 10
  return threshold === undefined ? `${rounded}` : `${rounded} (bar ${threshold})`
}

function scoreClass(score, threshold) {
  if (score === undefined || threshold === undefined) return undefined
  return score >= threshold ? 'pass' : 'fail'
}

function agentList(model, dept) {
  const agents = [...model.agents.values()].filter((a) => a.department === dept.key)
  const items = agents.map((agent) => {
    const isHead = agent.id === dept.headId
    const phase = isHead ? 'head' : (dept.specialists.get(agent.id) ?? 'working')
    const running = agent.runs.some((r) => r.endMs === undefined)
    return h(
      'li',
      { dataset: { agentId: agent.id, phase }, title: agent.id },
      h('span', { class: `dot ${running ? 'dot-running' : 'dot-idle'}`, 'aria-hidden': 'true' }),
      agent.name,
      isHead ? h('span', { class: 'tag' }, 'head') : h('span', { class: `tag phase-${phase}` }, phase.replace('-', ' ')),
    )
  })
  return h('ul', { class: 'agents' }, items)
}
