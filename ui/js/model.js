// What the UI derives from the API's JSON, as plain functions: an app's status, health counts,
// the group tree, the form fields a 422's paths name, and the text formats of the form.

export const STATUSES = ['running', 'deploying', 'suspended', 'waiting', 'delayed'];

/** Queue entries (GET /v2/queue) by app id. */
export function queueByApp(queue) {
  const m = new Map();
  for (const item of (queue && queue.queue) || []) {
    const id = item.app ? item.app.id : item.pod && item.pod.id;
    if (id) m.set(id, item);
  }
  return m;
}

/**
 * Queued, not held back by a delay, and nothing offered has matched: waiting for resources.
 * A launch that is merely in flight (no offer seen yet, queued a moment ago) is not waiting.
 */
export function isWaiting(q, now = Date.now()) {
  if (!q || !(q.count > 0) || !q.delay || q.delay.overdue !== true) return false;
  const s = q.processedOffersSummary || {};
  if ((s.unusedOffersCount || 0) > 0 && !s.lastUsedOfferAt) return true;
  const since = Date.parse(q.since || '');
  return !Number.isNaN(since) && now - since > 10000;
}

export function isDelayed(q) {
  return !!q && q.count > 0 && !!q.delay && q.delay.overdue === false;
}

/**
 * The app's status as the list shows it. Delayed and waiting say why a deployment is not
 * progressing, so they win over deploying; suspended is instances 0 with nothing running.
 */
export function appStatus(app, q) {
  if (isDelayed(q)) return 'delayed';
  if (isWaiting(q)) return 'waiting';
  if ((app.deployments || []).length > 0) return 'deploying';
  if (app.instances === 0 && (app.tasksRunning || 0) === 0 && (app.tasksStaged || 0) === 0) return 'suspended';
  return 'running';
}

/** Segments of the instances bar: healthy, unhealthy, running with no health, staged, missing. */
export function healthBar(app) {
  const running = app.tasksRunning || 0;
  const healthy = Math.min(app.tasksHealthy || 0, running);
  const unhealthy = Math.min(app.tasksUnhealthy || 0, running - healthy);
  const staged = app.tasksStaged || 0;
  const unknown = Math.max(0, running - healthy - unhealthy);
  const missing = Math.max(0, (app.instances || 0) - running - staged);
  const total = Math.max(1, healthy + unhealthy + unknown + staged + missing);
  return { healthy, unhealthy, unknown, staged, missing, total };
}

/** A task's health from its healthCheckResults: healthy, unhealthy, or unknown. */
export function taskHealth(task) {
  const r = task.healthCheckResults || [];
  if (r.length === 0) return 'unknown';
  return r.every((x) => x.alive) ? 'healthy' : 'unhealthy';
}

/** The group tree from GET /v2/groups: {id, name, groups:[...], apps: n (transitive)}. */
export function groupTree(group) {
  const groups = (group.groups || []).map(groupTree).sort((a, b) => a.id.localeCompare(b.id));
  const apps = (group.apps || []).length + groups.reduce((n, g) => n + g.apps, 0);
  const id = group.id || '/';
  return { id, name: id === '/' ? 'All' : id.split('/').filter(Boolean).pop(), groups, apps };
}

/** True when `appId` lies in `groupId` (transitively). */
export function inGroup(appId, groupId) {
  if (!groupId || groupId === '/') return true;
  return appId.startsWith(groupId.replace(/\/$/, '') + '/');
}

/** "/a/b/web" → ["/a", "/a/b"]. */
export function parentGroups(id) {
  const segs = id.split('/').filter(Boolean);
  const out = [];
  for (let i = 1; i < segs.length; i++) out.push('/' + segs.slice(0, i).join('/'));
  return out;
}

/**
 * The form field a 422 detail path belongs to, or null for the summary:
 * `/cpus` → cpus, `/healthChecks(0)/path` → healthChecks, `/container/docker/image` → image.
 */
export function fieldForPath(path) {
  const p = String(path || '');
  const first = (p.match(/^\/([A-Za-z]+)/) || [])[1];
  if (!first) return null;
  if (first === 'container') return /^\/container\/docker\/image/.test(p) || p === '/container' ? 'image' : null;
  const direct = ['id', 'cmd', 'instances', 'cpus', 'mem', 'disk', 'env', 'labels', 'constraints', 'healthChecks'];
  if (direct.includes(first)) return first;
  if (first === 'portDefinitions' || first === 'ports' || first === 'requirePorts') return 'ports';
  if (first === 'args') return 'cmd';
  return null;
}

/** "KEY=value" lines → object; returns {value, errors}. */
export function parseKeyValues(text, what) {
  const value = {};
  const errors = [];
  text.split('\n').forEach((line, i) => {
    const l = line.trim();
    if (!l || l.startsWith('#')) return;
    const eq = l.indexOf('=');
    if (eq <= 0) { errors.push(`${what} line ${i + 1}: write KEY=value`); return; }
    value[l.slice(0, eq).trim()] = l.slice(eq + 1);
  });
  return { value, errors };
}

export function formatKeyValues(obj) {
  return Object.entries(obj || {}).filter(([, v]) => typeof v === 'string').map(([k, v]) => `${k}=${v}`).join('\n');
}

/** "field:OPERATOR[:value]" lines → Marathon constraints. */
export function parseConstraints(text) {
  const value = [];
  const errors = [];
  text.split('\n').forEach((line, i) => {
    const l = line.trim();
    if (!l) return;
    const parts = l.split(':');
    if (parts.length < 2 || !parts[0] || !parts[1]) { errors.push(`constraint line ${i + 1}: write field:OPERATOR[:value]`); return; }
    const [field, op, ...rest] = parts;
    value.push(rest.length ? [field.trim(), op.trim().toUpperCase(), rest.join(':').trim()] : [field.trim(), op.trim().toUpperCase()]);
  });
  return { value, errors };
}

export function formatConstraints(cs) {
  return (cs || []).map((c) => c.join(':')).join('\n');
}

/** "80, 0, 8080/udp" → portDefinitions; "" → []. */
export function parsePorts(text) {
  const value = [];
  const errors = [];
  text.split(/[,\s]+/).filter(Boolean).forEach((t) => {
    const m = /^(\d+)(?:\/(tcp|udp|udp,tcp))?$/.exec(t);
    if (!m) { errors.push(`port "${t}": write a number, 0 for any, optionally /udp`); return; }
    const pd = { port: Number(m[1]), protocol: m[2] || 'tcp' };
    value.push(pd);
  });
  return { value, errors };
}

export function formatPorts(pds) {
  return (pds || []).map((p) => (p.protocol && p.protocol !== 'tcp' ? `${p.port}/${p.protocol}` : String(p.port))).join(', ');
}

/** Fields GET adds to an app that a PUT must not send back. */
export const RESPONSE_ONLY = ['version', 'versionInfo', 'tasksStaged', 'tasksRunning', 'tasksHealthy',
  'tasksUnhealthy', 'deployments', 'tasks', 'lastTaskFailure', 'readinessCheckResults', 'tasksStats', 'taskStats'];

/** The app definition without what GET added, for editing. */
export function definitionOf(app) {
  const out = {};
  for (const [k, v] of Object.entries(app || {})) if (!RESPONSE_ONLY.includes(k)) out[k] = v;
  return out;
}

/** Why a queued launch is not matching, from the reject funnel: "InsufficientCpus (1 of 1 offers)". */
export function rejectSummary(q) {
  const rows = (q && q.processedOffersSummary && q.processedOffersSummary.rejectSummaryLastOffers) || [];
  return rows.filter((r) => r.declined > 0).map((r) => `${r.reason} (${r.declined} of ${r.processed} offers)`).join(', ');
}
