// Test doubles for the client's unit tests: a WebSocket the test plays the
// broker for, a clock the test advances, a scripted random source, and fetch.

/** A WebSocket constructor whose instances the test drives by hand. */
export function fakeWebSocket() {
  const sockets = []
  class FakeSocket {
    constructor(url) {
      this.url = url
      /** Messages the client sent, parsed. */
      this.sent = []
      this.closedWith = null
      sockets.push(this)
    }

    send(text) {
      this.sent.push(JSON.parse(text))
    }

    close(code, reason) {
      this.closedWith = { code, reason }
    }

    // ---- the broker's side
    open() {
      this.onopen?.({})
    }

    message(msg) {
      this.onmessage?.({ data: JSON.stringify(msg) })
    }

    /** Opens and greets, as the broker does right after the upgrade. */
    accept() {
      this.open()
      this.message({ type: 'connected', clientId: `c${sockets.length}` })
    }

    drop(code = 1006, reason = '') {
      this.onclose?.({ code, reason })
    }

    sentOfType(type) {
      return this.sent.filter((m) => m.type === type)
    }
  }
  return { FakeSocket, sockets, last: () => sockets[sockets.length - 1] }
}

/** setTimeout/clearTimeout on a clock that only moves when told. */
export function fakeTimers() {
  let now = 0
  let nextId = 1
  const pending = new Map()
  return {
    setTimeout(fn, ms) {
      const id = nextId++
      pending.set(id, { at: now + ms, fn, ms })
      return id
    },
    clearTimeout(id) {
      pending.delete(id)
    },
    /** Delays of the timers waiting now, in order of creation. */
    delays() {
      return [...pending.values()].map((t) => t.ms)
    },
    /** Moves the clock, running every timer that comes due, in time order. */
    advance(ms) {
      const until = now + ms
      for (;;) {
        const due = [...pending.entries()]
          .filter(([, t]) => t.at <= until)
          .sort((a, b) => a[1].at - b[1].at)[0]
        if (!due) break
        pending.delete(due[0])
        now = due[1].at
        due[1].fn()
      }
      now = until
    },
    get now() {
      return now
    },
  }
}

/** Returns the values in turn, then repeats the last. */
export function scriptedRandom(values) {
  let i = 0
  return () => values[Math.min(i++, values.length - 1)]
}

/** An event as the broker sends it. */
export function event(executionId, seq, type = 'agent-thinking', extra = {}) {
  return {
    type: 'event',
    executionId,
    event: {
      executionId,
      conversationId: 'conv',
      seq,
      timestamp: new Date(1_700_000_000_000 + seq * 10).toISOString(),
      type,
      agentId: 'agent-1',
      thought: `step ${seq}`,
      ...extra,
    },
  }
}

/** fetch answering `GET /api/executions/{id}/events` from an array of events. */
export function fakeHistory(events, pageSize = 2) {
  const calls = []
  const fetch = async (url) => {
    calls.push(url)
    const after = Number(new URL(url).searchParams.get('afterSeq'))
    const page = events.filter((e) => e.seq > after).slice(0, pageSize)
    const full = page.length === pageSize
    const body = { events: page, nextAfterSeq: full ? page[page.length - 1].seq : null }
    return { ok: true, status: 200, json: async () => body }
  }
  return { fetch, calls }
}
