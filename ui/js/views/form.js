// Create or edit an app, in a form for the common fields or as raw JSON. The two are one
// definition: switching tabs carries the changes over, and fields the form does not show are
// kept as they were. The API's 422 details are shown beside the field their path names
// (`/cpus` → the cpus input, `/healthChecks(0)/…` → the health check section), the rest in a
// summary at the top.
//
// Create: POST /v2/apps. Edit: PUT /v2/apps/{id}?partialUpdate=false with the whole definition,
// so that a field cleared in the form is cleared in the app.

import { ApiError, act, api, appUrl, explain, get, withForce } from '../api.js';
import { h, mount, toast } from '../dom.js';
import {
  definitionOf, fieldForPath, formatConstraints, formatKeyValues, formatPorts,
  parseConstraints, parseKeyValues, parsePorts,
} from '../model.js';
import { can, createTarget } from '../perms.js';

const HC_PROTOCOLS = ['HTTP', 'HTTPS', 'TCP', 'COMMAND', 'MESOS_HTTP', 'MESOS_HTTPS', 'MESOS_TCP'];

const NEW_APP = {
  id: '',
  cmd: '',
  instances: 1,
  cpus: 0.1,
  mem: 128,
  disk: 0,
  portDefinitions: [{ port: 0, protocol: 'tcp' }],
};

export function formView(el, { id, group, nav }) {
  const editing = !!id;
  let base = null;
  let mode = 'form';
  let disposed = false;
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  if (params.get('mode') === 'json') mode = 'json';

  const f = {};
  const field = (key, label, input, hint) => h(`div.field.field-${key}`, { dataset: { field: key } },
    h('label', { for: input.id }, label), input,
    hint ? h('p.hint', hint) : null,
    h('p.field-error', { dataset: { errorFor: key }, role: 'alert', hidden: true }));

  f.id = h('input#app-id', { name: 'id', required: true, placeholder: '/group/my-app', autocomplete: 'off', spellcheck: 'false' });
  f.cmd = h('textarea#app-cmd', { name: 'cmd', rows: '3', spellcheck: 'false', placeholder: 'python3 -m http.server $PORT0' });
  f.image = h('input#app-image', { name: 'image', placeholder: 'nginx:1.27 (optional: runs the app in a Docker container)', spellcheck: 'false' });
  f.instances = h('input#app-instances', { name: 'instances', type: 'number', min: '0', step: '1', inputmode: 'numeric' });
  f.cpus = h('input#app-cpus', { name: 'cpus', type: 'number', min: '0', step: 'any', inputmode: 'decimal' });
  f.mem = h('input#app-mem', { name: 'mem', type: 'number', min: '0', step: 'any', inputmode: 'decimal' });
  f.disk = h('input#app-disk', { name: 'disk', type: 'number', min: '0', step: 'any', inputmode: 'decimal' });
  f.ports = h('input#app-ports', { name: 'ports', placeholder: '0, 0 (0 = any free port; empty = no ports)', spellcheck: 'false' });
  f.env = h('textarea#app-env', { name: 'env', rows: '3', spellcheck: 'false', placeholder: 'KEY=value, one per line' });
  f.labels = h('textarea#app-labels', { name: 'labels', rows: '3', spellcheck: 'false', placeholder: 'HAPROXY_GROUP=external, one per line' });
  f.constraints = h('textarea#app-constraints', { name: 'constraints', rows: '2', spellcheck: 'false', placeholder: 'hostname:UNIQUE\nrack_id:GROUP_BY:2' });

  const hc = {
    enabled: h('input#hc-enabled', { type: 'checkbox', onchange: () => syncHc() }),
    protocol: h('select#hc-protocol', { onchange: () => syncHc() }, HC_PROTOCOLS.map((p) => h('option', { value: p }, p))),
    path: h('input#hc-path', { placeholder: '/', spellcheck: 'false' }),
    portIndex: h('input#hc-port-index', { type: 'number', min: '0', step: '1' }),
    command: h('input#hc-command', { placeholder: 'curl -f http://$HOST:$PORT0/', spellcheck: 'false' }),
    grace: h('input#hc-grace', { type: 'number', min: '0', step: '1' }),
    interval: h('input#hc-interval', { type: 'number', min: '1', step: '1' }),
    timeout: h('input#hc-timeout', { type: 'number', min: '1', step: '1' }),
    maxFailures: h('input#hc-max-failures', { type: 'number', min: '0', step: '1' }),
  };
  const hcNote = h('p.hint');
  const hcFields = h('div.hc-fields',
    h('div.grid',
      small('Protocol', hc.protocol), small('Path', hc.path, 'hc-path-wrap'), small('Port index', hc.portIndex, 'hc-port-wrap'),
      small('Command', hc.command, 'hc-command-wrap'),
      small('Grace period (s)', hc.grace), small('Interval (s)', hc.interval), small('Timeout (s)', hc.timeout),
      small('Max consecutive failures', hc.maxFailures)));
  const hcSection = h('fieldset.field.hc', { dataset: { field: 'healthChecks' } },
    h('legend', 'Health check'),
    h('label.inline', hc.enabled, ' Check the tasks\' health'),
    hcFields, hcNote,
    h('p.field-error', { dataset: { errorFor: 'healthChecks' }, role: 'alert', hidden: true }));

  function syncHc() {
    hcFields.hidden = !hc.enabled.checked;
    const p = hc.protocol.value;
    const command = p === 'COMMAND';
    hcFields.querySelector('.hc-command-wrap').hidden = !command;
    hcFields.querySelector('.hc-path-wrap').hidden = !(p.includes('HTTP'));
    hcFields.querySelector('.hc-port-wrap').hidden = command;
  }

  const summary = h('div.form-summary', { role: 'alert', hidden: true });
  const json = h('textarea#app-json.json-input', { rows: '24', spellcheck: 'false', 'aria-label': 'App definition as JSON' });
  const jsonError = h('p.field-error', { dataset: { errorFor: 'json' }, role: 'alert', hidden: true });
  const submit = h('button.primary#app-submit', { type: 'submit' }, editing ? 'Deploy changes' : 'Create app');

  const formPane = h('div.pane.form-pane',
    editing ? null : field('id', 'ID', f.id, 'Lowercase letters, digits, "-" and "."; "/" separates groups.'),
    field('cmd', 'Command', f.cmd, 'Run with /bin/sh -c. $PORT0… hold the task\'s ports.'),
    field('image', 'Container image', f.image),
    h('div.grid.resources',
      field('instances', 'Instances', f.instances),
      field('cpus', 'CPUs', f.cpus),
      field('mem', 'Memory (MiB)', f.mem),
      field('disk', 'Disk (MiB)', f.disk)),
    field('ports', 'Ports', f.ports),
    hcSection,
    h('div.grid.two',
      field('env', 'Environment', f.env),
      field('labels', 'Labels', f.labels)),
    field('constraints', 'Constraints', f.constraints, 'field:OPERATOR[:value], one per line (UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS).'));
  const jsonPane = h('div.pane.json-pane', json, jsonError,
    h('p.hint', 'The whole definition; fields left out take their defaults.'));

  const tabForm = h('button', { type: 'button', role: 'tab', dataset: { mode: 'form' }, onclick: () => switchMode('form') }, 'Form');
  const tabJson = h('button', { type: 'button', role: 'tab', dataset: { mode: 'json' }, onclick: () => switchMode('json') }, 'JSON');

  const form = h('form.app-form', { novalidate: true, onsubmit: (e) => { e.preventDefault(); save(); } },
    summary,
    h('div.segmented.mode-tabs', { role: 'tablist' }, tabForm, tabJson),
    formPane, jsonPane,
    h('div.actions.sticky-actions',
      h('a.button', { href: editing ? nav.href('app', id) : nav.href('apps', group || '/') }, 'Cancel'),
      submit));

  mount(el, h('div.page.form-page',
    h('div.crumbs', h('a', { href: nav.href('apps', '/') }, 'Applications'), editing ? [' / ', h('a', { href: nav.href('app', id) }, id)] : null),
    h('h1', editing ? `Edit ${id}` : 'Create an app'),
    permissionNotice(),
    h('p.muted.loading', { hidden: !editing }, 'Loading…'),
    form));
  form.hidden = editing;
  document.title = editing ? `Stride · edit ${id}` : 'Stride · new app';

  /** Says so up front when the user's role cannot save what this form makes. */
  function permissionNotice() {
    if (editing && !can('update', id)) {
      return h('p.notice.notice-warn', { dataset: { notice: 'forbidden' } }, `Your role may not change ${id}: the API will refuse to deploy changes.`);
    }
    if (!editing && createTarget('/') === null) {
      return h('p.notice.notice-warn', { dataset: { notice: 'forbidden' } }, 'Your role may not create apps: the API will refuse.');
    }
    return null;
  }

  function small(label, input, cls) {
    return h(`div.small-field${cls ? '.' + cls : ''}`, h('label', { for: input.id }, label), input);
  }

  // ---- definition ↔ form ----

  function fill(def) {
    f.id.value = def.id || '';
    f.cmd.value = def.cmd || '';
    f.image.value = (def.container && def.container.docker && def.container.docker.image) || '';
    f.instances.value = numText(def.instances);
    f.cpus.value = numText(def.cpus);
    f.mem.value = numText(def.mem);
    f.disk.value = numText(def.disk);
    const hostNet = !(def.networks || []).some((n) => n.mode && n.mode !== 'host');
    f.ports.disabled = !hostNet;
    f.ports.value = hostNet ? formatPorts(def.portDefinitions || (def.ports || []).map((p) => ({ port: p }))) : 'container ports: edit portMappings as JSON';
    f.env.value = formatKeyValues(def.env);
    f.labels.value = formatKeyValues(def.labels);
    f.constraints.value = formatConstraints(def.constraints);
    const checks = def.healthChecks || [];
    const c = checks[0] || {};
    hc.enabled.checked = checks.length > 0;
    hc.protocol.value = c.protocol || 'HTTP';
    hc.path.value = c.path || '/';
    hc.portIndex.value = numText(c.portIndex ?? 0);
    hc.command.value = (c.command && c.command.value) || '';
    hc.grace.value = numText(c.gracePeriodSeconds ?? 300);
    hc.interval.value = numText(c.intervalSeconds ?? 60);
    hc.timeout.value = numText(c.timeoutSeconds ?? 20);
    hc.maxFailures.value = numText(c.maxConsecutiveFailures ?? 3);
    hcNote.textContent = checks.length > 1 ? `${checks.length - 1} more check(s) are kept; edit them as JSON.` : '';
    syncHc();
  }

  /** The definition the form describes, on top of `from`; {def, errors: [{field, message}]}. */
  function read(from) {
    const def = structuredClone(from);
    const errors = [];
    const bad = (field, message) => errors.push({ field, message });
    if (!editing) {
      const idv = f.id.value.trim();
      if (!idv) bad('id', 'Give the app an id.');
      def.id = idv;
    }
    const cmd = f.cmd.value.trim();
    if (cmd) def.cmd = f.cmd.value; else delete def.cmd;
    const image = f.image.value.trim();
    if (image) {
      const c = def.container || {};
      def.container = { ...c, type: c.type || 'DOCKER', docker: { ...(c.docker || {}), image } };
    } else if (def.container && def.container.docker) {
      delete def.container;
    }
    for (const k of ['instances', 'cpus', 'mem', 'disk']) {
      const raw = f[k].value.trim();
      if (raw === '') { delete def[k]; continue; }
      const n = Number(raw);
      if (!Number.isFinite(n) || n < 0 || (k === 'instances' && !Number.isInteger(n))) bad(k, k === 'instances' ? 'A whole number, 0 or more.' : 'A number, 0 or more.');
      else def[k] = n;
    }
    if (!f.ports.disabled) {
      const p = parsePorts(f.ports.value);
      p.errors.forEach((m) => bad('ports', m));
      const old = def.portDefinitions || [];
      // Keep names and labels of ports that stay in place.
      def.portDefinitions = p.value.map((pd, i) => ({ ...(old[i] || {}), ...pd }));
      delete def.ports;
    }
    const env = parseKeyValues(f.env.value, 'env');
    env.errors.forEach((m) => bad('env', m));
    const secrets = Object.fromEntries(Object.entries(def.env || {}).filter(([, v]) => typeof v !== 'string'));
    def.env = { ...secrets, ...env.value };
    const labels = parseKeyValues(f.labels.value, 'labels');
    labels.errors.forEach((m) => bad('labels', m));
    def.labels = labels.value;
    const cs = parseConstraints(f.constraints.value);
    cs.errors.forEach((m) => bad('constraints', m));
    def.constraints = cs.value;
    const checks = (def.healthChecks || []).slice();
    if (hc.enabled.checked) {
      const p = hc.protocol.value;
      const c = { ...(checks[0] || {}), protocol: p };
      const int = (input, name, min) => {
        const raw = input.value.trim();
        if (raw === '') { delete c[name]; return; }
        const n = Number(raw);
        if (!Number.isInteger(n) || n < min) bad('healthChecks', `${name}: a whole number, ${min} or more.`);
        else c[name] = n;
      };
      if (p === 'COMMAND') {
        c.command = { value: hc.command.value };
        delete c.path; delete c.portIndex; delete c.port;
        if (!hc.command.value.trim()) bad('healthChecks', 'A COMMAND check needs a command.');
      } else {
        delete c.command;
        if (p.includes('HTTP')) c.path = hc.path.value || '/'; else delete c.path;
        int(hc.portIndex, 'portIndex', 0);
      }
      int(hc.grace, 'gracePeriodSeconds', 0);
      int(hc.interval, 'intervalSeconds', 1);
      int(hc.timeout, 'timeoutSeconds', 1);
      int(hc.maxFailures, 'maxConsecutiveFailures', 0);
      checks[0] = c;
      def.healthChecks = checks;
    } else {
      def.healthChecks = [];
    }
    return { def, errors };
  }

  function switchMode(next) {
    clearErrors();
    if (next === mode) { showMode(); return; }
    if (next === 'json') {
      const { def } = read(currentBase());
      json.value = JSON.stringify(tidy(def), null, 2);
    } else {
      const parsed = parseJson();
      if (!parsed) return;
      base = parsed;
      fill(parsed);
    }
    mode = next;
    showMode();
  }

  function showMode() {
    formPane.hidden = mode !== 'form';
    jsonPane.hidden = mode !== 'json';
    tabForm.classList.toggle('active', mode === 'form');
    tabJson.classList.toggle('active', mode === 'json');
    tabForm.setAttribute('aria-selected', String(mode === 'form'));
    tabJson.setAttribute('aria-selected', String(mode === 'json'));
  }

  function currentBase() {
    return base || structuredClone(NEW_APP);
  }

  function parseJson() {
    try {
      const v = JSON.parse(json.value);
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('the definition must be a JSON object');
      return v;
    } catch (e) {
      showFieldError('json', `Not valid JSON: ${e.message}`);
      return null;
    }
  }

  // ---- errors ----

  function clearErrors() {
    summary.hidden = true;
    mount(summary);
    for (const e of el.querySelectorAll('.field-error')) { e.hidden = true; e.textContent = ''; }
    for (const e of el.querySelectorAll('.has-error')) e.classList.remove('has-error');
  }

  function showFieldError(key, message) {
    const box = el.querySelector(`.field-error[data-error-for="${key}"]`);
    if (!box || (mode === 'json' && key !== 'json') || box.parentElement.closest('[hidden]')) return false;
    box.hidden = false;
    box.textContent = box.textContent ? `${box.textContent} ${message}` : message;
    const wrap = box.closest('.field');
    if (wrap) wrap.classList.add('has-error');
    return true;
  }

  function showSummary(title, lines) {
    summary.hidden = false;
    mount(summary, h('strong', title), lines.length ? h('ul', lines.map((l) => h('li', l))) : null);
  }

  /** Marathon's 422/400 body: details go beside their fields where the form has them. */
  function showApiErrors(e) {
    const rest = [];
    const details = e.details;
    if (details.length) {
      for (const d of details) {
        const msg = (d.errors || []).join(' ');
        const key = fieldForPath(d.path);
        const placed = key && showFieldError(key, `${msg}${d.path && !['/' + key].includes(d.path) ? ` (${d.path})` : ''}`);
        if (!placed) rest.push(`${d.path || '/'}: ${msg}`);
      }
    } else if (typeof e.body.details === 'string') {
      rest.push(e.body.details);
    }
    showSummary(e.message, rest);
    const first = el.querySelector('.has-error input, .has-error textarea, .has-error select') || summary;
    if (first.focus) first.focus();
  }

  // ---- save ----

  async function save() {
    clearErrors();
    let def;
    if (mode === 'json') {
      def = parseJson();
      if (!def) return;
    } else {
      const r = read(currentBase());
      if (r.errors.length) {
        const unplaced = r.errors.filter(({ field: k, message }) => !showFieldError(k, message)).map((x) => x.message);
        showSummary('Please check the marked fields.', unplaced);
        return;
      }
      def = r.def;
    }
    def = tidy(def);
    const result = await act(submit, async (force) => {
      try {
        if (editing) return await api('PUT', withForce(appUrl(id, '?partialUpdate=false'), force), def);
        return await api('POST', '/v2/apps', def);
      } catch (e) {
        if (e instanceof ApiError && (e.status === 422 || e.status === 400)) {
          showApiErrors(e);
          return undefined;
        }
        // Refused for this user: said beside the id (another id may be allowed), the button
        // stays usable.
        if (e instanceof ApiError && e.status === 403) {
          if (editing || !showFieldError('id', explain(e))) showSummary(explain(e), []);
          return undefined;
        }
        throw e;
      }
    });
    if (result === undefined || result === null) return;
    const target = editing ? id : (result.id || def.id);
    toast(editing ? `Deploying ${id}` : `Created ${target}`, 'ok');
    nav.go('app', target.startsWith('/') ? target : '/' + target);
  }

  /** Drops empty collections the API would leave out anyway, so JSON stays short. */
  function tidy(def) {
    const out = { ...def };
    for (const k of ['env', 'labels']) if (out[k] && !Object.keys(out[k]).length) delete out[k];
    for (const k of ['constraints']) if (Array.isArray(out[k]) && !out[k].length) delete out[k];
    if (Array.isArray(out.healthChecks) && !out.healthChecks.length && !(base && (base.healthChecks || []).length)) delete out.healthChecks;
    for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
    return out;
  }

  async function load() {
    if (!editing) {
      const start = structuredClone(NEW_APP);
      if (group && group !== '/') start.id = `${group}/`;
      base = start;
      fill(start);
      json.value = JSON.stringify(tidy(start), null, 2);
      showMode();
      return;
    }
    try {
      const r = await get(appUrl(id));
      if (disposed) return;
      base = definitionOf(r.app);
      fill(base);
      json.value = JSON.stringify(base, null, 2);
      form.hidden = false;
      el.querySelector('.loading').hidden = true;
      showMode();
    } catch (e) {
      el.querySelector('.loading').textContent = `Cannot load ${id}: ${e.message}`;
    }
  }

  load();
  return {
    // Live events must not overwrite what the user is typing.
    refresh() {},
    dispose() { disposed = true; },
  };
}

function numText(n) {
  return typeof n === 'number' && Number.isFinite(n) ? String(n) : '';
}
