/**
 * Replay of a finished execution: its history read over HTTP a page at a
 * time, then played back at its own pace (1x), faster (10x), or one event at
 * a time.
 * @module agent-events/monitor/replay
 */

/** The API's largest page. */
const PAGE = 1000

/**
 * Every stored event of an execution, in seq order, following `nextAfterSeq`.
 * @param {string} httpBase e.g. `http://127.0.0.1:3001/`
 * @param {string} executionId
 * @param {typeof fetch} [fetchImpl]
 * @returns {Promise<object[]>}
 */
export async function readHistory(httpBase, executionId, fetchImpl = fetch) {
  const events = []
  let after = 0
  for (;;) {
    const url = `${httpBase}api/executions/${encodeURIComponent(executionId)}/events?afterSeq=${after}&limit=${PAGE}`
    const response = await fetchImpl(url)
    if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`)
    const page = await response.json()
    events.push(...page.events)
    if (page.nextAfterSeq === null || page.nextAfterSeq === undefined) return events
    after = page.nextAfterSeq
  }
}

/**
 * Plays events back with the gaps between their timestamps divided by the
 * speed. A pause longer than `maxGapMs` (wall time) is shortened to it: an
 * execution idle for an hour should not replay an hour of nothing.
 */
export class Player {
  /**
   * @param {object[]} events in seq order
   * @param {{onEvent: (e: object) => void, onState: (state: string, position: number, total: number) => void,
   *   timers?: {setTimeout: Function, clearTimeout: Function}, maxGapMs?: number}} options
   */
  constructor(events, { onEvent, onState, timers = globalThis, maxGapMs = 3000 }) {
    this.events = events
    this.onEvent = onEvent
    this.onState = onState
    this.timers = timers
    this.maxGapMs = maxGapMs
    this.position = 0
    this.speed = 1
    this.timer = null
    this.setState('paused')
  }

  /** Plays from the current position at `speed` (1 = as it happened). */
  play(speed) {
    this.speed = speed
    if (this.position >= this.events.length) return this.setState('done')
    this.cancel()
    this.setState('playing')
    this.emitDue()
  }

  /** Stops where it is. */
  pause() {
    this.cancel()
    if (this.state !== 'done') this.setState('paused')
  }

  /** Pauses, then plays exactly one event. */
  step() {
    this.cancel()
    if (this.position >= this.events.length) return this.setState('done')
    this.emit()
    this.setState(this.position >= this.events.length ? 'done' : 'paused')
  }

  /** Stops for good (leaving the replay). */
  stop() {
    this.cancel()
    this.state = 'stopped'
  }

  /** Emits every event due now, then waits for the next one. */
  emitDue() {
    do {
      this.emit()
    } while (this.position < this.events.length && this.waitMs() < 1)
    if (this.position >= this.events.length) return this.setState('done')
    this.setState('playing')
    this.timer = this.timers.setTimeout(() => {
      this.timer = null
      this.emitDue()
    }, this.waitMs())
  }

  /** Wall-clock wait before the next event, at the current speed. */
  waitMs() {
    const prev = this.events[this.position - 1]
    const next = this.events[this.position]
    if (!prev) return 0
    const gap = Date.parse(next.timestamp) - Date.parse(prev.timestamp)
    return Math.min(Math.max(gap, 0) / this.speed, this.maxGapMs)
  }

  emit() {
    const event = this.events[this.position]
    this.position += 1
    this.onEvent(event)
  }

  cancel() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer)
    this.timer = null
  }

  setState(state) {
    this.state = state
    this.onState(state, this.position, this.events.length)
  }
}
