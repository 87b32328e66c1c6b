/**
 * The live event log: one row per event in seq order, each seq at most once,
 * with auto-scroll that pauses when asked or when the reader scrolls up.
 * @module agent-events/monitor/log
 */

import { h, clock } from './dom.js'
import { summarize, isFailure } from './describe.js'

/** Rows kept; the oldest go first, so a long run cannot slow the page down. */
const MAX_ROWS = 5000

/** How close to the bottom (px) still counts as "at the bottom". */
const BOTTOM_SLACK = 24

export class EventLog {
  /**
   * @param {HTMLElement} scroller the scrolling box
   * @param {HTMLElement} list the `<ol>` inside it
   * @param {(paused: boolean, unseen: number) => void} onAutoScroll told when auto-scroll changes
   */
  constructor(scroller, list, onAutoScroll) {
    this.scroller = scroller
    this.list = list
    this.onAutoScroll = onAutoScroll
    /** @type {Map<number, HTMLElement>} */
    this.rows = new Map()
    this.paused = false
    this.unseen = 0
    /** Where our own scrolling last put the box. */
    this.autoTop = 0
    scroller.addEventListener('scroll', () => this.scrolled())
  }

  /** Empties the log (another execution, other filters, a replay). */
  clear() {
    this.rows.clear()
    this.list.replaceChildren()
    this.unseen = 0
    this.autoTop = 0
    this.setPaused(false)
  }

  /**
   * Adds an event's row unless its seq is shown already.
   * @returns {boolean} whether a row was added
   */
  add(event) {
    if (this.rows.has(event.seq)) return false
    const row = this.row(event)
    this.insert(row, event.seq)
    this.rows.set(event.seq, row)
    this.trim()
    if (this.paused) this.unseen += 1
    return true
  }

  /** Scrolls to the newest row unless paused; call once per frame. */
  follow() {
    if (this.paused) return this.onAutoScroll(true, this.unseen)
    this.scroller.scrollTop = this.scroller.scrollHeight
    this.autoTop = this.scroller.scrollTop
  }

  /** Pauses or resumes auto-scroll. */
  setPaused(paused) {
    this.paused = paused
    if (!paused) this.unseen = 0
    this.onAutoScroll(paused, this.unseen)
    if (!paused) this.follow()
  }

  /** The seqs shown, in order. */
  seqs() {
    return [...this.rows.keys()].sort((a, b) => a - b)
  }

  row(event) {
    const failed = isFailure(event)
    return h(
      'li',
      {
        class: `row type-${event.type}${failed ? ' failure' : ''}`,
        dataset: {
          seq: event.seq,
          type: event.type,
          agentId: event.agentId ?? '',
          department: event.department ?? '',
        },
      },
      h(
        'details',
        {},
        h(
          'summary',
          {},
          h('span', { class: 'seq' }, event.seq),
          h('time', { datetime: event.timestamp }, clock(Date.parse(event.timestamp))),
          h('span', { class: 'type' }, event.type),
          h('span', { class: 'agent' }, event.agentId ?? event.department ?? ''),
          h('span', { class: 'text' }, summarize(event)),
        ),
        h('pre', {}, JSON.stringify(event, null, 2)),
      ),
    )
  }

  /** Rows arrive in seq order; anything else is put where it belongs. */
  insert(row, seq) {
    const last = this.list.lastElementChild
    if (!last || Number(last.dataset.seq) < seq) return this.list.append(row)
    const after = [...this.list.children].find((el) => Number(el.dataset.seq) > seq)
    this.list.insertBefore(row, after ?? null)
  }

  trim() {
    while (this.rows.size > MAX_ROWS) {
      const first = this.list.firstElementChild
      this.rows.delete(Number(first.dataset.seq))
      first.remove()
    }
  }

  /**
   * Scrolling up by hand pauses; scrolling back to the bottom resumes.
   * Scroll events arrive a frame late, when new rows may already have grown
   * the box, so "up" is measured from where our own scrolling left it.
   */
  scrolled() {
    const { scrollTop, scrollHeight, clientHeight } = this.scroller
    const atBottom = scrollHeight - scrollTop - clientHeight <= BOTTOM_SLACK
    const movedUp = scrollTop < this.autoTop - BOTTOM_SLACK
    if (this.paused && atBottom) this.setPaused(false)
    else if (!this.paused && movedUp) this.setPaused(true)
  }
}
