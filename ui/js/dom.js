// Small DOM helpers: element construction without innerHTML (so API data is never parsed as
// markup), formatting of times and numbers, toasts and a modal dialog.

/**
 * h('a.btn#id', {href: '#/x', onclick: fn, dataset: {k: 'v'}}, 'text', childNode, [more])
 * Props starting with "on" become listeners; `class`, `dataset`, `style` (an object) and
 * boolean attributes are handled; null/undefined/false children are skipped.
 */
export function h(spec, props, ...children) {
  if (props === null || typeof props !== 'object' || props instanceof Node || Array.isArray(props)) {
    children.unshift(props);
    props = {};
  }
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === 'class') String(v).split(/\s+/).filter(Boolean).forEach((c) => el.classList.add(c));
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') Object.assign(el.style, v);
    else if (k === 'value' || k === 'checked' || k === 'selected' || k === 'disabled') el[k] = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** "3 min ago" style relative time for an ISO timestamp. */
export function ago(iso) {
  if (!iso) return '';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 0) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A <time> with the ISO value as its title and a relative text. */
export function time(iso) {
  if (!iso) return h('span.muted', '—');
  return h('time', { datetime: iso, title: iso }, ago(iso));
}

/** 0.1 → "0.1", 1 → "1", 0.30000000000000004 → "0.3". */
export function num(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  return String(Math.round(n * 1000) / 1000);
}

/** MiB → "32 MiB" / "1.5 GiB". */
export function mib(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  return n >= 1024 ? `${num(n / 1024)} GiB` : `${num(n)} MiB`;
}

/** A short-lived message at the top of the page. kind: info | error | ok */
export function toast(text, kind = 'info', ms = 5000) {
  const root = document.getElementById('toasts');
  if (!root) return;
  const el = h(`div.toast.toast-${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, text);
  root.appendChild(el);
  setTimeout(() => el.remove(), ms);
}

/**
 * A modal dialog. `build(close)` returns the dialog's body; resolves with what `close(v)` is
 * given (undefined when dismissed).
 */
export function modal(title, build, { wide = false } = {}) {
  return new Promise((resolve) => {
    const root = document.getElementById('modal-root');
    const previous = document.activeElement;
    let done = false;
    const close = (v) => {
      if (done) return;
      done = true;
      overlay.remove();
      document.removeEventListener('keydown', onKey);
      if (previous && previous.focus) previous.focus();
      resolve(v);
    };
    const onKey = (e) => { if (e.key === 'Escape') close(undefined); };
    const dialog = h(`div.modal${wide ? '.modal-wide' : ''}`, { role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
      h('div.modal-head', h('h2', title), h('button.icon-btn', { type: 'button', 'aria-label': 'Close', onclick: () => close(undefined) }, '×')),
      h('div.modal-body', build(close)));
    const overlay = h('div.overlay', { onclick: (e) => { if (e.target === overlay) close(undefined); } }, dialog);
    root.appendChild(overlay);
    document.addEventListener('keydown', onKey);
    const first = dialog.querySelector('input, textarea, select, button.primary');
    if (first) first.focus();
  });
}

/** Asks for confirmation; resolves true or false. */
export function confirmDialog(title, text, action = 'Confirm', danger = false) {
  return modal(title, (close) => [
    h('p', text),
    h('div.actions',
      h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'),
      h(`button.primary${danger ? '.danger' : ''}`, { type: 'button', dataset: { confirm: '' }, onclick: () => close(true) }, action)),
  ]).then((v) => v === true);
}

/** Calls `fn` at most once per `ms`, after the last call (trailing debounce). */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
}
