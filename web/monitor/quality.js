/**
 * Quality scores per department over time, each with its threshold as a
 * dashed line; failed checks are hollow points in the failure colour and are
 * listed with their issues below the chart.
 * @module agent-events/monitor/quality
 */

import { h, s, departmentColour } from './dom.js'
import { timeScale, timeAxis } from './axis.js'

const HEIGHT = 220
const MARGIN = { top: 22, right: 56, bottom: 10, left: 40 }
/** Vertical room one threshold label needs. */
const LABEL_GAP = 11

/**
 * @param {{chart: SVGSVGElement, legend: HTMLElement, failures: HTMLElement}} where
 *   the chart, its department legend, and the list of failed checks
 * @param {number} boxWidth the chart's width, measured by the caller once per frame
 */
export function renderQuality({ chart: svg, legend, failures }, model, boxWidth) {
  const width = Math.max(boxWidth, 480)
  const scale = timeScale(model, MARGIN.left, width - MARGIN.right)
  const bottom = HEIGHT - MARGIN.bottom
  const low = scoreFloor(model)
  const y = (score) => MARGIN.top + ((100 - score) / (100 - low)) * (bottom - MARGIN.top)
  svg.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`)
  svg.setAttribute('height', HEIGHT)
  const byDepartment = groupByDepartment(model.quality)
  const labelY = thresholdLabels(model, [...byDepartment.keys()], y)
  svg.replaceChildren(
    timeAxis(scale, MARGIN.top, bottom, 12),
    scoreGrid(y, low, MARGIN.left, width - MARGIN.right),
    ...[...byDepartment].map(([key, checks]) =>
      series(key, checks, departmentColour(model, key), model.departments.get(key)?.threshold, scale, y, labelY.get(key)),
    ),
  )
  if (model.quality.length === 0) {
    svg.append(s('text', { x: MARGIN.left + 8, y: MARGIN.top + 20, class: 'empty' }, 'No quality check yet.'))
  }
  renderLegend(legend, model, byDepartment)
  renderFailures(failures, model)
}

function groupByDepartment(checks) {
  const groups = new Map()
  for (const check of checks) {
    const key = check.department ?? '—'
    if (!groups.has(key)) groups.set(key, [])
    groups.get(key).push(check)
  }
  for (const list of groups.values()) list.sort((a, b) => a.ms - b.ms || a.seq - b.seq)
  return groups
}

/** Label heights for the threshold lines, pushed apart so close bars stay legible. */
function thresholdLabels(model, keys, y) {
  const withBar = keys
    .map((key) => [key, model.departments.get(key)?.threshold])
    .filter(([, bar]) => bar !== undefined)
    .sort((a, b) => y(a[1]) - y(b[1]))
  const labels = new Map()
  let previous = -Infinity
  for (const [key, bar] of withBar) {
    const at = Math.max(y(bar) + 4, previous + LABEL_GAP)
    labels.set(key, at)
    previous = at
  }
  return labels
}

/**
 * The bottom of the score axis: ten below the lowest score or bar, rounded
 * down to a ten. Scores crowd near their bars, and a fixed 0–100 axis would
 * squeeze them into a few pixels.
 */
function scoreFloor(model) {
  const values = model.quality.flatMap((c) => [c.score, c.threshold]).filter((v) => v !== undefined)
  if (values.length === 0) return 0
  return Math.max(0, Math.floor((Math.min(...values) - 10) / 10) * 10)
}

function scoreGrid(y, low, left, right) {
  const step = 100 - low > 50 ? 20 : 10
  const scores = []
  for (let score = 100; score >= low; score -= step) scores.push(score)
  return s(
    'g',
    { class: 'axis' },
    scores.map((score) => [
      s('line', { x1: left, x2: right, y1: y(score), y2: y(score), class: 'grid' }),
      s('text', { x: left - 6, y: y(score) + 4, class: 'tick', 'text-anchor': 'end' }, score),
    ]),
  )
}

function series(key, checks, colour, threshold, scale, y, labelY) {
  const points = checks.map((c) => `${scale.x(c.ms)},${y(c.score)}`).join(' ')
  return s(
    'g',
    { class: 'series', dataset: { department: key } },
    threshold !== undefined && [
      s('line', {
        class: 'threshold',
        x1: scale.left,
        x2: scale.right,
        y1: y(threshold),
        y2: y(threshold),
        stroke: colour,
        dataset: { threshold },
      }),
      s('text', { x: scale.right + 4, y: labelY, class: 'bar-label', fill: colour }, `bar ${threshold}`),
    ],
    checks.length > 1 && s('polyline', { points, fill: 'none', stroke: colour, class: 'line' }),
    checks.map((c) =>
      s('circle', {
        class: c.passed ? 'point' : 'point failed',
        cx: scale.x(c.ms),
        cy: y(c.score),
        r: c.passed ? 4 : 5,
        fill: c.passed ? colour : undefined,
        dataset: { seq: c.seq, qualityPoint: c.passed ? 'passed' : 'failed', department: key },
      }),
    ),
  )
}

function renderLegend(root, model, byDepartment) {
  root.replaceChildren(
    ...[...byDepartment.keys()].map((key) =>
      h(
        'li',
        { style: { '--dept': departmentColour(model, key) } },
        h('span', { class: 'swatch', 'aria-hidden': 'true' }),
        model.departments.get(key)?.name ?? key,
      ),
    ),
  )
}

function renderFailures(root, model) {
  const failed = model.quality.filter((c) => !c.passed)
  root.replaceChildren(
    ...failed.map((c) =>
      h(
        'li',
        { dataset: { seq: c.seq, failedCheck: '' } },
        h('strong', {}, `${c.score}`),
        c.threshold !== undefined ? ` < bar ${c.threshold}` : ' failed',
        ' · ',
        model.agents.get(c.agentId)?.name ?? c.agentId ?? c.department ?? '',
        c.issues.length > 0 && h('ul', { class: 'issues' }, c.issues.map((issue) => h('li', {}, issue))),
      ),
    ),
  )
  if (failed.length === 0) root.append(h('li', { class: 'empty' }, 'No failed check.'))
}
