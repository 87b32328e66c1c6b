/**
 * The agent activity timeline: one lane per agent over the execution's time.
 * A lane shows the agent's runs (start to complete), its thinking steps,
 * its tool calls as bars from call to result (failures in the failure
 * colour), completions, and the reviews of its work. Every mark carries the
 * `data-seq` of its event, which the tooltip reads.
 * @module agent-events/monitor/timeline
 */

import { s, departmentColour } from './dom.js'
import { lanes } from './model.js'
import { timeScale, timeAxis } from './axis.js'

const LABEL_WIDTH = 200
const LANE_HEIGHT = 24
const AXIS_HEIGHT = 22
const PAD_RIGHT = 16

/**
 * Draws the timeline of `model` into `svg`.
 * @param {SVGSVGElement} svg
 * @param {number} boxWidth the width to fill, measured by the caller once per frame
 */
export function renderTimeline(svg, model, boxWidth) {
  const agents = lanes(model)
  const width = Math.max(boxWidth, 480)
  const height = AXIS_HEIGHT + Math.max(agents.length, 1) * LANE_HEIGHT + 4
  const scale = timeScale(model, LABEL_WIDTH, width - PAD_RIGHT)
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`)
  svg.setAttribute('height', height)
  const laneGroups = agents.map((agent, i) => lane(model, agent, AXIS_HEIGHT + i * LANE_HEIGHT, scale, i))
  svg.replaceChildren(timeAxis(scale, AXIS_HEIGHT - 4, height, 12), ...laneGroups)
  if (agents.length === 0) {
    svg.append(s('text', { x: 8, y: AXIS_HEIGHT + 16, class: 'empty' }, 'No agent activity yet.'))
  }
}

function lane(model, agent, top, scale, index) {
  const colour = departmentColour(model, agent.department)
  const mid = top + LANE_HEIGHT / 2
  const end = model.endMs ?? model.startMs
  return s(
    'g',
    { class: 'lane', dataset: { lane: '', agentId: agent.id, department: agent.department ?? '' } },
    s('rect', { x: 0, y: top, width: scale.right + PAD_RIGHT, height: LANE_HEIGHT, class: index % 2 ? 'stripe odd' : 'stripe' }),
    s('rect', { x: 0, y: top + 3, width: 4, height: LANE_HEIGHT - 6, fill: colour }),
    s('text', { x: 10, y: mid + 4, class: 'lane-label' }, s('title', {}, agent.id), truncate(agent.name, 28)),
    agent.runs.map((run) =>
      s('rect', {
        class: 'run',
        x: scale.x(run.startMs),
        y: top + 3,
        width: Math.max(scale.x(run.endMs ?? end) - scale.x(run.startMs), 2),
        height: LANE_HEIGHT - 6,
        rx: 3,
        fill: colour,
        stroke: colour,
        dataset: { seq: run.startSeq, ...(run.endSeq ? { resultSeq: run.endSeq } : {}) },
      }),
    ),
    // Thinking under tool bars, completions and reviews over them: a bar is
    // the thing to hover, a dot beside it must not swallow the pointer.
    agent.marks.filter((m) => m.kind === 'thinking').map((mark) => markShape(mark, scale.x(mark.ms), mid, colour)),
    agent.tools.map((tool) =>
      s('rect', {
        class: `tool ${tool.resultSeq === undefined ? 'tool-pending' : tool.failed ? 'tool-failed' : 'tool-ok'}`,
        x: scale.x(tool.callMs),
        y: mid - 4,
        width: Math.max(scale.x(tool.resultMs ?? end) - scale.x(tool.callMs), 4),
        height: 8,
        rx: 2,
        dataset: { seq: tool.callSeq, ...(tool.resultSeq ? { resultSeq: tool.resultSeq } : {}), tool: tool.failed ? 'failed' : 'ok' },
      }),
    ),
    agent.marks.filter((m) => m.kind !== 'thinking').map((mark) => markShape(mark, scale.x(mark.ms), mid, colour)),
  )
}

function markShape(mark, x, y, colour) {
  const dataset = { seq: mark.seq, mark: mark.kind }
  if (mark.kind === 'thinking') {
    return s('circle', { class: 'thinking', cx: x, cy: y, r: 3, fill: colour, dataset })
  }
  if (mark.kind === 'complete') {
    const d = `M${x} ${y - 6} L${x + 6} ${y} L${x} ${y + 6} L${x - 6} ${y} Z`
    return s('path', { class: mark.failed ? 'complete failed' : 'complete', d, dataset })
  }
  // A review: a small flag above the lane's centre, coloured by verdict.
  const d = `M${x} ${y + 7} L${x} ${y - 8} L${x + 8} ${y - 5} L${x} ${y - 2}`
  return s('path', { class: `review review-${mark.status}`, d, dataset })
}

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}
