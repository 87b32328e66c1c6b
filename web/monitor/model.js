/**
 * The monitor's view of one execution, folded from its events: departments
 * with their state, agents with their activity, quality checks and totals.
 * No DOM here, so that live events, a replay and the Node tests all drive the
 * same code.
 * @module agent-events/monitor/model
 */

/**
 * Department states, in the order a department normally passes them.
 * `in-review`: a draft was checked and waits for its review.
 */
export const DEPARTMENT_STATES = Object.freeze([
  'pending',
  'running',
  'in-review',
  'revision-requested',
  'approved',
  'complete',
])

/**
 * A fresh model for one execution.
 * @param {string} executionId
 */
export function createExecution(executionId) {
  return {
    executionId,
    conversationId: undefined,
    prompt: undefined,
    projectId: undefined,
    status: 'running',
    /** @type {Map<number, object>} every event by seq: tooltips and the log read it */
    events: new Map(),
    lastSeq: 0,
    startMs: undefined,
    /** Time of the latest event: the right edge of the charts. */
    endMs: undefined,
    completedMs: undefined,
    /** @type {Map<string, ReturnType<typeof newDepartment>>} in order of appearance */
    departments: new Map(),
    /** @type {Map<string, ReturnType<typeof newAgent>>} in order of appearance */
    agents: new Map(),
    quality: [],
    totals: {
      inputTokens: 0,
      outputTokens: 0,
      costUsd: 0,
      usageReports: 0,
      models: new Set(),
      toolCalls: 0,
      toolFailures: 0,
    },
  }
}

/**
 * Folds one event into the model. Events are taken once: a seq seen before
 * is ignored, so nothing shows twice whatever the source does.
 * @param {ReturnType<typeof createExecution>} model
 * @param {object} event an event as the broker sends it (with `seq`, `timestamp`)
 * @returns {boolean} whether the event was new
 */
export function applyEvent(model, event) {
  if (model.events.has(event.seq)) return false
  model.events.set(event.seq, event)
  model.lastSeq = Math.max(model.lastSeq, event.seq)
  const ms = Date.parse(event.timestamp)
  model.startMs = model.startMs === undefined ? ms : Math.min(model.startMs, ms)
  model.endMs = model.endMs === undefined ? ms : Math.max(model.endMs, ms)
  model.conversationId ??= event.conversationId
  addUsage(model.totals, event.metadata)
  const apply = APPLY[event.type]
  if (apply) apply(model, event, ms)
  return true
}

const APPLY = {
  'orchestration-start'(model, e) {
    model.prompt = e.userPrompt
    model.projectId = e.projectId
    for (const key of e.departments ?? []) department(model, key)
  },
  'orchestration-complete'(model, e, ms) {
    model.status = e.status ?? 'success'
    model.completedMs = ms
  },
  'department-start'(model, e, ms) {
    const dept = department(model, e.department)
    dept.name = e.departmentName ?? dept.name
    dept.relevance = e.relevance ?? dept.relevance
    dept.headId = e.agentId ?? dept.headId
    dept.startMs = ms
  },
  'department-complete'(model, e, ms) {
    const dept = department(model, e.department)
    dept.completeMs = ms
    dept.finalScore = e.qualityScore
    dept.executionTime = e.executionTime
  },
  'agent-start'(model, e, ms) {
    const agent = agentOf(model, e.agentId, e.department)
    agent.name = e.agentName ?? agent.name
    agent.runs.push({ startMs: ms, startSeq: e.seq, endMs: undefined, success: undefined })
    const dept = e.department && department(model, e.department)
    if (dept && e.agentId !== dept.headId) {
      // A revision keeps its department in `revision-requested` until checked again.
      if (!dept.specialists.has(e.agentId)) dept.specialists.set(e.agentId, 'working')
    }
    touch(model, e.department, ms)
  },
  'agent-thinking'(model, e, ms) {
    agentOf(model, e.agentId).marks.push({ kind: 'thinking', ms, seq: e.seq })
    touch(model, agentOf(model, e.agentId).department, ms)
  },
  'agent-complete'(model, e, ms) {
    const agent = agentOf(model, e.agentId, e.department)
    const run = agent.runs.findLast((r) => r.endMs === undefined)
    if (run) Object.assign(run, { endMs: ms, endSeq: e.seq, success: e.success !== false })
    agent.marks.push({ kind: 'complete', ms, seq: e.seq, failed: e.success === false })
    touch(model, agent.department, ms)
  },
  'tool-call'(model, e, ms) {
    const agent = agentOf(model, e.agentId)
    agent.tools.push({
      id: e.toolCallId,
      name: e.toolName,
      callMs: ms,
      callSeq: e.seq,
      resultMs: undefined,
      resultSeq: undefined,
      failed: false,
    })
    model.totals.toolCalls += 1
    touch(model, agent.department, ms)
  },
  'tool-result'(model, e, ms) {
    const agent = agentOf(model, e.agentId)
    const call =
      agent.tools.find((t) => t.id !== undefined && t.id === e.toolCallId) ??
      agent.tools.findLast((t) => t.name === e.toolName && t.resultSeq === undefined)
    const failed = e.success === false || Boolean(e.error)
    if (call) Object.assign(call, { resultMs: ms, resultSeq: e.seq, failed })
    if (failed) model.totals.toolFailures += 1
    touch(model, agent.department, ms)
  },
  'quality-check'(model, e, ms) {
    const departmentKey = e.department ?? model.agents.get(e.agentId)?.department
    model.quality.push({
      seq: e.seq,
      ms,
      department: departmentKey,
      agentId: e.agentId,
      score: e.qualityScore,
      passed: e.passed ?? (e.threshold === undefined || e.qualityScore >= e.threshold),
      threshold: e.threshold,
      issues: e.issues ?? [],
    })
    if (!departmentKey) return
    const dept = department(model, departmentKey)
    if (e.threshold !== undefined) dept.threshold = e.threshold
    dept.scores.set(e.agentId ?? `check-${e.seq}`, e.qualityScore)
    if (e.agentId && e.agentId !== dept.headId) dept.specialists.set(e.agentId, 'in-review')
    touch(model, departmentKey, ms)
  },
  'review-status'(model, e, ms) {
    const dept = department(model, e.department)
    const specialist = e.specialistId
    if (specialist) {
      dept.specialists.set(specialist, e.status === 'pending' ? 'in-review' : e.status)
      agentOf(model, specialist, e.department).marks.push({
        kind: 'review',
        ms,
        seq: e.seq,
        status: e.status,
      })
    }
    touch(model, e.department, ms)
  },
}

function newDepartment(key) {
  return {
    key,
    name: key,
    relevance: undefined,
    headId: undefined,
    startMs: undefined,
    lastMs: undefined,
    completeMs: undefined,
    executionTime: undefined,
    finalScore: undefined,
    threshold: undefined,
    /** @type {Map<string, string>} specialist → working | in-review | revision-requested | approved | rejected */
    specialists: new Map(),
    /** @type {Map<string, number>} latest check score per specialist */
    scores: new Map(),
  }
}

function department(model, key) {
  if (!model.departments.has(key)) model.departments.set(key, newDepartment(key))
  return model.departments.get(key)
}

function newAgent(id, departmentKey) {
  return {
    id,
    name: id,
    department: departmentKey,
    runs: [],
    tools: [],
    /** thinking, completions and reviews, in arrival order */
    marks: [],
  }
}

function agentOf(model, id, departmentKey) {
  let agent = model.agents.get(id)
  if (!agent) {
    agent = newAgent(id, departmentKey)
    model.agents.set(id, agent)
  }
  agent.department ??= departmentKey
  return agent
}

function touch(model, departmentKey, ms) {
  if (!departmentKey) return
  const dept = department(model, departmentKey)
  dept.lastMs = Math.max(dept.lastMs ?? ms, ms)
}

function addUsage(totals, metadata) {
  if (!metadata) return
  const { model, inputTokens, outputTokens, costUsd } = metadata
  const reported = [inputTokens, outputTokens, costUsd].some((v) => typeof v === 'number')
  if (typeof model === 'string') totals.models.add(model)
  if (!reported) return
  totals.usageReports += 1
  totals.inputTokens += typeof inputTokens === 'number' ? inputTokens : 0
  totals.outputTokens += typeof outputTokens === 'number' ? outputTokens : 0
  totals.costUsd += typeof costUsd === 'number' ? costUsd : 0
}

/**
 * The state a department card shows. While specialists are at different
 * points, the one needing attention wins: a revision over a pending review
 * over work in progress.
 * @param {ReturnType<typeof newDepartment>} dept
 * @returns {string} one of {@link DEPARTMENT_STATES}
 */
export function departmentState(dept) {
  if (dept.completeMs !== undefined) return 'complete'
  if (dept.startMs === undefined) return 'pending'
  const phases = [...dept.specialists.values()]
  if (phases.includes('revision-requested')) return 'revision-requested'
  if (phases.includes('in-review')) return 'in-review'
  if (phases.includes('working')) return 'running'
  if (phases.length > 0 && phases.every((p) => p === 'approved')) return 'approved'
  return 'running'
}

/**
 * The score a card shows: the department's final one, else the mean of its
 * specialists' latest checks.
 * @returns {number|undefined}
 */
export function departmentScore(dept) {
  if (dept.finalScore !== undefined) return dept.finalScore
  const scores = [...dept.scores.values()]
  if (scores.length === 0) return undefined
  return scores.reduce((a, b) => a + b, 0) / scores.length
}

/**
 * Milliseconds the department has worked: its own figure once complete, else
 * from its start to its latest event.
 * @returns {number|undefined}
 */
export function departmentTime(dept) {
  if (dept.executionTime !== undefined) return dept.executionTime
  if (dept.startMs === undefined) return undefined
  return (dept.completeMs ?? dept.lastMs ?? dept.startMs) - dept.startMs
}

/** Specialists whose work was rejected. */
export function rejectedCount(dept) {
  return [...dept.specialists.values()].filter((p) => p === 'rejected').length
}

/**
 * Agents in lane order: by department (in order of appearance), the head
 * first, then by first appearance.
 * @returns {object[]}
 */
export function lanes(model) {
  const order = [...model.departments.keys()]
  const rank = (agent) => {
    const index = order.indexOf(agent.department)
    return index === -1 ? order.length : index
  }
  const isHead = (agent) => model.departments.get(agent.department)?.headId === agent.id
  const agents = [...model.agents.values()]
  const appearance = new Map(agents.map((a, i) => [a.id, i]))
  return agents.sort(
    (a, b) =>
      rank(a) - rank(b) ||
      Number(isHead(b)) - Number(isHead(a)) ||
      appearance.get(a.id) - appearance.get(b.id),
  )
}

/**
 * Whether an event passes the log's filters (the same rules as the broker's).
 * @param {{types?: string[], agentId?: string, department?: string}} filters
 */
export function matchesFilters(event, filters) {
  return (
    (!filters.types?.length || filters.types.includes(event.type)) &&
    (!filters.agentId || event.agentId === filters.agentId) &&
    (!filters.department || event.department === filters.department)
  )
}
