// Running deployments (GET /v2/deployments): each one's steps with the current step marked,
// its progress, and two ways out: rollback (DELETE /v2/deployments/{id}, a new deployment that
// restores what the apps were before) and stop (?force=true, which leaves things as they are).

import { act, api, applyForbidden, get } from '../api.js';
import { confirmDialog, h, mount, time } from '../dom.js';
import { canAll } from '../perms.js';

export function deploymentsView(el, { nav }) {
  let disposed = false;
  let seq = 0;
  const list = h('div.deployments');
  mount(el, h('div.page.deployments-page',
    h('div.page-head', h('h1', 'Deployments')),
    h('p.muted', 'Every change to an app is a deployment: a plan of steps carried out in order. A finished deployment leaves this list.'),
    list));
  mount(list, h('p.muted.loading', 'Loading…'));
  document.title = 'Stride · Deployments';

  function render(deployments) {
    if (!deployments.length) {
      mount(list, h('p.empty', 'No deployment is running.'));
      return;
    }
    mount(list, deployments.map((d) => {
      const total = d.totalSteps || (d.steps || []).length || 1;
      const current = d.currentStep || 0;
      const pct = Math.round((Math.max(0, current - 1) / total) * 100);
      const running = new Set((d.currentActions || []).map((a) => `${a.action} ${a.app || a.pod}`));
      return h('article.card.deployment', { dataset: { deploymentId: d.id, scope: (d.affectedApps || []).join(',') } },
        h('header.card-head',
          h('div',
            h('h2', (d.affectedApps || []).concat(d.affectedPods || []).map((a, i) => [i ? ', ' : '', h('a', { href: nav.href('app', a) }, a)])),
            h('p.muted', h('code', d.id), ' · started ', time(d.version))),
          // Rollback and stop need `update` on every app the deployment affects.
          canAll('update', d.affectedApps || []) ? h('div.actions',
            h('button', { type: 'button', dataset: { action: 'rollback' }, onclick: (e) => rollback(e.currentTarget, d) }, 'Rollback'),
            h('button.danger', { type: 'button', dataset: { action: 'stop' }, onclick: (e) => stop(e.currentTarget, d) }, 'Stop')) : null),
        h('div.progress', { role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(total), 'aria-valuenow': String(current), 'aria-label': `Step ${current} of ${total}` },
          h('span.progress-fill', { style: { width: `${Math.max(pct, current ? 4 : 0)}%` } })),
        h('p.step-count', current ? `Step ${current} of ${total}` : `Not started (${total} steps)`),
        h('ol.steps', (d.steps || []).map((s, i) => {
          const state = i + 1 < current ? 'done' : i + 1 === current ? 'current' : 'todo';
          return h(`li.step.step-${state}`, { dataset: { step: String(i + 1) } },
            h('span.step-state', state === 'done' ? 'done' : state === 'current' ? 'running' : 'waiting'),
            h('ul', (s.actions || []).map((a) => {
              const target = a.app || a.pod;
              const active = state === 'current' && running.has(`${a.action} ${target}`);
              const ca = (d.currentActions || []).find((x) => x.action === a.action && (x.app || x.pod) === target);
              const ready = ca && (ca.readinessCheckResults || []);
              return h('li', { class: active ? 'active' : '' },
                h('span.action', a.action), ' ', h('a', { href: nav.href('app', target) }, target),
                ready && ready.length ? h('span.muted', ` · ${ready.filter((r) => r.ready).length}/${ready.length} ready`) : null);
            })));
        })));
    }));
    applyForbidden(list);
  }

  async function rollback(button, d) {
    if (!await confirmDialog('Rollback', `Roll back ${(d.affectedApps || []).join(', ')}? A new deployment restores what they were before this one (apps it created are removed).`, 'Rollback')) return;
    await act(button, () => api('DELETE', `/v2/deployments/${encodeURIComponent(d.id)}`), { ok: 'Rolling back', forceable: false });
    refresh();
    nav.refreshBadge();
  }

  async function stop(button, d) {
    if (!await confirmDialog('Stop', 'Stop this deployment where it is? Old and new tasks may stay running side by side.', 'Stop', true)) return;
    await act(button, () => api('DELETE', `/v2/deployments/${encodeURIComponent(d.id)}?force=true`), { ok: 'Deployment stopped', forceable: false });
    refresh();
    nav.refreshBadge();
  }

  async function refresh() {
    const mine = ++seq;
    try {
      const ds = await get('/v2/deployments');
      if (disposed || mine !== seq) return;
      render((Array.isArray(ds) ? ds : []).slice().sort((a, b) => String(b.version).localeCompare(String(a.version))));
    } catch (e) {
      if (disposed || mine !== seq) return;
      mount(list, h('p.notice.notice-error', `Cannot load deployments: ${e.message}`));
    }
  }

  refresh();
  return { refresh, dispose() { disposed = true; } };
}
