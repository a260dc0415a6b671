// Stride's web UI: hash routes, the live event stream, login, and the views.
//
//   #/apps[/<group>]          the apps list (views/apps.js)
//   #/app/<id>?tab=…&task=…   one app: tasks, logs, configuration, versions, debug (views/app.js)
//   #/new[?group=<group>]     create an app (views/form.js)
//   #/edit/<id>               edit an app
//   #/deployments             running deployments (views/deployments.js)
//
// A view is `{ refresh(), dispose() }`, made by mounting into <main>. Events from the stream
// (or the 5 s poll when the stream refuses) refresh the current view, debounced. What the user
// may do comes from `GET /v2/whoami` (perms.js) before the first view, and again after a login.

import { bus, clearCredentials, credentials, get } from './api.js';
import { $, $$, h, mount } from './dom.js';
import { Live } from './live.js';
import { forgetPermissions, loadPermissions, userName } from './perms.js';
import { appsView } from './views/apps.js';
import { appView } from './views/app.js';
import { deploymentsView } from './views/deployments.js';
import { formView } from './views/form.js';
import { showLogin } from './views/login.js';

const main = document.getElementById('view');
const live = new Live(document.getElementById('conn'));
let current = null;
let currentKey = '';

/** "#/app/a/b?tab=logs" → {name: 'app', path: '/a/b', params}. */
export function parseRoute(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const pathPart = q >= 0 ? raw.slice(0, q) : raw;
  const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  const segs = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
  const name = segs.shift() || 'apps';
  return { name, path: '/' + segs.join('/'), params };
}

/** Builds a hash for a route: go('app', '/a/b', {tab: 'logs'}). */
export function href(name, path = '/', params = {}) {
  const segs = String(path).split('/').filter(Boolean).map(encodeURIComponent).join('/');
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString();
  return `#/${name}${segs ? '/' + segs : ''}${qs ? '?' + qs : ''}`;
}

export function go(name, path, params) {
  location.hash = href(name, path, params);
}

/** Changes the hash without adding a history entry or re-mounting the view. */
export function replaceParams(params) {
  const r = parseRoute();
  const next = href(r.name, r.path, params);
  history.replaceState(null, '', next);
  currentKey = routeKey(parseRoute(next));
}

function routeKey(r) {
  return `${r.name}:${r.path}`;
}

const views = {
  apps: (el, r) => appsView(el, { group: r.path, nav }),
  app: (el, r) => appView(el, { id: r.path, params: r.params, nav }),
  new: (el, r) => formView(el, { group: r.params.get('group') || '/', nav }),
  edit: (el, r) => formView(el, { id: r.path, nav }),
  deployments: (el) => deploymentsView(el, { nav }),
};

/** What views get to move around and refresh the chrome. */
const nav = { href, go, replaceParams, refreshBadge: () => refreshBadge() };

function route({ remount = false } = {}) {
  const r = parseRoute();
  const key = routeKey(r);
  const make = views[r.name];
  if (!make) {
    go('apps', '/');
    return;
  }
  // Same page with other params (a tab, a task): let the view react without re-mounting.
  if (!remount && current && key === currentKey && current.update) {
    current.update(r.params);
    return;
  }
  if (current && current.dispose) current.dispose();
  currentKey = key;
  for (const a of $$('.mainnav a')) {
    const active = a.dataset.nav === r.name || (a.dataset.nav === 'apps' && ['app', 'new', 'edit'].includes(r.name));
    a.classList.toggle('active', active);
    if (active) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  mount(main);
  current = make(main, r);
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

let refreshTimer = null;
let firstPending = 0;
/** Refreshes the view once events stop for 250 ms, and at least every 1.5 s while they flow. */
function scheduleRefresh() {
  const now = Date.now();
  if (!firstPending) firstPending = now;
  clearTimeout(refreshTimer);
  const wait = Math.max(0, Math.min(250, firstPending + 1500 - now));
  refreshTimer = setTimeout(() => {
    firstPending = 0;
    if (current && current.refresh) current.refresh();
    refreshBadge();
  }, wait);
}

async function refreshBadge() {
  const badge = document.getElementById('deployment-count');
  try {
    const deployments = await get('/v2/deployments');
    const n = Array.isArray(deployments) ? deployments.length : 0;
    badge.textContent = String(n);
    badge.hidden = n === 0;
  } catch {
    badge.hidden = true;
  }
}

function updateUser() {
  const name = userName();
  const user = $('#user');
  user.textContent = name || '';
  user.title = name ? `Logged in as ${name}` : '';
  user.hidden = !name;
  $('#logout').hidden = !credentials();
}

let loggingIn = false;
bus.addEventListener('unauthorized', async () => {
  // Every call that meets the 401 lands here; one form is enough.
  if (loggingIn) return;
  loggingIn = true;
  const ok = await showLogin();
  loggingIn = false;
  if (ok) {
    await loadPermissions();
    updateUser();
    live.restart();
    // Drawn again with this user's permissions.
    route({ remount: true });
    refreshBadge();
  }
});

$('#logout').addEventListener('click', () => {
  clearCredentials();
  forgetPermissions();
  location.reload();
});

live.on((type) => {
  if (type === 'event_stream_attached' || type === 'event_stream_detached' || type === 'message') return;
  scheduleRefresh();
});

window.addEventListener('hashchange', () => route());

// Exposed for the browser tests and for poking around in the console.
window.stride = { live, parseRoute, href, h };

async function start() {
  await loadPermissions();
  updateUser();
  route();
  refreshBadge();
  live.start();
}

start();
