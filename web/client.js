/**
 * agent-events client: subscribe to executions and conversations over one
 * WebSocket, reconnect with exponential backoff and jitter, and resume each
 * execution with `fromSeq` so that no event is lost or delivered twice.
 *
 * A dependency-free ES module for browsers (served by the broker at
 * `/client.js`) and any runtime with a `WebSocket` (Node 22+, or inject one).
 *
 * @example
 * import { AgentEventsClient } from '/client.js'
 * const client = new AgentEventsClient('ws://localhost:3001/ws')
 * const sub = client.subscribe({ executionId: 'exec-123', fromSeq: 0 })
 * sub.on('tool-result', (e) => console.log(e.toolName, e.success))
 * sub.on('event', (e) => console.log(e.seq, e.type))
 * // later: sub.unsubscribe(); client.close()
 *
 * @module agent-events/client
 */

/** The eleven event types of docs/protocol.md 1, in lifecycle order. */
export const EVENT_TYPES = Object.freeze([
  'orchestration-start',
  'orchestration-complete',
  'department-start',
  'department-complete',
  'agent-start',
  'agent-thinking',
  'agent-complete',
  'tool-call',
  'tool-result',
  'quality-check',
  'review-status',
])

/**
 * Fields every event carries on output.
 * @typedef {object} EventBase
 * @property {string} executionId
 * @property {string} [conversationId]
 * @property {number} seq 1, 2, 3 … per execution, assigned by the broker
 * @property {string} timestamp RFC 3339
 * @property {{model?: string, inputTokens?: number, outputTokens?: number,
 *   costUsd?: number, parentAgentId?: string, durationMs?: number,
 *   [key: string]: unknown}} [metadata]
 */
/** @typedef {EventBase & {type: 'orchestration-start', projectId?: string, userPrompt?: string, complexity?: 'low'|'medium'|'high', departments?: string[]}} OrchestrationStartEvent */
/** @typedef {EventBase & {type: 'orchestration-complete', status?: 'success'|'failed'|'partial', result?: unknown, metrics?: object}} OrchestrationCompleteEvent */
/** @typedef {EventBase & {type: 'department-start', department: string, departmentName?: string, agentId?: string, relevance?: number}} DepartmentStartEvent */
/** @typedef {EventBase & {type: 'department-complete', department: string, outputs?: unknown[], qualityScore?: number, executionTime?: number}} DepartmentCompleteEvent */
/** @typedef {EventBase & {type: 'agent-start', agentId: string, agentName?: string, department?: string, prompt?: string}} AgentStartEvent */
/** @typedef {EventBase & {type: 'agent-thinking', agentId: string, thought: string, step?: number}} AgentThinkingEvent */
/** @typedef {EventBase & {type: 'agent-complete', agentId: string, department?: string, output?: unknown, success?: boolean, error?: string, executionTime?: number}} AgentCompleteEvent */
/** @typedef {EventBase & {type: 'tool-call', agentId: string, toolName: string, toolCallId?: string, input?: unknown}} ToolCallEvent */
/** @typedef {EventBase & {type: 'tool-result', agentId: string, toolName: string, toolCallId?: string, output?: unknown, success?: boolean, error?: string, executionTime?: number}} ToolResultEvent */
/** @typedef {EventBase & {type: 'quality-check', qualityScore: number, agentId?: string, department?: string, passed?: boolean, threshold?: number, issues?: string[]}} QualityCheckEvent */
/** @typedef {EventBase & {type: 'review-status', department: string, status: 'approved'|'revision-requested'|'rejected'|'pending', agentId?: string, specialistId?: string, feedback?: string, qualityScore?: number}} ReviewStatusEvent */
/**
 * Any of the eleven events.
 * @typedef {OrchestrationStartEvent|OrchestrationCompleteEvent|DepartmentStartEvent|
 *   DepartmentCompleteEvent|AgentStartEvent|AgentThinkingEvent|AgentCompleteEvent|
 *   ToolCallEvent|ToolResultEvent|QualityCheckEvent|ReviewStatusEvent} AgentEvent
 */

/**
 * What a subscription emits, by name: `event` for every event, one name per
 * event type with that type's shape, `subscribed` each time the broker
 * confirms it (again after a reconnect), and `error` when the broker refuses
 * or interrupts it.
 * @typedef {{
 *   event: AgentEvent,
 *   'orchestration-start': OrchestrationStartEvent,
 *   'orchestration-complete': OrchestrationCompleteEvent,
 *   'department-start': DepartmentStartEvent,
 *   'department-complete': DepartmentCompleteEvent,
 *   'agent-start': AgentStartEvent,
 *   'agent-thinking': AgentThinkingEvent,
 *   'agent-complete': AgentCompleteEvent,
 *   'tool-call': ToolCallEvent,
 *   'tool-result': ToolResultEvent,
 *   'quality-check': QualityCheckEvent,
 *   'review-status': ReviewStatusEvent,
 *   subscribed: SubscribedInfo,
 *   resync: ResyncInfo,
 *   error: ClientError,
 * }} SubscriptionEventMap
 */

/**
 * @typedef {object} ResyncInfo
 * @property {string} executionId the execution
 * @property {number} fromSeq drop what you hold of it from this seq on: the
 *   events that follow (from this seq) replace it. Sent by a cluster that
 *   gave seqs shown during a Redis outage to other events (docs/cluster.md).
 */

/**
 * @typedef {object} SubscribedInfo
 * @property {number} replayed events the broker replayed from `fromSeq`
 * @property {number} [fromSeq] the `fromSeq` sent, if any
 * @property {boolean} resumed true when this follows a reconnect or a recovery
 * @property {boolean} mayHaveMissed true when events between the drop and now
 *   cannot be replayed: conversation subscriptions, and execution
 *   subscriptions that had no position yet. Refetch what you show.
 */

/**
 * @typedef {object} ClientError
 * @property {string} code a broker error code (docs/reference.md, "Error codes") or one
 *   of the client's: `pong-timeout`, `bad-frame`, `bad-url`, `gap`,
 *   `history-failed`, `token-unavailable`
 * @property {string} message
 */

/**
 * Connection states: `idle` (not started), `connecting`, `open`,
 * `reconnecting` (waiting `delayMs` before attempt `attempt`), `closed`
 * (by {@link AgentEventsClient#close}, or by a 4500–4999 close code).
 * @typedef {'idle'|'connecting'|'open'|'reconnecting'|'closed'} ConnectionState
 */

/**
 * @typedef {object} StateInfo
 * @property {ConnectionState} state
 * @property {number} attempt reconnect attempts since the last open connection
 * @property {number} [delayMs] when `reconnecting`: the wait before the next attempt
 * @property {number} [code] the close code that ended the last connection
 * @property {string} [reason] its reason
 */

/**
 * What the client emits, by name.
 * @typedef {object} ClientEventMap
 * @property {StateInfo} state every change of connection state
 * @property {{clientId: string}} connected the broker greeted a new connection
 * @property {ClientError} error an error not tied to one subscription
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {string} [executionId] one execution (exactly one of the two IDs)
 * @property {string} [conversationId] every execution of a conversation (live only)
 * @property {number} [fromSeq] executions only: replay every event with a
 *   larger seq first (0 = from the start); without it, live events only
 * @property {string[]} [types] only these event types
 * @property {string} [agentId] only events naming this agent
 * @property {string} [department] only events naming this department
 */

/**
 * @typedef {object} ClientOptions
 * @property {typeof WebSocket} [WebSocket] the constructor to use (tests inject a fake)
 * @property {string | (() => string | Promise<string>)} [token] a JWT for a broker
 *   with auth on, or a function that returns a current one: it is called for
 *   every connection, so a refreshed token is used after `token-expired` (4002)
 * @property {typeof fetch} [fetch] for reading history when a replay is refused
 * @property {string} [httpUrl] base of the HTTP API; derived from the WebSocket URL
 * @property {number} [initialDelayMs=500] first reconnect delay, before jitter
 * @property {number} [maxDelayMs=15000] the delay stops growing here
 * @property {number} [factor=2] growth per attempt
 * @property {number} [jitter=0.5] a delay is drawn from [base × (1 − jitter), base]
 * @property {number} [idleMs=20000] send `{"type":"ping"}` after this long without a message
 * @property {number} [pongTimeoutMs=10000] no message this long after a ping: the connection is dead
 * @property {() => number} [random] Math.random by default
 * @property {{setTimeout: Function, clearTimeout: Function}} [timers] the global ones by default
 */

const DEFAULTS = {
  initialDelayMs: 500,
  maxDelayMs: 15000,
  factor: 2,
  jitter: 0.5,
  token: undefined,
  // Below the broker's 60 s client timeout with room for a lost ping; browsers
  // answer the broker's own pings invisibly, so this also checks the way back.
  idleMs: 20000,
  pongTimeoutMs: 10000,
}

/** IDs as the broker accepts them; checked here so a typo fails at the call. */
const ID_RULE = /^[A-Za-z0-9._:-]{1,128}$/

/** Consecutive refused replays after which a subscription gives up. */
const MAX_RECOVERIES = 3

/** History page size when a replay is refused (the API's maximum). */
const HISTORY_PAGE = 1000

/**
 * Whether a close code means "reconnect and resume": everything except the
 * broker's 4500–4999 range ("do not reconnect without a change"). That covers
 * 4000–4499, 1001 (going away), and 1006 (the connection just dropped).
 * @param {number} code
 * @returns {boolean}
 */
export function shouldReconnect(code) {
  return !(code >= 4500 && code <= 4999)
}

/**
 * The wait before reconnect attempt `attempt` (0 for the first): exponential
 * growth capped at `maxDelayMs`, with jitter so that many clients dropped at
 * once do not come back in lockstep.
 * @param {number} attempt
 * @param {{initialDelayMs: number, maxDelayMs: number, factor: number, jitter: number}} options
 * @param {() => number} random a number in [0, 1)
 * @returns {number} milliseconds, within [base × (1 − jitter), base]
 */
export function backoffDelay(attempt, options, random) {
  const base = Math.min(options.maxDelayMs, options.initialDelayMs * options.factor ** attempt)
  return base * (1 - options.jitter * random())
}

/**
 * The WebSocket URL of the broker that served the current page.
 * @returns {string}
 */
export function defaultUrl() {
  const url = new URL('ws', globalThis.location.href)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  return url.href
}

function httpBase(wsUrl) {
  const url = new URL('.', wsUrl)
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:'
  return url.href
}

/** A tiny typed emitter shared by the client and its subscriptions. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map()
  }

  on(name, callback) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set())
    this.listeners.get(name).add(callback)
    return () => this.listeners.get(name)?.delete(callback)
  }

  emit(name, value) {
    for (const callback of [...(this.listeners.get(name) ?? [])]) {
      try {
        callback(value)
      } catch (err) {
        // One faulty callback must not stop delivery to the others.
        if (globalThis.reportError) globalThis.reportError(err)
        else console.error(err)
      }
    }
  }
}

/**
 * One subscription: an execution or a conversation, with optional filters.
 * Created by {@link AgentEventsClient#subscribe}; it survives reconnects.
 */
export class Subscription {
  /**
   * @param {AgentEventsClient} client
   * @param {SubscribeOptions} options
   */
  constructor(client, options) {
    this.client = client
    /** @readonly */ this.executionId = options.executionId
    /** @readonly */ this.conversationId = options.conversationId
    /** @readonly */ this.filters = {
      types: options.types?.length ? [...options.types] : undefined,
      agentId: options.agentId || undefined,
      department: options.department || undefined,
    }
    this.initialFromSeq = options.fromSeq
    /**
     * Highest seq handled per execution: delivered, or skipped as a duplicate
     * of one delivered. The resume position.
     * @type {Map<string, number>}
     */
    this.positions = new Map()
    /** @type {'pending'|'active'|'recovering'|'failed'|'closed'} */
    this.state = 'pending'
    /** Whether the broker confirmed it once: a later confirmation is a resume. */
    this.wasActive = false
    this.sentOnce = false
    /** @type {number|undefined} the `fromSeq` of the last subscribe sent */
    this.sentFromSeq = undefined
    this.recoveries = 0
    this.emitter = new Emitter()
  }

  /** `e:<id>` or `c:<id>`: one subscription per target, as on the broker. */
  get key() {
    return this.executionId ? `e:${this.executionId}` : `c:${this.conversationId}`
  }

  /**
   * Listens to one kind of event; returns the function that stops listening.
   * @template {keyof SubscriptionEventMap} K
   * @param {K} name `event`, an event type such as `tool-call`, `subscribed` or `error`
   * @param {(value: SubscriptionEventMap[K]) => void} callback
   * @returns {() => void}
   */
  on(name, callback) {
    return this.emitter.on(name, callback)
  }

  /**
   * The last seq this subscription handled for an execution (its own by
   * default), or undefined before the first event.
   * @param {string} [executionId]
   * @returns {number|undefined}
   */
  lastSeq(executionId = this.executionId) {
    return this.positions.get(executionId)
  }

  /** Stops the subscription; safe to call twice. */
  unsubscribe() {
    this.client.remove(this)
  }

  /** Where a (re)subscribe starts: the last seq seen, else what was asked. */
  resumeSeq() {
    return this.lastSeq() ?? this.initialFromSeq
  }

  /** The broker's `subscribe` message for this subscription now. */
  message() {
    const target = this.executionId
      ? { executionId: this.executionId }
      : { conversationId: this.conversationId }
    const msg = { type: 'subscribe', ...target }
    const fromSeq = this.executionId ? this.resumeSeq() : undefined
    if (fromSeq !== undefined) msg.fromSeq = fromSeq
    if (this.filters.types) msg.types = this.filters.types
    if (this.filters.agentId) msg.agentId = this.filters.agentId
    if (this.filters.department) msg.department = this.filters.department
    return msg
  }

  /** Whether an event is for this subscription, filters included. */
  wants(event) {
    const target = this.executionId
      ? event.executionId === this.executionId
      : event.conversationId === this.conversationId
    const { types, agentId, department } = this.filters
    return (
      target &&
      (!types || types.includes(event.type)) &&
      (!agentId || event.agentId === agentId) &&
      (!department || event.department === department)
    )
  }

  /**
   * Hands an event to the listeners unless its seq was handled already.
   * @returns {'delivered'|'duplicate'|'gap'}
   */
  deliver(event) {
    const last = this.positions.get(event.executionId)
    if (last !== undefined && event.seq <= last) return 'duplicate'
    // Unfiltered, an execution's seqs arrive 1, 2, 3 …: a jump is a loss.
    const unfiltered = !this.filters.types && !this.filters.agentId && !this.filters.department
    if (this.executionId && unfiltered && last !== undefined && event.seq !== last + 1) {
      return 'gap'
    }
    this.positions.set(event.executionId, event.seq)
    this.emitter.emit('event', event)
    this.emitter.emit(event.type, event)
    return 'delivered'
  }

  /** Moves the resume position past events read elsewhere (history over HTTP). */
  advance(executionId, seq) {
    if (seq > (this.positions.get(executionId) ?? -1)) this.positions.set(executionId, seq)
  }
}

/**
 * A connection to the broker that keeps its subscriptions across drops.
 *
 * Guarantees, per execution subscription: events arrive in seq order, none
 * twice, none missing; after a drop it resubscribes with `fromSeq` set to the
 * last seq it delivered, and if the broker refuses the replay it reads the
 * gap from `GET /api/executions/{id}/events` first.
 */
export class AgentEventsClient {
  /**
   * @param {string} [url] e.g. `ws://localhost:3001/ws`; the serving broker by default
   * @param {ClientOptions} [options]
   */
  constructor(url = defaultUrl(), options = {}) {
    this.url = url
    this.options = { ...DEFAULTS, ...options }
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis)
    this.httpUrl = options.httpUrl ?? httpBase(url)
    this.random = options.random ?? Math.random
    this.timers = options.timers ?? globalThis
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map()
    /** Targets with an `unsubscribe` not yet answered: a new subscribe waits for it. */
    this.unsubscribing = new Map()
    this.emitter = new Emitter()
    /** @type {ConnectionState} */
    this.state = 'idle'
    this.attempt = 0
    this.socket = null
    this.clientId = null
    this.timer = { reconnect: null, idle: null, pong: null }
  }

  /**
   * Listens to the connection; returns the function that stops listening.
   * @template {keyof ClientEventMap} K
   * @param {K} name `state`, `connected` or `error`
   * @param {(value: ClientEventMap[K]) => void} callback
   * @returns {() => void}
   */
  on(name, callback) {
    return this.emitter.on(name, callback)
  }

  /**
   * Subscribes. The first subscription of an idle client connects it; while
   * reconnecting, the subscription waits for the next connection. It lives
   * until {@link Subscription#unsubscribe}, across reconnects.
   * @param {SubscribeOptions} options
   * @returns {Subscription}
   * @throws {Error} on a bad ID, an unknown type, or a second subscription to the same target
   */
  subscribe(options) {
    validate(options)
    const sub = new Subscription(this, options)
    if (this.subscriptions.has(sub.key)) {
      throw new Error(`already subscribed to ${sub.key.slice(2)}; unsubscribe first`)
    }
    this.subscriptions.set(sub.key, sub)
    if (this.state === 'open') this.sendSubscribe(sub)
    else if (this.state === 'idle') this.connect()
    return sub
  }

  /**
   * Opens the connection now: at first, or to skip a pending reconnect delay,
   * or after {@link AgentEventsClient#close}.
   */
  connect() {
    if (this.state === 'open' || this.state === 'connecting') return
    this.clearTimer('reconnect')
    this.open()
  }

  /** Closes the connection for good (until `connect`); subscriptions are kept. */
  close() {
    this.clearTimers()
    this.detach(1000, 'client closed')
    this.pauseSubscriptions()
    this.setState('closed', {})
  }

  // ------------------------------------------------------------ connection

  open() {
    this.setState('connecting', {})
    let socket
    try {
      socket = new this.WebSocket(this.url)
    } catch (err) {
      // A malformed URL or a blocked scheme: retrying cannot help.
      this.emitter.emit('error', { code: 'bad-url', message: String(err) })
      return this.setState('closed', { reason: String(err) })
    }
    this.socket = socket
    socket.onopen = () => this.opened()
    socket.onmessage = (message) => this.received(message.data)
    socket.onclose = (event) => this.lost({ code: event.code, reason: event.reason })
    // Errors are followed by a close event, which decides what to do.
    socket.onerror = () => {}
  }

  opened() {
    this.attempt = 0
    this.unsubscribing.clear()
    const { token } = this.options
    if (typeof token !== 'function') return this.ready(token)
    // Still `connecting` while a token is fetched, so nothing else is sent first.
    const socket = this.socket
    Promise.resolve()
      .then(token)
      .catch((err) => {
        this.emitter.emit('error', { code: 'token-unavailable', message: String(err) })
      })
      .then((fresh) => this.socket === socket && this.ready(fresh))
  }

  /** Authenticates if there is a token (the broker reads in order), then resubscribes. */
  ready(token) {
    if (token) this.socket.send(JSON.stringify({ type: 'auth', token }))
    this.setState('open', {})
    this.armIdle()
    for (const sub of this.subscriptions.values()) {
      if (sub.state !== 'failed') this.sendSubscribe(sub)
    }
  }

  /** The token to use now, if any: the option's value, or what its function returns. */
  async currentToken() {
    const { token } = this.options
    return typeof token === 'function' ? token() : token
  }

  /**
   * Headers for the broker's HTTP API (`Authorization` when a token is set),
   * for callers that read history or lists beside their subscriptions.
   * @returns {Promise<Record<string, string>>}
   */
  async httpHeaders() {
    const token = await this.currentToken()
    return token ? { authorization: `Bearer ${token}` } : {}
  }

  /** The connection ended: reconnect unless the code says not to. */
  lost({ code, reason }) {
    this.socket = null
    this.clearTimers()
    this.pauseSubscriptions()
    if (!shouldReconnect(code)) {
      return this.setState('closed', { code, reason })
    }
    const delayMs = backoffDelay(this.attempt, this.options, this.random)
    this.attempt += 1
    this.setState('reconnecting', { code, reason, delayMs })
    this.timer.reconnect = this.timers.setTimeout(() => this.open(), delayMs)
  }

  /** Without a connection, every live subscription waits to be sent again. */
  pauseSubscriptions() {
    for (const sub of this.subscriptions.values()) {
      if (sub.state === 'active' || sub.state === 'recovering') sub.state = 'pending'
    }
  }

  /** Lets go of the current socket without waiting for its close handshake. */
  detach(code, reason) {
    const socket = this.socket
    if (!socket) return
    this.socket = null
    socket.onopen = socket.onmessage = socket.onclose = null
    try {
      socket.close(code, reason)
    } catch {
      // Already closed, or the code is not one a client may send: nothing to do.
    }
  }

  setState(state, info) {
    this.state = state
    this.emitter.emit('state', { state, attempt: this.attempt, ...info })
  }

  send(message) {
    if (this.socket && this.state === 'open') this.socket.send(JSON.stringify(message))
  }

  // ------------------------------------------------------------- heartbeat

  /** After `idleMs` of silence, ping; after `pongTimeoutMs` more, give up. */
  armIdle() {
    this.clearTimer('idle')
    this.clearTimer('pong')
    this.timer.idle = this.timers.setTimeout(() => {
      this.send({ type: 'ping' })
      this.timer.pong = this.timers.setTimeout(() => this.pongMissed(), this.options.pongTimeoutMs)
    }, this.options.idleMs)
  }

  pongMissed() {
    this.emitter.emit('error', {
      code: 'pong-timeout',
      message: `no answer to a ping within ${this.options.pongTimeoutMs} ms; reconnecting`,
    })
    // A dead peer may never complete the close handshake: do not wait for it.
    this.detach(4001, 'pong timeout')
    this.lost({ code: 4001, reason: 'pong timeout' })
  }

  clearTimer(name) {
    if (this.timer[name] !== null) this.timers.clearTimeout(this.timer[name])
    this.timer[name] = null
  }

  clearTimers() {
    for (const name of Object.keys(this.timer)) this.clearTimer(name)
  }

  // -------------------------------------------------------------- messages

  received(data) {
    this.armIdle()
    let msg
    try {
      msg = JSON.parse(data)
    } catch {
      return this.emitter.emit('error', { code: 'bad-frame', message: 'a frame was not JSON' })
    }
    switch (msg.type) {
      case 'connected':
        this.clientId = msg.clientId
        return this.emitter.emit('connected', { clientId: msg.clientId })
      case 'subscribed':
        return this.confirmed(msg)
      case 'unsubscribed':
        return this.unsubscribed(msg)
      case 'event':
        return this.routeEvent(msg.event)
      case 'resync':
        return this.resync(msg)
      case 'error':
        return this.brokerError(msg)
      default:
        return undefined // pong and anything newer: hearing it was the point
    }
  }

  confirmed(msg) {
    const key = keyOf(msg)
    const sub = this.subscriptions.get(key)
    // An answer to a subscribe sent before an unsubscribe belongs to the old one.
    if (!sub || sub.state !== 'pending' || this.unsubscribing.has(key)) return
    const resumed = sub.wasActive
    sub.state = 'active'
    sub.wasActive = true
    sub.recoveries = 0
    sub.emitter.emit('subscribed', {
      replayed: msg.replayed ?? 0,
      fromSeq: sub.sentFromSeq,
      resumed,
      mayHaveMissed: resumed && sub.sentFromSeq === undefined,
    })
  }

  unsubscribed(msg) {
    const key = keyOf(msg)
    const left = (this.unsubscribing.get(key) ?? 1) - 1
    if (left > 0) return this.unsubscribing.set(key, left)
    this.unsubscribing.delete(key)
    const waiting = this.subscriptions.get(key)
    if (waiting?.state === 'pending') this.sendSubscribe(waiting)
  }

  /** Delivers an event to every active subscription that wants it, once. */
  routeEvent(event) {
    if (!event || typeof event.seq !== 'number') return
    for (const sub of this.subscriptions.values()) {
      if (sub.state !== 'active' || !sub.wants(event)) continue
      if (sub.deliver(event) === 'gap') this.recoverGap(sub, event)
    }
  }

  /**
   * The broker says seqs of an execution from `fromSeq` on now belong to
   * other events: each subscription watching it moves its position back (so
   * those seqs are taken again, not dropped as duplicates) and tells its
   * listeners to drop what they hold from there.
   */
  resync(msg) {
    if (typeof msg.executionId !== 'string' || typeof msg.fromSeq !== 'number') return
    for (const sub of this.subscriptions.values()) {
      const last = sub.lastSeq(msg.executionId)
      if (last === undefined) continue
      if (last >= msg.fromSeq) sub.positions.set(msg.executionId, msg.fromSeq - 1)
      sub.emitter.emit('resync', { executionId: msg.executionId, fromSeq: msg.fromSeq })
    }
  }

  brokerError(msg) {
    const error = { code: msg.code, message: msg.message }
    const sub = this.subscriptions.get(keyOf(msg))
    if (!sub || (!msg.executionId && !msg.conversationId)) {
      return this.emitter.emit('error', error)
    }
    sub.emitter.emit('error', error)
    if (msg.code === 'replay-unavailable') return this.recoverFromHistory(sub)
    if (msg.code === 'already-subscribed') {
      // The broker has it already: events flow; treat it as confirmed.
      sub.state = 'active'
      return undefined
    }
    sub.state = 'failed'
    return undefined
  }

  // ---------------------------------------------------------- subscriptions

  sendSubscribe(sub) {
    // A subscribe right after an unsubscribe of the same target waits for its
    // answer, so the broker never sees the two crossed.
    if (this.unsubscribing.has(sub.key) || this.state !== 'open') return
    sub.state = 'pending'
    const msg = sub.message()
    sub.sentFromSeq = msg.fromSeq
    sub.sentOnce = true
    this.send(msg)
  }

  /** Called by {@link Subscription#unsubscribe}. */
  remove(sub) {
    if (this.subscriptions.get(sub.key) !== sub || sub.state === 'closed') return
    this.subscriptions.delete(sub.key)
    const wasSent = sub.sentOnce && this.state === 'open'
    sub.state = 'closed'
    if (!wasSent) return
    const target = sub.executionId
      ? { executionId: sub.executionId }
      : { conversationId: sub.conversationId }
    this.unsubscribing.set(sub.key, (this.unsubscribing.get(sub.key) ?? 0) + 1)
    this.send({ type: 'unsubscribe', ...target })
  }

  /** A seq went missing on an unfiltered execution: resubscribe from the last one. */
  recoverGap(sub, event) {
    sub.emitter.emit('error', {
      code: 'gap',
      message: `seq ${event.seq} after ${sub.lastSeq()}; resubscribing from ${sub.lastSeq()}`,
    })
    this.resubscribe(sub)
  }

  resubscribe(sub) {
    sub.state = 'pending'
    const target = sub.executionId
      ? { executionId: sub.executionId }
      : { conversationId: sub.conversationId }
    this.unsubscribing.set(sub.key, (this.unsubscribing.get(sub.key) ?? 0) + 1)
    this.send({ type: 'unsubscribe', ...target })
    // `unsubscribed` sends the new subscribe (see `unsubscribed`).
  }

  /**
   * The broker cannot replay from our position (too far back): read the
   * history over HTTP, unfiltered so the position ends at the true head, then
   * subscribe again from there.
   */
  async recoverFromHistory(sub) {
    sub.recoveries += 1
    if (!this.fetch || !sub.executionId || sub.recoveries > MAX_RECOVERIES) {
      sub.state = 'failed'
      return
    }
    sub.state = 'recovering'
    try {
      await this.readHistory(sub)
    } catch (err) {
      sub.state = 'failed'
      sub.emitter.emit('error', { code: 'history-failed', message: String(err) })
      return
    }
    if (this.subscriptions.get(sub.key) !== sub || sub.state !== 'recovering') return
    sub.state = 'pending'
    this.sendSubscribe(sub)
  }

  async readHistory(sub) {
    let after = sub.resumeSeq() ?? 0
    for (;;) {
      const path = `api/executions/${encodeURIComponent(sub.executionId)}/events`
      const url = `${this.httpUrl}${path}?afterSeq=${after}&limit=${HISTORY_PAGE}`
      const response = await this.fetch(url, { headers: await this.httpHeaders() })
      if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`)
      const page = await response.json()
      for (const event of page.events) {
        if (sub.wants(event)) sub.deliver(event)
        sub.advance(event.executionId, event.seq)
        after = event.seq
      }
      if (page.nextAfterSeq === null || page.nextAfterSeq === undefined) return
      after = page.nextAfterSeq
    }
  }
}

function keyOf(msg) {
  return msg.executionId ? `e:${msg.executionId}` : `c:${msg.conversationId}`
}

/** Refuses what the broker would refuse, at the call site. */
function validate(options) {
  const { executionId, conversationId, fromSeq, types } = options
  if (!executionId === !conversationId) {
    throw new Error('subscribe needs exactly one of executionId and conversationId')
  }
  const id = executionId ?? conversationId
  if (!ID_RULE.test(id)) throw new Error(`invalid ID \`${id}\`: 1–128 of A-Z a-z 0-9 . _ : -`)
  if (fromSeq !== undefined && (!executionId || !Number.isInteger(fromSeq) || fromSeq < 0)) {
    throw new Error('fromSeq must be an integer >= 0, with executionId only')
  }
  for (const type of types ?? []) {
    if (!EVENT_TYPES.includes(type)) throw new Error(`\`${type}\` is not an event type`)
  }
}
