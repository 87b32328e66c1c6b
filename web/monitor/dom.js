/**
 * Small helpers to build HTML and SVG elements and to format figures.
 * Elements are built, never parsed from strings, so event text can't inject markup.
 * @module agent-events/monitor/dom
 */

const SVG_NS = 'http://www.w3.org/2000/svg'

/**
 * An HTML element. `attrs` keys starting with `on` are listeners; `dataset`
 * sets data-* attributes; `style` takes an object of properties; `null`/`undefined`/`false` values are skipped.
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string|number|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children)
}

/**
 * An SVG element, with the same conventions as {@link h}.
 * @returns {SVGElement}
 */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children)
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue
    if (key === 'dataset') Object.assign(el.dataset, value)
    // Through the CSSOM, which the page's Content-Security-Policy allows
    // (a `style` attribute would be refused).
    else if (key === 'style') for (const [k, v] of Object.entries(value)) el.style.setProperty(k, v)
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue
    el.append(child instanceof Node ? child : String(child))
  }
  return el
}

/** `1.2 s`, `3 min 04 s`, `850 ms`. */
export function duration(ms) {
  if (ms === undefined || Number.isNaN(ms)) return '—'
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const minutes = Math.floor(ms / 60_000)
  const seconds = Math.round((ms % 60_000) / 1000)
  return `${minutes} min ${String(seconds).padStart(2, '0')} s`
}

/** Local wall-clock time with milliseconds, e.g. `14:03:07.120`. */
export function clock(ms) {
  const d = new Date(ms)
  const pad = (n, w = 2) => String(n).padStart(w, '0')
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
}

/** `12,345`: grouped by hand, since Intl formatting is slow enough to show when redrawing often. */
export function count(n) {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',')
}

/** `$0.0123`: cents are too coarse for single model calls. */
export function usd(value) {
  return `$${value < 1 ? value.toFixed(4) : value.toFixed(2)}`
}

/** A short, readable rendering of any JSON value for one line. */
export function brief(value, max = 80) {
  if (value === undefined) return ''
  const text = typeof value === 'string' ? value : JSON.stringify(value)
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

/**
 * Colours of departments, by order of appearance; failures always use
 * `--fail` instead, so a red mark never means "the red department".
 */
export const PALETTE = ['#2563eb', '#9333ea', '#0d9488', '#c2410c', '#db2777', '#4f46e5', '#65a30d', '#0891b2']

/** The colour of a department in a model (stable while the model lives). */
export function departmentColour(model, key) {
  const index = [...model.departments.keys()].indexOf(key)
  return index === -1 ? '#64748b' : PALETTE[index % PALETTE.length]
}
