// What the user may do, as the gateway says (`GET /v2/whoami`): per path prefix, the actions
// the user's roles grant there. Views ask `can(action, id)` before offering a button, so a
// user sees only what they may do; the API still decides every call, and a 403 it answers
// disables the button anyway (api.js).
//
// Unknown grants (not asked yet, an external authoriser, a gateway without the endpoint) allow
// everything here: the buttons show and the API's answer tells.

import { ApiError, get } from './api.js';

/** The last answer of /v2/whoami, or null while unknown. */
let me = null;

/** True when the id `id` lies at or below `prefix`, segment by segment ("/a" covers "/a/b", not "/ab"). */
export function covers(prefix, id) {
  const p = String(prefix).split('/').filter(Boolean);
  const s = String(id).split('/').filter(Boolean);
  return p.length <= s.length && p.every((seg, i) => seg === s[i]);
}

/**
 * Asks the gateway who the user is; resolves with the answer, or null when that is unknown.
 * Before a login (401) nothing is allowed, so nothing is offered behind the login form.
 */
export async function loadPermissions() {
  try {
    const r = await get('/v2/whoami');
    me = r && typeof r === 'object' ? r : null;
  } catch (e) {
    me = e instanceof ApiError && e.status === 401
      ? { name: null, authorization: 'roles', system: [], paths: [] }
      : null;
  }
  return me;
}

export function forgetPermissions() {
  me = null;
}

function known() {
  return !!(me && Array.isArray(me.paths));
}

/** May the user do `action` (view, create, update, delete, kill) on the app or group `id`? */
export function can(action, id) {
  if (!known()) return true;
  return me.paths.some((p) => p.actions.includes(action) && covers(p.prefix, id));
}

/** May the user do `action` on every one of `ids`? */
export function canAll(action, ids) {
  return ids.every((id) => can(action, id));
}

/**
 * Where under `group` the user may create apps: `group` itself when allowed there, else the
 * first granted prefix inside it, else null.
 */
export function createTarget(group) {
  if (can('create', group)) return group;
  const inside = me.paths.find((p) => p.actions.includes('create') && covers(group, p.prefix));
  return inside ? inside.prefix : null;
}

/** The user's name for the top bar; null when the API is open or the name is unknown. */
export function userName() {
  return me && me.authorization !== 'open' && typeof me.name === 'string' ? me.name : null;
}
