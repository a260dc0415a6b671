// One app: its status and actions (scale, restart, suspend, edit, destroy), and tabs for its
// tasks (kill, kill and scale), their logs, the configuration, the versions with a diff between
// any two and "apply this version", and debugging (last task failure, launch delay and reset).
//
// Data: GET /v2/apps/{id} (counts, tasks, deployments and lastTaskFailure are always embedded),
// GET /v2/queue, and on their tabs GET /v2/apps/{id}/versions[/{v}].

import { ApiError, act, api, appUrl, applyForbidden, explain, get, withForce } from '../api.js';
import { ago, confirmDialog, h, mib, modal, mount, num, time, toast } from '../dom.js';
import { diffLines, hunks, prettyJson } from '../diff.js';
import { appStatus, definitionOf, isDelayed, isWaiting, parentGroups, queueByApp, rejectSummary, taskHealth } from '../model.js';
import { can } from '../perms.js';
import { instancesCell, statusBadge } from './apps.js';
import { LogTail } from './logs.js';

const TABS = [
  ['tasks', 'Tasks'],
  ['logs', 'Logs'],
  ['config', 'Configuration'],
  ['versions', 'Versions'],
  ['debug', 'Debug'],
];

export function appView(el, { id, params, nav }) {
  let tab = tabOf(params);
  let taskParam = params.get('task') || '';
  let fileParam = params.get('file') === 'stderr' ? 'stderr' : 'stdout';
  let app = null;
  let queueItem = null;
  let loadError = null;
  let gone = false;
  let disposed = false;
  let seq = 0;
  const selected = new Set();
  const versionDefs = new Map();
  let versions = null;
  let versionsOf = '';
  let diffA = '';
  let diffB = '';
  let diffAll = false;
  let tail = null;

  const head = h('div.app-head');
  const banner = h('div.banners');
  const tabsNav = h('nav.tabs', { role: 'tablist', 'aria-label': 'App sections' });
  const body = h('section.tab-body', { role: 'tabpanel' });
  mount(el, h('div.page.app-page', { dataset: { scope: id } }, head, banner, tabsNav, body));
  document.title = `Stride · ${id}`;

  function tabOf(p) {
    const t = p.get('tab');
    return TABS.some(([k]) => k === t) ? t : 'tasks';
  }

  function renderTabs() {
    // Nothing to show under tabs for an app that cannot be read.
    if (!app && (loadError || gone)) { mount(tabsNav); return; }
    mount(tabsNav, TABS.map(([k, label]) => h('a', {
      href: nav.href('app', id, { tab: k === 'tasks' ? '' : k, task: k === 'logs' ? taskParam : '' }),
      role: 'tab', 'aria-selected': k === tab ? 'true' : 'false', class: k === tab ? 'active' : '', dataset: { tab: k },
    }, label, k === 'tasks' && app ? h('span.count', String((app.tasks || []).length)) : null)));
  }

  function renderHead() {
    const crumbs = h('div.crumbs', h('a', { href: nav.href('apps', '/') }, 'Applications'),
      parentGroups(id).map((g) => [' / ', h('a', { href: nav.href('apps', g) }, g.split('/').pop())]));
    if (!app) {
      mount(head, crumbs, h('h1', id));
      return;
    }
    const status = appStatus(app, queueItem);
    const suspended = app.instances === 0;
    const btn = (action, label, onclick, cls = '') => h(`button${cls}`, { type: 'button', dataset: { action }, onclick }, label);
    // Only what the user's role allows is offered.
    const update = can('update', id);
    const remove = can('delete', id);
    mount(head,
      crumbs,
      h('div.page-head',
        h('div.title-line', h('h1', { title: id }, id.split('/').pop() || id), statusBadge(status)),
        update || remove
          ? h('div.actions.app-actions',
            update ? btn('scale', 'Scale', (e) => scale(e.currentTarget)) : null,
            update ? btn('restart', 'Restart', (e) => restart(e.currentTarget)) : null,
            update && suspended ? btn('resume', 'Resume', (e) => scale(e.currentTarget, 1)) : null,
            update && !suspended ? btn('suspend', 'Suspend', (e) => suspend(e.currentTarget)) : null,
            update ? h('a.button', { href: nav.href('edit', id), dataset: { action: 'edit' } }, 'Edit') : null,
            remove ? btn('destroy', 'Destroy', (e) => destroy(e.currentTarget), '.danger') : null)
          : h('p.muted.view-only', { dataset: { viewOnly: '' } }, 'View only: your role may not change this app.')),
      h('dl.facts',
        h('div', h('dt', 'Instances'), h('dd', instancesCell(app))),
        h('div', h('dt', 'CPU'), h('dd', num(app.cpus))),
        h('div', h('dt', 'Memory'), h('dd', mib(app.mem))),
        h('div', h('dt', 'Disk'), h('dd', mib(app.disk))),
        h('div', h('dt', 'Version'), h('dd', time(app.version)))));
  }

  function renderBanners() {
    const items = [];
    if (app && isDelayed(queueItem)) {
      items.push(h('div.notice.notice-warn', { dataset: { banner: 'delayed' } },
        `Launches are delayed after failures: ${queueItem.delay.timeLeftSeconds} s left. `,
        can('update', id) ? h('button', { type: 'button', dataset: { action: 'reset-delay' }, onclick: (e) => resetDelay(e.currentTarget) }, 'Reset delay') : null));
    } else if (app && isWaiting(queueItem)) {
      const why = rejectSummary(queueItem);
      items.push(h('div.notice.notice-warn', { dataset: { banner: 'waiting' } },
        `Waiting for resources: ${queueItem.count} instance(s) not placed${why ? ` — offers declined: ${why}` : ''}.`));
    }
    if (app && (app.deployments || []).length) {
      items.push(h('div.notice', { dataset: { banner: 'deploying' } },
        'A deployment is in progress. ', h('a', { href: nav.href('deployments') }, 'See deployments')));
    }
    if (gone) items.push(h('div.notice.notice-error', 'This app no longer exists. ', h('a', { href: nav.href('apps', '/') }, 'Back to the list')));
    else if (loadError) items.push(h('div.notice.notice-error', loadError));
    mount(banner, items);
  }

  // ---- tabs ----

  function renderBody() {
    if (!app) {
      if (!loadError && !gone) mount(body, h('p.muted.loading', 'Loading…'));
      else mount(body);
      return;
    }
    if (tab !== 'logs' && tail) { tail.stop(); tail = null; }
    ({ tasks: renderTasks, logs: renderLogs, config: renderConfig, versions: renderVersions, debug: renderDebug })[tab]();
  }

  function renderTasks() {
    const tasks = (app.tasks || []).slice().sort((a, b) => (a.startedAt || a.stagedAt || '').localeCompare(b.startedAt || b.stagedAt || ''));
    for (const t of [...selected]) if (!tasks.some((x) => x.id === t)) selected.delete(t);
    const hasChecks = (app.healthChecks || []).length > 0;
    const mayKill = can('kill', id);
    const killBtn = h('button', { type: 'button', dataset: { action: 'kill' }, disabled: selected.size === 0, onclick: (e) => kill(e.currentTarget, false) }, 'Kill');
    const killScaleBtn = h('button', { type: 'button', dataset: { action: 'kill-scale' }, disabled: selected.size === 0, onclick: (e) => kill(e.currentTarget, true) }, 'Kill & scale');
    const sync = () => {
      killBtn.disabled = selected.size === 0 || !!killBtn.dataset.forbidden;
      killScaleBtn.disabled = selected.size === 0 || !!killScaleBtn.dataset.forbidden;
    };
    if (tasks.length === 0) {
      mount(body, h('p.empty', app.instances === 0 ? 'Suspended: no tasks.' : 'No tasks yet.'));
      return;
    }
    const all = h('input', {
      type: 'checkbox', 'aria-label': 'Select all tasks', checked: tasks.length > 0 && selected.size === tasks.length,
      onchange: () => {
        selected.clear();
        if (all.checked) tasks.forEach((t) => selected.add(t.id));
        body.querySelectorAll('input[data-task]').forEach((b) => { b.checked = all.checked; });
        sync();
      },
    });
    mount(body,
      mayKill ? h('div.toolbar', killBtn, killScaleBtn, h('span.muted.hint', 'Select tasks to kill; “Kill & scale” also lowers the instance count.')) : null,
      h('table.tasks',
        h('thead', h('tr', mayKill ? h('th.check', all) : null, h('th', 'Task'), h('th', 'Host and ports'), h('th', 'Health'),
          h('th', 'State'), h('th', 'Started'), h('th', 'Version'), h('th', ''))),
        h('tbody', tasks.map((t) => {
          const box = h('input', {
            type: 'checkbox', 'aria-label': `Select ${t.id}`, dataset: { task: t.id }, checked: selected.has(t.id),
            onchange: () => { if (box.checked) selected.add(t.id); else selected.delete(t.id); sync(); },
          });
          return h('tr.task-row', { dataset: { taskId: t.id, state: t.state || '' } },
            mayKill ? h('td.check', box) : null,
            h('td.task-id', { dataset: { label: 'Task' } }, h('code', { title: t.id }, shortTask(t.id))),
            h('td', { dataset: { label: 'Host' } }, hostPorts(t)),
            h('td', { dataset: { label: 'Health' } }, healthCell(t, hasChecks)),
            h('td', { dataset: { label: 'State' } }, h(`span.state.state-${(t.state || '').toLowerCase()}`, (t.state || '').replace(/^TASK_/, '').toLowerCase())),
            h('td', { dataset: { label: 'Started' } }, time(t.startedAt || t.stagedAt)),
            h('td', { dataset: { label: 'Version' } }, t.version === app.version ? h('span', { title: t.version }, 'current') : time(t.version)),
            h('td.row-actions', h('a', { href: nav.href('app', id, { tab: 'logs', task: t.id }), dataset: { logsFor: t.id } }, 'Logs')));
        }))));
  }

  function hostPorts(t) {
    const ports = t.ports || [];
    if (!ports.length) return h('span', t.host || '—');
    return h('span.host-ports', t.host, ':', ports.map((p, i) => [i ? ', ' : '', h('a', { href: `http://${t.host}:${p}/`, target: '_blank', rel: 'noopener noreferrer' }, String(p))]));
  }

  function healthCell(t, hasChecks) {
    const results = t.healthCheckResults || [];
    if (!hasChecks && !results.length) return h('span.muted', '—');
    const health = taskHealth(t);
    const label = health === 'unknown' ? 'no results yet' : health;
    const detail = results.map((r, i) => `check ${i}: ${r.alive ? 'alive' : 'failing'}`
      + `${r.lastSuccess ? `, last success ${r.lastSuccess}` : ''}`
      + `${r.lastFailure ? `, last failure ${r.lastFailure}` : ''}`
      + `${r.lastFailureCause ? ` (${r.lastFailureCause})` : ''}`
      + `${r.consecutiveFailures ? `, ${r.consecutiveFailures} consecutive failures` : ''}`).join('\n');
    return h(`span.health.health-${health}`, { title: detail || label, dataset: { health } }, h('span.dot', { 'aria-hidden': 'true' }), label);
  }

  function renderLogs() {
    const tasks = (app.tasks || []);
    if (!tasks.length) {
      if (tail) { tail.stop(); tail = null; }
      mount(body, h('p.empty', 'No tasks, so no logs.'));
      return;
    }
    if (!taskParam || !tasks.some((t) => t.id === taskParam)) {
      // A task that has gone keeps its tail until another is chosen.
      if (!tail || !taskParam) taskParam = tasks[0].id;
    }
    const existing = tail && tail.taskId === taskParam && tail.file === fileParam;
    if (!existing) {
      if (tail) tail.stop();
      tail = new LogTail(taskParam, fileParam);
      tail.start();
    }
    const picker = h('select#log-task', {
      'aria-label': 'Task',
      onchange: () => { taskParam = picker.value; nav.replaceParams({ tab: 'logs', task: taskParam, file: fileParam === 'stdout' ? '' : fileParam }); renderLogs(); },
    }, tasks.map((t) => h('option', { value: t.id, selected: t.id === taskParam }, `${shortTask(t.id)} on ${t.host}`)),
    tasks.some((t) => t.id === taskParam) ? null : h('option', { value: taskParam, selected: true }, `${shortTask(taskParam)} (gone)`));
    const fileBtn = (f) => h('button', {
      type: 'button', class: f === fileParam ? 'active' : '', 'aria-pressed': f === fileParam ? 'true' : 'false', dataset: { file: f },
      onclick: () => { fileParam = f; nav.replaceParams({ tab: 'logs', task: taskParam, file: f === 'stdout' ? '' : f }); renderLogs(); },
    }, f);
    const follow = h('input', { type: 'checkbox', checked: tail.following, onchange: () => tail.setFollowing(follow.checked) });
    const toolbar = h('div.toolbar.log-toolbar', picker, h('div.segmented', fileBtn('stdout'), fileBtn('stderr')),
      h('label.follow', follow, ' Follow'));
    // Keep the log element where it is: moving it would lose its scroll position.
    if (existing && tail.el.parentNode === body && body.firstElementChild !== tail.el) body.firstElementChild.replaceWith(toolbar);
    else mount(body, toolbar, tail.el);
  }

  function renderConfig() {
    const def = definitionOf(app);
    mount(body,
      can('update', id)
        ? h('div.toolbar', h('a.button', { href: nav.href('edit', id), dataset: { action: 'edit' } }, 'Edit'),
          h('a.button', { href: nav.href('edit', id, { mode: 'json' }) }, 'Edit as JSON'))
        : null,
      h('pre.json.config', JSON.stringify(def, null, 2)));
  }

  async function loadVersions() {
    if (versions && versionsOf === app.version) return;
    const r = await get(appUrl(id, '/versions'));
    versions = ((r && r.versions) || []).slice().sort().reverse();
    versionsOf = app.version;
    if (!versions.includes(diffB)) diffB = versions[0] || '';
    if (!versions.includes(diffA)) diffA = versions[1] || versions[0] || '';
  }

  async function versionDef(v) {
    if (!versionDefs.has(v)) versionDefs.set(v, await get(appUrl(id, `/versions/${encodeURIComponent(v)}`)));
    return versionDefs.get(v);
  }

  async function renderVersions() {
    if (!versions) mount(body, h('p.muted.loading', 'Loading versions…'));
    try {
      await loadVersions();
    } catch (e) {
      mount(body, h('p.notice.notice-error', `Cannot load versions: ${e.message}`));
      return;
    }
    if (tab !== 'versions' || disposed) return;
    const diffBox = h('div.diff-box');
    const pick = (side, v) => h('input', {
      type: 'radio', name: `diff-${side}`, value: v, checked: (side === 'a' ? diffA : diffB) === v,
      'aria-label': `Compare ${side === 'a' ? 'from' : 'to'} ${v}`,
      onchange: () => { if (side === 'a') diffA = v; else diffB = v; showDiff(diffBox); },
    });
    mount(body,
      h('table.versions',
        h('thead', h('tr', h('th', 'From'), h('th', 'To'), h('th', 'Version'), h('th', ''))),
        h('tbody', versions.map((v) => h('tr', { dataset: { version: v } },
          h('td.check', { dataset: { label: 'From' } }, pick('a', v)), h('td.check', { dataset: { label: 'To' } }, pick('b', v)),
          h('td', h('code', v), ' ', h('span.muted', ago(v)), v === app.version ? h('span.tag', 'current') : null),
          h('td.row-actions',
            h('button', { type: 'button', dataset: { action: 'view-version' }, onclick: () => viewVersion(v) }, 'View'),
            v === app.version || !can('update', id) ? null : h('button', { type: 'button', dataset: { action: 'apply-version' }, onclick: (e) => applyVersion(e.currentTarget, v) }, 'Apply this version')))))),
      h('div.diff-head', h('h2', 'Differences'),
        h('label', h('input', { type: 'checkbox', checked: diffAll, onchange: (e) => { diffAll = e.target.checked; showDiff(diffBox); } }), ' Show everything')),
      diffBox);
    applyForbidden(body);
    showDiff(diffBox);
  }

  async function showDiff(box) {
    if (!diffA || !diffB) { mount(box, h('p.muted', 'Only one version.')); return; }
    try {
      const [a, b] = await Promise.all([versionDef(diffA), versionDef(diffB)]);
      const lines = diffLines(prettyJson(a), prettyJson(b));
      const changed = lines.filter((l) => l.op !== ' ').length;
      const shown = diffAll ? lines : hunks(lines, 3);
      mount(box,
        h('p.muted', diffA === diffB ? 'The same version on both sides.' : `${changed} changed line(s) from ${diffA} to ${diffB}.`),
        h('pre.diff', { dataset: { changed: String(changed) } }, shown.map((l) => (l.skip
          ? h('span.diff-skip', `⋯ ${l.skip} unchanged line(s)\n`)
          : h(`span.diff-line.diff-${l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same'}`, `${l.op} ${l.text}\n`)))));
    } catch (e) {
      mount(box, h('p.notice.notice-error', `Cannot load a version: ${e.message}`));
    }
  }

  async function viewVersion(v) {
    let def;
    try { def = await versionDef(v); } catch (e) { toast(e.message, 'error'); return; }
    modal(`${id} at ${v}`, () => h('pre.json', JSON.stringify(def, null, 2)), { wide: true });
  }

  function renderDebug() {
    const f = app.lastTaskFailure;
    const q = queueItem;
    mount(body,
      h('h2', 'Last task failure'),
      f ? h('dl.kv', { dataset: { section: 'last-failure' } },
        kv('State', f.state), kv('Message', f.message), kv('Task', h('code', f.taskId)), kv('Host', f.host),
        kv('When', time(f.timestamp)), kv('Version', f.version))
        : h('p.muted', 'No task of this app has failed.'),
      h('h2', 'Launch queue'),
      q ? h('dl.kv', { dataset: { section: 'queue' } },
        kv('Instances to launch', String(q.count)),
        kv('Delay', q.delay && q.delay.overdue === false ? `${q.delay.timeLeftSeconds} s left` : 'none (launching as soon as resources match)'),
        kv('Queued since', time(q.since)),
        kv('Offers declined', rejectSummary(q) || 'none'))
        : h('p.muted', 'Nothing of this app is waiting to launch.'),
      can('update', id) ? h('div.actions.left', h('button', {
        type: 'button', dataset: { action: 'reset-delay' }, disabled: !isDelayed(q),
        title: isDelayed(q) ? 'Launch again now instead of waiting out the backoff' : 'There is no delay to reset',
        onclick: (e) => resetDelay(e.currentTarget),
      }, 'Reset delay')) : null);
  }

  // ---- actions ----

  async function scale(button, preset) {
    const n = await modal(`Scale ${id}`, (close) => {
      const input = h('input#scale-instances', { type: 'number', min: '0', step: '1', value: String(preset ?? app.instances), required: true });
      return h('form', { onsubmit: (e) => { e.preventDefault(); close(Number(input.value)); } },
        h('label', { for: 'scale-instances' }, 'Instances'), input,
        h('div.actions', h('button', { type: 'button', onclick: () => close(undefined) }, 'Cancel'),
          h('button.primary', { type: 'submit', dataset: { confirm: '' } }, 'Scale')));
    });
    if (n === undefined || !Number.isInteger(n) || n < 0) return;
    await act(button, (force) => api('PUT', withForce(appUrl(id), force), { instances: n }), { ok: `Scaling ${id} to ${n}` });
    refresh();
  }

  async function restart(button) {
    if (!await confirmDialog('Restart', `Replace every task of ${id}, following its upgrade strategy?`, 'Restart')) return;
    await act(button, (force) => api('POST', withForce(appUrl(id, '/restart'), force)), { ok: `Restarting ${id}` });
    refresh();
  }

  async function suspend(button) {
    if (!await confirmDialog('Suspend', `Scale ${id} to 0 instances? Its configuration is kept.`, 'Suspend')) return;
    await act(button, (force) => api('PUT', withForce(appUrl(id), force), { instances: 0 }), { ok: `Suspending ${id}` });
    refresh();
  }

  async function destroy(button) {
    if (!await confirmDialog('Destroy', `Destroy ${id}? Its tasks are killed and its versions are deleted. This cannot be undone.`, 'Destroy', true)) return;
    const r = await act(button, () => api('DELETE', appUrl(id)), { ok: `Destroying ${id}`, forceable: false });
    if (r !== undefined) nav.go('apps', parentGroups(id).pop() || '/');
  }

  async function kill(button, scaleDown) {
    const ids = [...selected];
    if (!ids.length) return;
    const what = ids.length === 1 ? 'this task' : `these ${ids.length} tasks`;
    const text = scaleDown ? `Kill ${what} and lower the instance count by ${ids.length}?` : `Kill ${what}? Stride starts replacements.`;
    if (!await confirmDialog(scaleDown ? 'Kill and scale' : 'Kill', text, scaleDown ? 'Kill & scale' : 'Kill', true)) return;
    const r = await act(button, (force) => {
      if (ids.length === 1) {
        const q = new URLSearchParams();
        if (scaleDown) q.set('scale', 'true');
        if (force) q.set('force', 'true');
        const qs = q.toString();
        return api('DELETE', appUrl(id, `/tasks/${encodeURIComponent(ids[0])}${qs ? '?' + qs : ''}`));
      }
      const q = new URLSearchParams();
      if (scaleDown) q.set('scale', 'true');
      if (force) q.set('force', 'true');
      const qs = q.toString();
      return api('POST', `/v2/tasks/delete${qs ? '?' + qs : ''}`, { ids });
    }, { ok: scaleDown ? `Killing ${ids.length} task(s) and scaling down` : `Killing ${ids.length} task(s)` });
    if (r !== undefined) selected.clear();
    refresh();
  }

  async function applyVersion(button, v) {
    if (!await confirmDialog('Apply this version', `Deploy ${id} as it was at ${v}?`, 'Apply')) return;
    await act(button, (force) => api('PUT', withForce(appUrl(id), force), { version: v }), { ok: `Deploying version ${v}` });
    refresh();
  }

  async function resetDelay(button) {
    await act(button, () => api('DELETE', `/v2/queue${id.split('/').map(encodeURIComponent).join('/')}/delay`), { ok: 'Launch delay reset', forceable: false });
    refresh();
  }

  // ---- data ----

  async function refresh() {
    const mine = ++seq;
    try {
      const [a, queue] = await Promise.all([
        get(appUrl(id, '?embed=app.counts&embed=app.deployments&embed=app.tasks&embed=app.lastTaskFailure')),
        get('/v2/queue').catch(() => ({ queue: [] })),
      ]);
      if (disposed || mine !== seq) return;
      app = a && a.app;
      queueItem = queueByApp(queue).get(id) || null;
      loadError = null;
      gone = false;
    } catch (e) {
      if (disposed || mine !== seq) return;
      if (e instanceof ApiError && e.status === 404) { gone = true; app = null; }
      else if (e instanceof ApiError && e.status === 401) loadError = 'Log in to see this app.';
      else if (e instanceof ApiError && e.status === 403) loadError = explain(e);
      else loadError = `Cannot load ${id}: ${e.message}`;
    }
    renderHead();
    renderBanners();
    renderTabs();
    renderBody();
    applyForbidden(el);
  }

  renderHead();
  renderTabs();
  renderBody();
  refresh();

  return {
    refresh,
    update(p) {
      const nextTab = tabOf(p);
      const nextTask = p.get('task') || '';
      const nextFile = p.get('file') === 'stderr' ? 'stderr' : 'stdout';
      if (nextTab === tab && nextTask === taskParam && nextFile === fileParam) return;
      tab = nextTab;
      if (nextTask) taskParam = nextTask;
      fileParam = nextFile;
      renderTabs();
      renderBody();
      applyForbidden(el);
    },
    dispose() {
      disposed = true;
      if (tail) tail.stop();
    },
  };
}

function kv(k, v) {
  return h('div', h('dt', k), h('dd', v === undefined || v === null || v === '' ? '—' : v));
}

/** "g_web.instance-9189f7b9-c765-….\_app.1" → "9189f7b9" (the full id is the title). */
export function shortTask(id) {
  const m = /\.(?:instance|marathon)-([0-9a-f]{8})/.exec(id || '');
  return m ? m[1] : id;
}
