// Unit tests of the monitor's model (what the cards, timeline and chart show)
// and of the replay player, without a browser.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  createExecution,
  applyEvent,
  departmentState,
  departmentScore,
  departmentTime,
  lanes,
  matchesFilters,
} from '../../web/monitor/model.js'
import { Player } from '../../web/monitor/replay.js'
import { fakeTimers } from './fakes.mjs'

const T0 = Date.parse('2025-10-01T12:00:00Z')

/** Events with seqs 1, 2, 3 … and timestamps 100 ms apart. */
function run(...events) {
  return events.map((e, i) => ({
    executionId: 'exec-1',
    seq: i + 1,
    timestamp: new Date(T0 + i * 100).toISOString(),
    ...e,
  }))
}

function fold(events) {
  const model = createExecution('exec-1')
  for (const e of events) applyEvent(model, e)
  return model
}

const story = (type, extra = {}) => ({ type, department: 'story', ...extra })

test('a department passes through every state the cards show', () => {
  const events = run(
    { type: 'orchestration-start', departments: ['story', 'audio'] },
    story('department-start', { agentId: 'head', relevance: 0.9 }),
    story('agent-start', { agentId: 'head' }),
    story('agent-start', { agentId: 'writer' }),
    { type: 'quality-check', agentId: 'writer', department: 'story', qualityScore: 60, threshold: 80, passed: false, issues: ['flat'] },
    story('review-status', { status: 'revision-requested', specialistId: 'writer' }),
    story('agent-start', { agentId: 'writer' }),
    { type: 'quality-check', agentId: 'writer', department: 'story', qualityScore: 85, threshold: 80, passed: true },
    story('review-status', { status: 'approved', specialistId: 'writer' }),
    story('department-complete', { qualityScore: 85, executionTime: 700 }),
  )
  const states = []
  const model = createExecution('exec-1')
  for (const e of events) {
    applyEvent(model, e)
    states.push(departmentState(model.departments.get('story')))
  }
  assert.deepEqual(states, [
    'pending',
    'running',
    'running',
    'running',
    'in-review',
    'revision-requested',
    'revision-requested', // the revision is under way
    'in-review',
    'approved',
    'complete',
  ])
  assert.equal(departmentState(model.departments.get('audio')), 'pending')
  const dept = model.departments.get('story')
  assert.equal(departmentScore(dept), 85)
  assert.equal(departmentTime(dept), 700)
  assert.equal(dept.relevance, 0.9)
  assert.equal(model.quality.filter((q) => !q.passed).length, 1)
})

test('an event seen twice is folded once', () => {
  const events = run({ type: 'tool-call', agentId: 'a', toolName: 't', toolCallId: '1' })
  const model = fold([...events, ...events])
  assert.equal(model.totals.toolCalls, 1)
  assert.equal(model.events.size, 1)
})

test('tool results join their calls, failures counted; usage summed only when reported', () => {
  const model = fold(
    run(
      { type: 'tool-call', agentId: 'a', toolName: 'search', toolCallId: 'c1' },
      { type: 'tool-call', agentId: 'a', toolName: 'search', toolCallId: 'c2' },
      { type: 'tool-result', agentId: 'a', toolName: 'search', toolCallId: 'c2', success: false, error: 'timeout' },
      { type: 'tool-result', agentId: 'a', toolName: 'search', toolCallId: 'c1', success: true },
      { type: 'agent-complete', agentId: 'a', metadata: { model: 'm1', inputTokens: 100, outputTokens: 20, costUsd: 0.5 } },
      { type: 'agent-complete', agentId: 'b', metadata: { model: 'm2' } },
    ),
  )
  const tools = model.agents.get('a').tools
  assert.deepEqual(
    tools.map((t) => [t.id, t.resultSeq, t.failed]),
    [
      ['c1', 4, false],
      ['c2', 3, true],
    ],
  )
  assert.equal(model.totals.toolFailures, 1)
  assert.equal(model.totals.inputTokens, 100)
  assert.equal(model.totals.costUsd, 0.5)
  assert.equal(model.totals.usageReports, 1)
  assert.deepEqual([...model.totals.models], ['m1', 'm2'])
})

test('lanes go by department, head first, then by first appearance', () => {
  const model = fold(
    run(
      { type: 'department-start', department: 'b', agentId: 'b-head' },
      { type: 'department-start', department: 'a', agentId: 'a-head' },
      { type: 'agent-start', agentId: 'a-2', department: 'a' },
      { type: 'agent-start', agentId: 'b-1', department: 'b' },
      { type: 'agent-start', agentId: 'a-head', department: 'a' },
      { type: 'agent-start', agentId: 'b-head', department: 'b' },
    ),
  )
  assert.deepEqual(
    lanes(model).map((a) => a.id),
    ['b-head', 'b-1', 'a-head', 'a-2'],
  )
})

test('log filters match like the broker: every given filter must hold', () => {
  const e = { type: 'tool-call', agentId: 'a', department: 'story' }
  assert.ok(matchesFilters(e, {}))
  assert.ok(matchesFilters(e, { types: ['tool-call'], agentId: 'a', department: 'story' }))
  assert.ok(!matchesFilters(e, { types: ['tool-result'] }))
  assert.ok(!matchesFilters({ type: 'tool-call' }, { department: 'story' }))
})

test('the player keeps the recorded pace at 1x, divides it at 10x, and steps one event', () => {
  // Seqs 1 and 99 share a timestamp; then gaps of 100, 100 and 2000 ms.
  const events = run({ type: 'agent-thinking' }, { type: 'agent-thinking' }, { type: 'agent-thinking' })
  events.splice(1, 0, { ...events[0], seq: 99 })
  events.push({ ...events[3], seq: 100, timestamp: new Date(T0 + 2200).toISOString() })
  events.push({ ...events[3], seq: 101, timestamp: new Date(T0 + 2300).toISOString() })
  const timers = fakeTimers()
  const played = []
  const states = []
  const player = new Player(events, {
    onEvent: (e) => played.push(e.seq),
    onState: (state) => states.push(state),
    timers,
    maxGapMs: 5000,
  })
  player.play(1)
  assert.deepEqual(played, [1, 99], 'simultaneous events come together')
  timers.advance(99)
  assert.deepEqual(played, [1, 99], 'not before its recorded gap')
  timers.advance(1)
  assert.deepEqual(played, [1, 99, 2])
  player.pause()
  timers.advance(10_000)
  assert.deepEqual(played, [1, 99, 2], 'paused')
  player.step()
  assert.deepEqual(played, [1, 99, 2, 3], 'one step, one event')
  assert.equal(states.at(-1), 'paused')
  player.play(10)
  assert.deepEqual(played, [1, 99, 2, 3, 100], 'play resumes with the next event at once')
  timers.advance(9)
  assert.deepEqual(played, [1, 99, 2, 3, 100], 'the 100 ms gap takes 10 ms at 10x')
  timers.advance(1)
  assert.deepEqual(played, [1, 99, 2, 3, 100, 101])
  assert.equal(states.at(-1), 'done')
})

test('the player shortens long idle gaps to maxGapMs', () => {
  const events = run({ type: 'agent-thinking' }, { type: 'agent-thinking' })
  events[1].timestamp = new Date(T0 + 3_600_000).toISOString()
  const timers = fakeTimers()
  const played = []
  new Player(events, { onEvent: (e) => played.push(e.seq), onState: () => {}, timers, maxGapMs: 1000 }).play(1)
  timers.advance(1000)
  assert.deepEqual(played, [1, 2])
})
