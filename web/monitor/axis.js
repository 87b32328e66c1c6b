/**
 * The time axis shared by the timeline and the quality chart: both are drawn
 * over the execution's own timestamps, so a replay looks like the live run.
 * @module agent-events/monitor/axis
 */

import { s } from './dom.js'

/** Tick spacings to choose from, in ms. */
const STEPS = [100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000]

/** Most ticks an axis shows. */
const MAX_TICKS = 8

/**
 * A scale from the model's time span onto [left, right] pixels.
 * @returns {{x: (ms: number) => number, start: number, span: number, left: number, right: number}}
 */
export function timeScale(model, left, right) {
  const start = model.startMs ?? 0
  // A single event still gets a visible span.
  const span = Math.max((model.endMs ?? start) - start, 1)
  const x = (ms) => left + ((ms - start) / span) * (right - left)
  return { x, start, span, left, right }
}

/**
 * Vertical grid lines with `+1.5 s` labels at `labelY`.
 * @returns {SVGGElement}
 */
export function timeAxis(scale, top, bottom, labelY) {
  const step = STEPS.find((st) => scale.span / st <= MAX_TICKS) ?? STEPS[STEPS.length - 1]
  const ticks = []
  for (let t = 0; t <= scale.span; t += step) {
    const x = scale.x(scale.start + t)
    ticks.push(
      s('line', { x1: x, x2: x, y1: top, y2: bottom, class: 'grid' }),
      s('text', { x, y: labelY, class: 'tick', 'text-anchor': 'middle' }, tickLabel(t, step)),
    )
  }
  return s('g', { class: 'axis' }, ticks)
}

function tickLabel(t, step) {
  if (t === 0) return '0'
  if (step < 1000) return `+${(t / 1000).toFixed(1)} s`
  if (step < 60_000) return `+${Math.round(t / 1000)} s`
  return `+${Math.round(t / 60_000)} min`
}
