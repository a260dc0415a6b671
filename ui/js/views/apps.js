// The apps list: the group tree to navigate, status filters and an id search, and a row per app
// with its status, instances (running / wanted, with health bars), cpus and mem.
//
// Data: GET /v2/apps?embed=apps.counts&embed=apps.deployments&embed=apps.tasks, GET /v2/queue
// (delayed and waiting come from the launch queue) and GET /v2/groups?embed=group.groups (the
// tree, empty groups included).

import { ApiError, get } from '../api.js';
import { h, mib, mount, num } from '../dom.js';
import { STATUSES, appStatus, groupTree, healthBar, inGroup, parentGroups, queueByApp } from '../model.js';
import { createTarget } from '../perms.js';

const FILTER_KEY = 'stride.appFilters';

function loadFilters() {
  try {
    const f = JSON.parse(sessionStorage.getItem(FILTER_KEY) || '{}');
    return { q: typeof f.q === 'string' ? f.q : '', statuses: new Set(Array.isArray(f.statuses) ? f.statuses : []) };
  } catch {
    return { q: '', statuses: new Set() };
  }
}

function saveFilters(f) {
  try {
    sessionStorage.setItem(FILTER_KEY, JSON.stringify({ q: f.q, statuses: [...f.statuses] }));
  } catch { /* storage disabled */ }
}

export function statusBadge(status) {
  return h(`span.status.status-${status}`, { dataset: { status } }, status);
}

/** The instances cell: "2 / 3" over a bar of healthy, unhealthy, unknown, staged and missing. */
export function instancesCell(app) {
  const b = healthBar(app);
  const seg = (kind, n, label) => (n > 0
    ? h(`span.seg.seg-${kind}`, { style: { flexGrow: String(n) }, title: `${n} ${label}` })
    : null);
  return h('div.instances',
    h('span.instances-count', h('strong', String(app.tasksRunning || 0)), ` / ${app.instances}`),
    h('div.bar', { role: 'img', 'aria-label': `${b.healthy} healthy, ${b.unhealthy} unhealthy, ${b.unknown} running without health results, ${b.staged} staged, ${b.missing} missing` },
      seg('healthy', b.healthy, 'healthy'),
      seg('unhealthy', b.unhealthy, 'unhealthy'),
      seg('unknown', b.unknown, 'running, no health results'),
      seg('staged', b.staged, 'staged'),
      seg('missing', b.missing, 'not running')),
    (b.healthy || b.unhealthy)
      ? h('span.health-counts', h('span.ok', `${b.healthy} healthy`), b.unhealthy ? h('span.bad', ` · ${b.unhealthy} unhealthy`) : null)
      : null);
}

export function appsView(el, { group, nav }) {
  const filters = loadFilters();
  let data = { apps: [], queue: new Map(), tree: null, error: null };
  let disposed = false;
  let seq = 0;

  const search = h('input.search', {
    type: 'search', placeholder: 'Search by id', 'aria-label': 'Search apps by id', value: filters.q,
    oninput: () => onSearch(),
    onchange: () => onSearch(),
  });
  function onSearch() {
    if (filters.q === search.value) return;
    filters.q = search.value;
    saveFilters(filters);
    renderList();
  }
  const chips = h('div.chips', { role: 'group', 'aria-label': 'Filter by status' });
  const treeBox = h('nav.tree', { 'aria-label': 'Groups' });
  const listBox = h('div.list');
  const title = h('h1', group === '/' ? 'Applications' : group);
  const crumbs = h('div.crumbs');
  // Where this user may create an app from here: this group, a group inside it, or nowhere.
  const target = createTarget(group);
  const newHref = target === null ? null : nav.href('new', '/', { group: target === '/' ? '' : target });

  mount(el,
    h('div.page.apps-page',
      h('aside.sidebar',
        h('details.tree-details', { open: window.matchMedia('(min-width: 760px)').matches },
          h('summary', 'Groups'), treeBox)),
      h('section.content',
        h('div.page-head', h('div', crumbs, title),
          newHref ? h('a.button.primary#create-app', { href: newHref }, 'Create app') : null),
        h('div.toolbar', search, chips),
        listBox)));

  function renderChips(counts) {
    mount(chips, STATUSES.map((s) => {
      const box = h('input', {
        type: 'checkbox', value: s, checked: filters.statuses.has(s),
        onchange: () => {
          if (box.checked) filters.statuses.add(s); else filters.statuses.delete(s);
          saveFilters(filters);
          renderList();
        },
      });
      return h(`label.chip.chip-${s}`, { dataset: { filter: s } }, box, ` ${s} `, h('span.count', String(counts[s] || 0)));
    }));
  }

  function renderCrumbs() {
    mount(crumbs, group === '/' ? null : [
      h('a', { href: nav.href('apps', '/') }, 'All'),
      parentGroups(group).map((g) => [' / ', h('a', { href: nav.href('apps', g) }, g.split('/').pop())]),
    ]);
  }

  function renderTree() {
    if (!data.tree) { mount(treeBox, h('p.muted', 'No groups')); return; }
    const node = (n) => h('li',
      h('a', { href: nav.href('apps', n.id), class: n.id === group ? 'active' : '', dataset: { group: n.id } },
        h('span.tree-name', n.name), h('span.count', String(n.apps))),
      n.groups.length ? h('ul', n.groups.map(node)) : null);
    mount(treeBox, h('ul', node(data.tree)));
  }

  function renderList() {
    if (data.error) {
      mount(listBox, h('p.notice.notice-error', data.error));
      return;
    }
    const inThisGroup = data.apps.filter((a) => inGroup(a.id, group));
    const counts = {};
    for (const a of inThisGroup) counts[a._status] = (counts[a._status] || 0) + 1;
    renderChips(counts);
    const q = filters.q.trim().toLowerCase();
    const shown = inThisGroup.filter((a) => (!q || a.id.toLowerCase().includes(q))
      && (filters.statuses.size === 0 || filters.statuses.has(a._status)));
    if (data.apps.length === 0) {
      mount(listBox, h('div.empty',
        h('p', newHref ? 'No apps yet.' : 'No apps you may see.'),
        newHref ? h('a.button.primary', { href: newHref }, 'Create your first app') : null));
      return;
    }
    if (shown.length === 0) {
      mount(listBox, h('p.empty', 'No app matches.'));
      return;
    }
    const prefix = group === '/' ? '/' : group + '/';
    mount(listBox, h('table.apps',
      h('thead', h('tr',
        h('th', 'Name'), h('th', 'Status'), h('th', 'Instances'), h('th.num', 'CPU'), h('th.num', 'Memory'))),
      h('tbody', shown.map((a) => {
        const link = nav.href('app', a.id);
        const rel = a.id.startsWith(prefix) ? a.id.slice(prefix.length) : a.id;
        return h('tr.app-row', {
          dataset: { appId: a.id, status: a._status },
          onclick: (e) => { if (!e.target.closest('a')) location.hash = link; },
        },
        h('td.name', { dataset: { label: 'Name' } }, h('a', { href: link, title: a.id }, rel)),
        h('td', { dataset: { label: 'Status' } }, statusBadge(a._status)),
        h('td', { dataset: { label: 'Instances' } }, instancesCell(a)),
        h('td.num', { dataset: { label: 'CPU' } }, num(a.cpus)),
        h('td.num', { dataset: { label: 'Memory' } }, mib(a.mem)));
      }))));
  }

  async function refresh() {
    const mine = ++seq;
    try {
      const [apps, queue, groups] = await Promise.all([
        get('/v2/apps?embed=apps.counts&embed=apps.deployments&embed=apps.tasks'),
        get('/v2/queue').catch(() => ({ queue: [] })),
        get('/v2/groups?embed=group.groups').catch(() => null),
      ]);
      if (disposed || mine !== seq) return;
      const q = queueByApp(queue);
      const list = ((apps && apps.apps) || []).slice().sort((a, b) => a.id.localeCompare(b.id));
      for (const a of list) a._status = appStatus(a, q.get(a.id));
      data = { apps: list, queue: q, tree: buildTree(groups, list), error: null };
    } catch (e) {
      if (disposed || mine !== seq) return;
      data.error = e instanceof ApiError && e.status === 401 ? 'Log in to see the apps.' : `Cannot load apps: ${e.message}`;
    }
    renderTree();
    renderList();
  }

  renderCrumbs();
  renderChips({});
  mount(listBox, h('p.muted.loading', 'Loading…'));
  refresh();
  document.title = group === '/' ? 'Stride · Applications' : `Stride · ${group}`;

  return {
    refresh,
    dispose() { disposed = true; },
  };
}

/** The tree from the groups API, with groups implied by app ids added and counts from the list. */
function buildTree(groups, apps) {
  const ids = new Set(['/']);
  const walk = (g) => { if (g && g.id) ids.add(g.id); ((g && g.groups) || []).forEach(walk); };
  if (groups) walk(groups);
  for (const a of apps) parentGroups(a.id).forEach((g) => ids.add(g));
  const byId = new Map([...ids].map((id) => [id, { id, groups: [], apps: [] }]));
  for (const id of ids) {
    if (id === '/') continue;
    const parent = parentGroups(id + '/x').slice(0, -1).pop() || '/';
    const p = byId.get(parent) || byId.get('/');
    p.groups.push(byId.get(id));
  }
  for (const a of apps) {
    const parent = parentGroups(a.id).pop() || '/';
    (byId.get(parent) || byId.get('/')).apps.push(a);
  }
  return groupTree(byId.get('/'));
}
