// The Marathon API as the UI uses it: fetch with the session's credentials, Marathon's error
// bodies turned into ApiError, 401 announced so the login form can show, and `act()`, which
// runs a button's action with the UI's answers to 403 (say why, disable the button) and 409
// (offer to force).
//
// Requests go out with `credentials: 'omit'`: the only credentials are the `Authorization`
// header set here, so the browser neither sends credentials it remembers nor shows its own
// login prompt on a 401.

import { confirmDialog, toast } from './dom.js';

const AUTH_KEY = 'stride.auth';

/** Fires 'unauthorized' (a 401 arrived) and 'authorized' (credentials were accepted). */
export const bus = new EventTarget();

export class ApiError extends Error {
  constructor(status, body, text) {
    const message = (body && typeof body.message === 'string' && body.message)
      || (status ? `HTTP ${status}` : 'The API cannot be reached')
      || text;
    super(message);
    this.status = status;
    this.body = body || {};
    this.details = Array.isArray(this.body.details) ? this.body.details : [];
  }
}

/** The `Authorization` header of this tab's session ("Basic …" or "Bearer …"), or null. */
export function credentials() {
  try { return sessionStorage.getItem(AUTH_KEY); } catch { return null; }
}

/** Keeps "user:password" for this tab's session, as HTTP Basic sends it. */
export function setCredentials(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = '';
  bytes.forEach((b) => { bin += String.fromCharCode(b); });
  sessionStorage.setItem(AUTH_KEY, `Basic ${btoa(bin)}`);
}

/** Keeps a bearer token (`<name>.<secret>`) for this tab's session. */
export function setToken(token) {
  sessionStorage.setItem(AUTH_KEY, `Bearer ${token.trim()}`);
}

export function clearCredentials() {
  try { sessionStorage.removeItem(AUTH_KEY); } catch { /* storage disabled */ }
}

/** True once the API has asked for credentials in this session. */
export let authRequired = false;

/** `/v2/apps` + an app id, each segment escaped (ids are paths: `/prod/web`). */
export function appUrl(id, suffix = '') {
  const segs = String(id).split('/').filter(Boolean).map(encodeURIComponent);
  return `/v2/apps/${segs.join('/')}${suffix}`;
}

/**
 * One API call. Resolves with the parsed JSON body (or null); rejects with ApiError for a
 * non-2xx answer or a network failure.
 */
export async function api(method, path, body, { headers = {} } = {}) {
  const h = { Accept: 'application/json', ...headers };
  const auth = credentials();
  if (auth) h.Authorization = auth;
  let payload;
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: payload, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new ApiError(0, { message: `The API cannot be reached (${e.message})` });
  }
  const text = await res.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (res.status === 401) {
    authRequired = true;
    bus.dispatchEvent(new CustomEvent('unauthorized', { detail: { path, challenge: res.headers.get('WWW-Authenticate') } }));
  }
  if (!res.ok) throw new ApiError(res.status, json || { message: text.trim() || `HTTP ${res.status}` }, text);
  return json;
}

export const get = (path) => api('GET', path);

/** The words for an error a user meets: a 403 says plainly that their role does not allow it. */
export function explain(e) {
  // The gateway's "Not authorized: alice may not view /x" reads best without its first words.
  if (e instanceof ApiError && e.status === 403) return `Not allowed for your role: ${e.message.replace(/^Not authori[sz]ed: /i, '')}`;
  return e.message;
}

/**
 * Runs a user's action from `button`: disables it meanwhile, shows success or the API's
 * message, disables the button for good on 403 (the API forbids it for this user), and on a
 * 409 deployment lock offers to retry with `force=true`. `fn(force)` performs the call.
 */
export async function act(button, fn, { ok, forceable = true } = {}) {
  const wasDisabled = button ? button.disabled : false;
  if (button) { button.disabled = true; button.classList.add('busy'); }
  try {
    const result = await fn(false);
    if (ok) toast(ok, 'ok');
    return result;
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    if (e.status === 409 && forceable && Array.isArray(e.body.deployments)) {
      const yes = await confirmDialog('The app is being deployed', `${e.message} Force the change, cancelling that deployment?`, 'Force', true);
      if (yes) {
        try {
          const result = await fn(true);
          if (ok) toast(ok, 'ok');
          return result;
        } catch (e2) {
          report(button, e2);
          return undefined;
        }
      }
      return undefined;
    }
    report(button, e);
    return undefined;
  } finally {
    if (button) {
      button.classList.remove('busy');
      if (!button.dataset.forbidden) button.disabled = wasDisabled;
    }
  }
}

/** Actions the API refused with 403, by `action|scope`, with its message. */
const forbidden = new Map();

function forbiddenKey(button) {
  const scope = button.closest('[data-scope]');
  return `${button.dataset.action || button.textContent}|${scope ? scope.dataset.scope : ''}`;
}

function markForbidden(button, message) {
  button.dataset.forbidden = 'true';
  button.disabled = true;
  button.title = message;
  button.classList.add('forbidden');
}

/**
 * Disables the buttons under `root` whose action the API has forbidden in this session; views
 * call it after rendering, so a re-render does not bring a forbidden button back.
 */
export function applyForbidden(root) {
  if (!forbidden.size) return;
  for (const b of root.querySelectorAll('button[data-action]')) {
    const message = forbidden.get(forbiddenKey(b));
    if (message) markForbidden(b, message);
  }
}

function report(button, e) {
  if (!(e instanceof ApiError)) throw e;
  if (e.status === 403 && button) {
    forbidden.set(forbiddenKey(button), e.message);
    markForbidden(button, e.message);
  }
  if (e.status !== 401) toast(explain(e), 'error', 8000);
}

/** Adds `force=true` to a path when asked. */
export function withForce(path, force) {
  if (!force) return path;
  return path + (path.includes('?') ? '&' : '?') + 'force=true';
}
