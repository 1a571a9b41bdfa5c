// The sluice console: a client of the admin API (/api/*) and nothing else. The session is an
// HttpOnly cookie the page never sees; every change sends the session's CSRF token
// (X-Sluice-CSRF). What a page offers follows the signed-in role, but the API decides: a
// button that is shown can still be refused, and its error is shown as the API gave it.
// No innerHTML: every value is put in the page as text.

import { barChart } from './chart.js';

const state = { me: null, csrf: null, orgs: null, switches: null };
const ROLES = ['owner', 'admin', 'auditor', 'member'];
const RANK = { member: 0, auditor: 1, admin: 2, owner: 3 };

// ---- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else if (k === 'value') e.value = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}

const main = () => document.getElementById('main');

// Each render has a number; a page that finishes loading after another render began (a quick
// second click, Back, a session that ended) shows nothing.
let generation = 0;

function showAt(gen, ...kids) {
  if (gen !== generation) return;
  main().replaceChildren(...kids.flat().filter(Boolean));
}

function show(...kids) {
  showAt(generation, ...kids);
}

function errorBox(e) {
  const parts = [e.message || String(e)];
  if (e.code) parts.push(`(${e.code}`, `request ${e.requestId || '-'})`);
  return h('div', { class: 'alert', role: 'alert' }, parts.join(' '));
}

function notice(text) {
  return h('div', { class: 'notice', role: 'status' }, text);
}

function table(columns, rows, onRow) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c[0])))),
    h('tbody', {}, rows.length === 0
      ? h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'Nothing here yet.'))
      : rows.map((r) => {
        // A clickable row opens with Enter too.
        const tr = h('tr', onRow ? {
          class: 'clickable', tabindex: 0, onclick: () => onRow(r, tr),
          onkeydown: (ev) => { if (ev.key === 'Enter') onRow(r, tr); },
        } : {},
          columns.map((c) => {
            const v = c[1](r);
            return h('td', {}, v === null || v === undefined ? '—' : v);
          }));
        return tr;
      })));
}

function select(name, options, value, attrs = {}) {
  return h('select', { name, ...attrs },
    options.map((o) => {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: v === value }, label);
    }));
}

function field(label, input) {
  return h('label', {}, label, input);
}

// `ms` (epoch milliseconds) as a datetime-local input's value, in the browser's time zone.
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

function when(t) {
  if (!t) return null;
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? t : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// A button that asks once more before it acts.
function confirmButton(label, question, act, name) {
  const b = h('button', { type: 'button', class: 'danger', 'aria-label': name ? `${label} ${name}` : null }, label);
  let armedAt = 0;
  let timer = null;
  const disarm = () => {
    armedAt = 0;
    clearTimeout(timer);
    b.textContent = label;
    b.removeAttribute('data-armed');
  };
  b.addEventListener('click', async (ev) => {
    // A double click is one gesture, not a confirmation (its second click has detail 2).
    if (ev.detail > 1) return;
    if (!armedAt) {
      armedAt = Date.now();
      b.textContent = question;
      b.setAttribute('data-armed', '');
      timer = setTimeout(disarm, 6000);
      return;
    }
    b.disabled = true;
    try { await act(); } finally { b.disabled = false; disarm(); }
  });
  return b;
}

// ---- the API -------------------------------------------------------------------------------

function cookie(name) {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return null;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `The admin API answered ${status}.`);
    this.status = status;
    this.code = body?.error?.code;
    this.requestId = body?.error?.request_id;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-Sluice-CSRF'] = cookie('sluice_csrf') || state.csrf || '';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  if (!r.ok) {
    const e = new ApiError(r.status, data);
    // Only an ended session ends the console's (a wrong password or code is a 401 too).
    if (e.code === 'invalid_token') {
      sessionEnded();
      throw new SessionEnded();
    }
    throw e;
  }
  return data;
}

class SessionEnded extends Error {}

// The session is over (signed out elsewhere, revoked, expired): forget it and sign in again,
// coming back to this page afterwards.
function sessionEnded() {
  state.me = null;
  document.cookie = 'sluice_csrf=; Path=/; Max-Age=0; SameSite=Strict';
  if (location.pathname !== '/dashboard/login') state.after = location.pathname;
  go('/dashboard/login', { replace: true });
}

// Run `f`, showing its error in `where` (an element) instead of throwing.
async function guarded(where, f) {
  try {
    return await f();
  } catch (e) {
    if (e instanceof SessionEnded) throw e;
    where.querySelectorAll(':scope > .alert').forEach((x) => x.remove());
    where.prepend(errorBox(e));
    return undefined;
  }
}

// Run `f` with `button` disabled (no double submit), and say when it is done.
async function busy(button, f) {
  if (button.disabled) return undefined;
  button.disabled = true;
  try { return await f(); } finally { button.disabled = false; }
}

// A form's submit handler: no page load, one submission at a time (the submit button is
// disabled meanwhile), and an error (a field's, or the API's) shown above the form.
function onSubmit(f) {
  return async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const btn = form.querySelector('button[type=submit]');
    if (btn?.disabled) return;
    if (btn) btn.disabled = true;
    try {
      await f(ev);
    } catch (e) {
      if (e instanceof SessionEnded) return;
      while (form.previousElementSibling?.classList.contains('alert')) form.previousElementSibling.remove();
      form.before(errorBox(e));
    } finally {
      if (btn) btn.disabled = false;
    }
  };
}

// ---- who may do what (the API decides; this only hides what it would refuse) ----------------

const me = () => state.me;
const isOperator = () => !!me()?.operator;
function orgRole(orgId, least) {
  if (isOperator()) return true;
  const u = me();
  return !!u && u.org_id === orgId && RANK[u.role] >= RANK[least];
}

// ---- routing ---------------------------------------------------------------------------------

const PAGES = [
  [/^\/dashboard\/?$/, overviewPage, 'Overview', '/dashboard', () => true],
  [/^\/dashboard\/settings\/?$/, orgsPage, 'Organizations', '/dashboard/settings', () => true],
  [/^\/dashboard\/settings\/([\w-]+)$/, orgPage, null],
  [/^\/dashboard\/audit$/, auditPage, 'Audit', '/dashboard/audit',
    () => isOperator() || RANK[me()?.role] >= RANK.auditor],
  [/^\/dashboard\/usage$/, usagePage, 'Usage', '/dashboard/usage',
    () => isOperator() || RANK[me()?.role] >= RANK.auditor],
  [/^\/dashboard\/credentials$/, credentialsPage, 'Credentials', '/dashboard/credentials', isOperator],
  [/^\/dashboard\/mcp$/, mcpPage, 'MCP servers', '/dashboard/mcp', () => true],
  [/^\/dashboard\/account$/, accountPage, 'Account', '/dashboard/account', () => true],
];

function go(path, { replace = false } = {}) {
  if (location.pathname !== path) history[replace ? 'replaceState' : 'pushState']({}, '', path);
  render();
}

function navLink(href, label) {
  const here = location.pathname === href;
  return h('a', { href, 'data-nav': true, class: here ? 'active' : null, 'aria-current': here ? 'page' : null }, label);
}

function drawHeader() {
  const top = document.getElementById('top');
  if (!me()) {
    top.hidden = true;
    document.getElementById('nav').replaceChildren();
    document.getElementById('who').textContent = '';
    return;
  }
  top.hidden = false;
  document.getElementById('nav').replaceChildren(
    ...PAGES.filter((p) => p[2] && p[4]()).map((p) => navLink(p[3], p[2])));
  document.title = `sluice console: ${document.querySelector('nav#nav a.active')?.textContent || 'sluice'}`;
  const role = isOperator() ? 'operator' : `${me().role} of ${me().org_id}`;
  document.getElementById('who').textContent = `${me().email} (${role})`;
}

async function render() {
  generation += 1;
  const mine = generation;
  const path = location.pathname;
  if (!me() && path !== '/dashboard/login') {
    // No CSRF cookie: no session either (they are set and cleared together).
    if (!cookie('sluice_csrf')) {
      state.after = path;
      history.replaceState({}, '', '/dashboard/login');
      return render();
    }
    try {
      state.me = await api('GET', '/api/auth/me');
    } catch (e) {
      if (e instanceof SessionEnded) return undefined;
      if (mine === generation) show(h('h1', {}, 'sluice console'), errorBox(e));
      return undefined;
    }
    if (mine !== generation) return undefined;
  }
  if (me() && path === '/dashboard/login') { go('/dashboard', { replace: true }); return undefined; }
  drawHeader();
  if (path === '/dashboard/login') return loginPage();
  for (const [re, page, , , allowed] of PAGES) {
    const m = path.match(re);
    if (m) {
      if (allowed && !allowed()) {
        show(h('h1', {}, 'Not available'), h('p', { class: 'muted' }, 'Your role cannot see this page.'));
        return;
      }
      show(h('p', { class: 'muted' }, 'Loading…'));
      try {
        return await page(...m.slice(1));
      } catch (e) {
        if (e instanceof SessionEnded) return undefined;
        throw e;
      }
    }
  }
  show(h('h1', {}, 'No such page'), h('p', {}, h('a', { href: '/dashboard', 'data-nav': true }, 'Back to the overview')));
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[data-nav]');
  if (a && a.origin === location.origin && !ev.ctrlKey && !ev.metaKey && ev.button === 0) {
    ev.preventDefault();
    go(a.pathname);
  }
});
window.addEventListener('popstate', render);

// ---- sign-in -------------------------------------------------------------------------------

function loginPage() {
  const gen = generation;
  const out = h('div');
  const kind = select('kind', [['totp', 'Authenticator code'], ['recovery', 'Recovery code']], 'totp',
    { 'aria-label': 'Second factor' });
  const form = h('form', {
    onsubmit: onSubmit(async (ev) => {
      out.replaceChildren();
      const f = new FormData(form);
      const body = { email: f.get('email'), password: f.get('password') };
      const code = String(f.get('code') || '').trim();
      if (code) body[kind.value === 'totp' ? 'totp' : 'recovery_code'] = code;
      try {
        const r = await fetch('/api/auth/login', {
          method: 'POST', credentials: 'same-origin', cache: 'no-store',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-Sluice-Session': 'cookie' },
          body: JSON.stringify(body),
        });
        const data = await r.json().catch(() => null);
        if (!r.ok) throw new ApiError(r.status, data);
        state.me = data.user;
        state.csrf = data.csrf_token;
        const after = state.after && state.after !== '/dashboard/login' ? state.after : '/dashboard';
        state.after = null;
        go(after, { replace: true });
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    }),
  },
  field('Email', h('input', { name: 'email', type: 'email', autocomplete: 'username', required: true })),
  field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
  kind,
  field('Code', h('input', { name: 'code', autocomplete: 'one-time-code', inputmode: 'text', placeholder: '123456' })),
  h('button', { type: 'submit' }, 'Sign in'));
  showAt(gen, h('div', { class: 'login card' }, h('h1', {}, 'Sign in to sluice'), out, form,
    h('p', { class: 'muted' }, 'Accounts are created with `sluice users create` or by an org admin.')));
}

document.getElementById('signout')?.addEventListener('click', async () => {
  try { await api('POST', '/api/auth/logout'); } catch { /* signed out either way */ }
  state.me = null;
  state.after = null;
  go('/dashboard/login', { replace: true });
});

// ---- overview ------------------------------------------------------------------------------

function healthCell(ok) {
  if (ok === null || ok === undefined) return h('span', { class: 'muted' }, 'unknown');
  return h('span', { class: ok ? 'ok' : 'bad' }, ok ? 'healthy' : 'down');
}

function counts(obj) {
  const rows = Object.entries(obj || {}).sort((a, b) => b[1] - a[1]);
  return table([['', (r) => r[0]], ['Count', (r) => r[1]]], rows);
}

function series(points, key) {
  return (points || []).map((p) => ({ label: when(p.at).slice(11, 16), value: p[key] || 0 }));
}

async function overviewPage() {
  const gen = generation;
  const box = h('div');
  const o = await guarded(box, () => api('GET', '/api/overview'));
  if (!o) { showAt(gen, h('h1', {}, 'Overview'), box); return; }
  const t = o.traffic;
  const cards = [];
  cards.push(h('div', { class: 'card' }, h('h2', {}, 'Upstreams'),
    table([['Name', (u) => u.name], ['Region', (u) => u.region], ['Health', (u) => healthCell(u.healthy)]],
      o.upstreams || [])));
  cards.push(h('div', { class: 'card' }, h('h2', {}, 'MCP servers'),
    table([['Name', (m) => m.name], ['Region', (m) => m.region], ['Health', (m) => healthCell(m.healthy)]],
      o.mcp_servers || [])));
  const redis = o.fleet?.redis;
  cards.push(h('div', { class: 'card' }, h('h2', {}, 'Fleet'),
    h('p', {}, 'Redis: ', h('span', { class: redis === 'up' ? 'ok' : redis === 'down' ? 'bad' : 'muted' },
      redis === 'off' ? 'not used (limits are this sidecar\'s own)' : redis || 'unknown')),
    h('p', {}, 'Bundle last applied: ', when(o.fleet?.bundle_last_applied) || 'never (no [fleet] bundle)')));
  if (Array.isArray(o.credentials)) {
    cards.push(h('div', { class: 'card' }, h('h2', {}, 'Credential expiry'),
      table([
        ['Name', (c) => c.name], ['Kind', (c) => c.kind], ['Expires', (c) => when(c.expires_at)],
        ['State', (c) => c.needs_reconnect ? h('span', { class: 'bad' }, 'needs reconnect')
          : c.expired ? h('span', { class: 'bad' }, 'expired') : h('span', { class: 'ok' }, 'ok')],
      ], o.credentials)));
  }
  const parts = [h('h1', {}, 'Overview'), box, h('div', { class: 'grid' }, cards)];
  if (t) {
    parts.push(h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Requests per minute'),
        h('div', { class: 'figure', 'data-figure': 'rpm' }, String(t.requests_per_minute))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Requests, last hour'),
        h('div', { class: 'figure', 'data-figure': 'requests' }, String(t.last_hour.requests))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Tokens, last hour'),
        h('div', { class: 'figure' }, String(t.last_hour.tokens))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Since start'),
        h('div', {}, `${t.since_start.requests} requests, ${t.since_start.tokens} tokens`))));
    parts.push(h('div', { class: 'card' },
      barChart(series(t.per_minute, 'requests'), { title: 'Requests per minute, last hour' }),
      barChart(series(t.per_minute, 'refusals'), { title: 'Refusals per minute, last hour' }),
      barChart(series(t.per_quarter_hour, 'requests'), { title: 'Requests per quarter hour, last day' }),
      barChart(series(t.per_quarter_hour, 'tokens'), { title: 'Tokens per quarter hour, last day' })));
    parts.push(h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Refusals by code, last hour'), counts(t.last_hour.refusals_by_code)),
      h('div', { class: 'card' }, h('h2', {}, 'Redactions by entity, last hour'), counts(t.last_hour.redactions_by_entity))));
  } else {
    parts.push(h('p', { class: 'muted' }, 'Traffic figures span every org: operators see them. Your org\'s usage is on the Usage page.'));
  }
  parts.push(h('p', { class: 'muted' }, `Updated ${when(new Date().toISOString())}; refreshed every 30 s while shown.`));
  showAt(gen, parts);
  // Fresh figures while the overview stays open (not once another page or render began).
  setTimeout(() => { if (gen === generation && !document.hidden) render(); }, 30_000);
}

// ---- organizations and their settings ------------------------------------------------------

// The policy's switches (PII redaction, secret detection, ...) of an org and of a key, as the
// OpenAPI document lists them (made from the server's one table): [{ name, title, values }].
async function loadSwitches() {
  if (!state.switches) {
    const doc = await api('GET', '/api/openapi.json');
    const of = (schema) => Object.entries(doc.components.schemas[schema].properties)
      .filter(([, p]) => p['x-switch'])
      // `inherit` (a key's default) first.
      .map(([name, p]) => ({ name, title: p.title, values: [...p.enum].sort((a, b) => (b === 'inherit') - (a === 'inherit')) }));
    state.switches = { org: of('Org'), key: of('Key') };
  }
  return state.switches;
}

// A select per switch of `kind` ('org' or 'key'), each showing `x`'s value.
function switchFields(kind, x) {
  return state.switches[kind].map((s) => field(s.title, select(s.name, s.values, x[s.name])));
}

// The switches of `kind` as table columns.
function switchColumns(kind) {
  return state.switches[kind].map((s) => [s.title, (x) => x[s.name]]);
}

// The switches of `kind` as a form gives them.
function switchValues(kind, f) {
  return Object.fromEntries(state.switches[kind].map((s) => [s.name, f.get(s.name)]));
}

async function loadOrgs() {
  const r = await api('GET', '/api/orgs');
  state.orgs = r.data;
  return r.data;
}

async function orgsPage() {
  const gen = generation;
  const box = h('div');
  const orgs = await guarded(box, async () => (await loadSwitches()) && loadOrgs());
  if (!orgs) { showAt(gen, h('h1', {}, 'Organizations'), box); return; }
  if (!isOperator() && orgs.length === 1) { go(`/dashboard/settings/${orgs[0].id}`, { replace: true }); return; }
  const parts = [h('h1', {}, 'Organizations'), box,
    h('div', { class: 'card' }, table([
      ['Name', (o) => h('a', { href: `/dashboard/settings/${o.id}`, 'data-nav': true }, o.name)],
      ['Id', (o) => h('code', {}, o.id)], ['Region', (o) => o.region], ...switchColumns('org'),
    ], orgs))];
  if (isOperator()) {
    const out = h('div');
    const form = h('form', {
      class: 'inline',
      onsubmit: onSubmit(async (ev) => {
        out.replaceChildren();
        const name = new FormData(form).get('name');
        const o = await guarded(out, () => api('POST', '/api/orgs', { name }));
        if (o) go(`/dashboard/settings/${o.id}`);
      }),
    }, field('Name', h('input', { name: 'name', required: true })), h('button', { type: 'submit' }, 'Create org'));
    parts.push(h('div', { class: 'card' }, h('h2', {}, 'New organization'), out, form));
  }
  showAt(gen, parts);
}

const REGIONS = ['us', 'eu', 'apac'];

// A whole number typed in a limit field, `null` for an empty one; anything else is refused
// here with the field's name (the API would refuse it too, less clearly).
class FieldError extends Error {}
function numberOrNull(v, name = 'This field') {
  const s = String(v ?? '').trim();
  if (s === '') return null;
  const n = Number(s);
  if (!/^[0-9]+$/.test(s) || !Number.isSafeInteger(n) || n < 1) {
    throw new FieldError(`${name} must be a whole number of at least 1, or empty for none.`);
  }
  return n;
}

// The fields of `now` that differ from `was` (only those are sent).
function changes(was, now) {
  const out = {};
  for (const [k, v] of Object.entries(now)) {
    if (v === undefined) continue;
    if ((was[k] ?? null) !== v) out[k] = v;
  }
  return out;
}

// The limit fields of an org or a key (`x`): rpm, tpm and a token budget per day or month.
function limitFields(x) {
  const num = (name, label) => field(label, h('input', { name, inputmode: 'numeric', value: x[name] ?? '', placeholder: 'none' }));
  return [
    num('rpm', 'Requests per minute'), num('tpm', 'Tokens per minute'), num('budget_tokens', 'Token budget'),
    field('Budget period', select('budget_period', ['day', 'month'], x.budget_period || 'month')),
  ];
}

// The limits typed in `f` (a field error for anything but a whole number or nothing).
function readLimits(f) {
  return {
    rpm: numberOrNull(f.get('rpm'), 'Requests per minute'), tpm: numberOrNull(f.get('tpm'), 'Tokens per minute'),
    budget_tokens: numberOrNull(f.get('budget_tokens'), 'Token budget'),
  };
}

// A budget is sent with its period (the API takes them together): when either changed.
function budgetPatch(patch, now, f, was) {
  if (now.budget_tokens !== null && (patch.budget_tokens !== undefined || f.get('budget_period') !== was.budget_period)) {
    patch.budget_tokens = now.budget_tokens;
    patch.budget_period = f.get('budget_period');
  }
  return patch;
}

// A datetime-local input's value (the browser's time) as RFC 3339, or undefined when empty.
function isoOrNothing(v) {
  return v ? new Date(v).toISOString() : undefined;
}

function settingsForm(org, editable, onSaved) {
  const out = h('div');
  const fs = h('fieldset', { disabled: !editable },
    h('legend', {}, 'Settings'),
    h('div', { class: 'form-grid' },
      ...switchFields('org', org),
      // A region once set can be changed, not removed (the API takes a region only).
      field('Region', select('region', org.region ? REGIONS : [['', '(sidecar default)'], ...REGIONS], org.region || '')),
      ...limitFields(org),
      field('MCP tools', h('input', { name: 'mcp_tools', value: org.mcp_tools, placeholder: 'none' })),
      field('MCP resources', h('input', { name: 'mcp_resources', value: org.mcp_resources, placeholder: 'none' })),
      field('MCP prompts', h('input', { name: 'mcp_prompts', value: org.mcp_prompts, placeholder: 'none' }))));
  const form = h('form', {
    onsubmit: onSubmit(async (ev) => {
      out.replaceChildren();
      const f = new FormData(form);
      const now = {
        ...switchValues('org', f),
        region: f.get('region') || undefined,
        ...readLimits(f),
        mcp_tools: f.get('mcp_tools').trim(), mcp_resources: f.get('mcp_resources').trim(), mcp_prompts: f.get('mcp_prompts').trim(),
      };
      const patch = budgetPatch(changes(org, now), now, f, org);
      if (Object.keys(patch).length === 0) { out.replaceChildren(notice('Nothing changed.')); return; }
      const saved = await guarded(out, () => api('PATCH', `/api/orgs/${org.id}`, patch));
      if (saved) { onSaved(saved); out.replaceChildren(notice('Saved. The proxy applies it within a second.')); }
    }),
  }, fs, editable ? h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save settings')) : null);
  return h('div', { class: 'card' }, out, form,
    editable ? null : h('p', { class: 'muted' }, 'Read-only: your role cannot change these settings.'));
}

// `flash`: what the last action said (kept across the reload that follows it).
function keysCard(org, keys, reload, flash) {
  const canEdit = orgRole(org.id, 'admin');
  const out = h('div', {}, flash);
  const cols = [
    ['Name', (k) => k.name], ['Prefix', (k) => h('code', {}, k.prefix)],
    ['Status', (k) => h('span', { class: k.status === 'active' ? 'ok' : 'bad' }, k.status)],
    ...switchColumns('key'),
    ['Region', (k) => k.region], ['rpm', (k) => k.rpm], ['tpm', (k) => k.tpm],
    ['Budget', (k) => k.budget_tokens ? `${k.budget_tokens}/${k.budget_period}` : null],
    ['MCP tools', (k) => k.mcp_tools === null ? h('span', { class: 'muted' }, 'org default') : k.mcp_tools || 'none'],
    ['Last used', (k) => when(k.last_used_at)],
  ];
  const editSlot = h('div');
  if (canEdit) {
    cols.push(['', (k) => k.status === 'active'
      ? h('button', { type: 'button', class: 'secondary', onclick: () => editSlot.replaceChildren(keyForm(org, k, reload)) }, 'Edit')
      : null]);
    cols.push(['', (k) => k.status === 'active'
      ? confirmButton('Revoke', 'Click again to revoke', async () => {
        const r = await guarded(out, () => api('DELETE', `/api/orgs/${org.id}/keys/${k.id}`));
        if (r) reload(notice(`Key ${k.name} revoked: it is refused from now on.`));
      }, k.name)
      : null]);
  }
  const parts = [h('h2', {}, 'API keys'), out, table(cols, keys), editSlot];
  if (canEdit) {
    const shown = h('div');
    const form = h('form', {
      class: 'inline',
      onsubmit: onSubmit(async (ev) => {
        shown.replaceChildren();
        const f = new FormData(form);
        const body = { name: f.get('name'), expires_at: isoOrNothing(f.get('expires_at')) };
        if (f.get('pii') !== 'inherit') body.pii = f.get('pii');
        const k = await guarded(shown, () => api('POST', `/api/orgs/${org.id}/keys`, body));
        if (!k) return;
        form.reset();
        const copy = h('button', { type: 'button', class: 'secondary' }, 'Copy');
        copy.addEventListener('click', async () => {
          try { await navigator.clipboard.writeText(k.key); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy it by hand'; }
        });
        shown.replaceChildren(h('div', { class: 'secret-once', role: 'status' },
          h('p', {}, h('strong', {}, 'Copy this key now: it is shown this once and never again.')),
          h('p', {}, h('code', { 'data-new-key': true }, k.key), ' ', copy)));
        reload(shown.firstChild);
      }),
    },
    field('Name', h('input', { name: 'name', required: true })),
    // Its PII redaction, the override asked for most; the others are edited once it exists.
    field('PII', select('pii', state.switches.key.find((s) => s.name === 'pii').values, 'inherit')),
    field('Expires (optional)', h('input', { name: 'expires_at', type: 'datetime-local' })),
    h('button', { type: 'submit' }, 'Create key'));
    parts.push(h('h2', {}, 'New key'), shown, form);
  }
  return h('div', { class: 'card', id: 'keys' }, parts);
}

// A key's overrides: each setting `inherit` (the org's) or its own; limits empty for none.
function keyForm(org, k, reload) {
  const out = h('div');
  const list = (v) => (v === null || v === undefined ? 'inherit' : v);
  const form = h('form', {
    onsubmit: onSubmit(async (ev) => {
      out.replaceChildren();
      const f = new FormData(form);
      const was = { ...k, mcp_tools: list(k.mcp_tools), mcp_resources: list(k.mcp_resources), mcp_prompts: list(k.mcp_prompts) };
      // A list of the key's own (empty: none at all), or `inherit` (the org's).
      const own = (x) => (f.get(`${x}_inherit`) === 'on' ? 'inherit' : String(f.get(x)).trim());
      const now = {
        ...switchValues('key', f),
        ...readLimits(f),
        mcp_tools: own('mcp_tools'), mcp_resources: own('mcp_resources'), mcp_prompts: own('mcp_prompts'),
      };
      const patch = budgetPatch(changes(was, now), now, f, k);
      if (Object.keys(patch).length === 0) { out.replaceChildren(notice('Nothing changed.')); return; }
      const r = await guarded(out, () => api('PATCH', `/api/orgs/${org.id}/keys/${k.id}`, patch));
      if (r) reload(notice(`Key ${k.name} updated. The proxy applies it within a second.`));
    }),
  },
  h('fieldset', {}, h('legend', {}, `Overrides of key ${k.name}`),
    h('div', { class: 'form-grid' },
      ...switchFields('key', k),
      ...limitFields(k),
      ...['mcp_tools', 'mcp_resources', 'mcp_prompts'].map((x) => field(`MCP ${x.slice(4)} (empty: none)`,
        h('span', {}, h('input', { name: x, value: k[x] ?? '', placeholder: 'none', 'aria-label': `MCP ${x.slice(4)}` }),
          h('label', { class: 'check' }, h('input', { type: 'checkbox', name: `${x}_inherit`, checked: k[x] === null }), ' the org\'s')))))),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save key'),
    h('button', { type: 'button', class: 'secondary', onclick: () => form.closest('#key-edit')?.remove() }, 'Cancel')));
  return h('div', { class: 'card', id: 'key-edit' }, out, form);
}

function membersCard(org, users, reload, flash) {
  const out = h('div', {}, flash);
  // Only owners (and operators) add, change or remove owners: others are not offered it.
  const ownerPowers = isOperator() || me().role === 'owner';
  const roles = ownerPowers ? ROLES : ROLES.filter((r) => r !== 'owner');
  const manageable = (u) => u.id !== me().id && (ownerPowers || u.role !== 'owner');
  const cols = [
    ['Email', (u) => u.email], ['Two-factor', (u) => u.totp_enrolled ? 'TOTP' : h('span', { class: 'warn' }, 'none')],
    ['Role', (u) => {
      if (!manageable(u)) return u.role;
      const s = select('role', roles, u.role, { 'aria-label': `Role of ${u.email}` });
      const apply = h('button', { type: 'button', class: 'secondary', 'aria-label': `Apply the role of ${u.email}` }, 'Apply');
      apply.addEventListener('click', () => busy(apply, async () => {
        if (s.value === u.role) return;
        const r = await guarded(out, () => api('PATCH', `/api/orgs/${org.id}/users/${u.id}`, { role: s.value }));
        if (r) { u.role = s.value; out.replaceChildren(notice(`${u.email} is now ${s.value}.`)); } else s.value = u.role;
      }));
      return h('span', {}, s, ' ', apply);
    }],
    ['', (u) => !manageable(u) ? null : confirmButton('Remove', 'Click again to remove', async () => {
      const r = await guarded(out, () => api('DELETE', `/api/orgs/${org.id}/users/${u.id}`));
      if (r) reload(notice(`${u.email} removed.`));
    }, u.email)],
  ];
  const shown = h('div');
  const form = h('form', {
    class: 'inline',
    onsubmit: onSubmit(async (ev) => {
      shown.replaceChildren();
      const f = new FormData(form);
      const body = { email: f.get('email'), password: f.get('password'), role: f.get('role'), totp: f.get('totp') === 'on' };
      const r = await guarded(shown, () => api('POST', `/api/orgs/${org.id}/users`, body));
      if (!r) return;
      form.reset();
      shown.replaceChildren(h('div', { class: 'secret-once' },
        h('p', {}, `${r.user.email} added as ${r.user.role}.`),
        r.totp ? enrollmentView(r.totp) : null));
      reload(shown.firstChild);
    }),
  },
  field('Email', h('input', { name: 'email', type: 'email', required: true })),
  field('Initial password', h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 })),
  field('Role', select('role', roles, 'member')),
  h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'totp', checked: true }), ' TOTP'),
  h('button', { type: 'submit' }, 'Add member'));
  return h('div', { class: 'card', id: 'members' }, h('h2', {}, 'Members'), out, table(cols, users),
    h('h2', {}, 'New member'), shown, form);
}

async function orgPage(orgId) {
  const gen = generation;
  const box = h('div');
  const org = await guarded(box, async () => (await loadSwitches()) && api('GET', `/api/orgs/${orgId}`));
  if (!org) { showAt(gen, h('h1', {}, 'Organization'), box); return; }
  const keysSlot = h('div');
  const membersSlot = h('div');
  const loadKeys = async (flash) => {
    if (!orgRole(orgId, 'auditor')) return;
    const k = await guarded(box, () => api('GET', `/api/orgs/${orgId}/keys`));
    if (k) keysSlot.replaceChildren(keysCard(org, k.data, loadKeys, flash));
  };
  const loadMembers = async (flash) => {
    if (!orgRole(orgId, 'admin')) return;
    const u = await guarded(box, () => api('GET', `/api/orgs/${orgId}/users`));
    if (u) membersSlot.replaceChildren(membersCard(org, u.data, loadMembers, flash));
  };
  showAt(gen, h('h1', {}, org.name, ' ', h('span', { class: 'tag' }, org.id)), box,
    settingsForm(org, orgRole(orgId, 'admin'), (o) => Object.assign(org, o)), keysSlot, membersSlot);
  await Promise.all([loadKeys(), loadMembers()]);
}

// ---- audit -----------------------------------------------------------------------------------

function auditQuery(filters, cursor, limit) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  if (cursor) q.set('cursor', cursor);
  q.set('limit', String(limit));
  return `/api/audit?${q}`;
}

async function auditPage() {
  const gen = generation;
  const box = h('div');
  const detail = h('div');
  const list = h('div');
  const check = h('div');
  const pager = h('div', { class: 'pager' });
  let filters = { since: new Date(Date.now() - 86_400_000).toISOString() };
  const cursors = [''];
  const orgs = isOperator() ? await guarded(box, loadOrgs) || [] : [];
  const filterForm = h('form', {
    class: 'filters',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const f = new FormData(filterForm);
      const since = f.get('since');
      filters = {
        org_id: f.get('org_id'), action: f.get('action').trim(), actor: f.get('actor').trim(),
        outcome: f.get('outcome'), since: isoOrNothing(since) || '',
      };
      cursors.length = 1;
      await load('');
    },
  },
  isOperator() ? field('Org', select('org_id', [['', 'all'], ...orgs.map((o) => [o.id, o.name])], '')) : null,
  field('Action', h('input', { name: 'action', placeholder: 'e.g. key.create', list: 'audit-actions' })),
  h('datalist', { id: 'audit-actions' }, ['auth.login', 'org.update', 'key.create', 'key.revoke', 'key.update',
    'user.create', 'credential.set', 'proxy.request', 'mcp.call'].map((a) => h('option', { value: a }))),
  field('Actor', h('input', { name: 'actor', placeholder: 'user:… or key:…' })),
  field('Outcome', select('outcome', [['', 'any'], 'success', 'failure'], '')),
  // The last day by default (the log is read oldest first): clear it to start at the first record.
  field('Since (your time)', h('input', { name: 'since', type: 'datetime-local', value: localInput(Date.now() - 86_400_000) })),
  h('button', { type: 'submit' }, 'Filter'));

  // `cursor`: the page to show ('' the first; undefined: the current one). The page stack
  // changes only once the page is read.
  async function load(cursor, move) {
    const at = cursor ?? cursors[cursors.length - 1];
    const page = await guarded(box, () => api('GET', auditQuery(filters, at, 50)));
    if (!page) return;
    if (move === 'next') cursors.push(at);
    if (move === 'prev') cursors.pop();
    detail.replaceChildren();
    list.replaceChildren(table([
      ['Seq', (r) => r.seq], ['Time', (r) => when(r.at)], ['Action', (r) => r.action], ['Actor', (r) => r.actor],
      ['Outcome', (r) => h('span', { class: r.outcome === 'success' ? 'ok' : 'bad' }, r.outcome)],
      ['Org', (r) => r.org_id], ['Target', (r) => r.target_id],
    ], page.data, (r, tr) => {
      list.querySelectorAll('tr.selected').forEach((x) => x.classList.remove('selected'));
      tr.classList.add('selected');
      detail.replaceChildren(h('div', { class: 'card' }, h('h2', {}, `Record ${r.seq}`),
        h('pre', { 'data-record': r.seq }, JSON.stringify(r, null, 2))));
    }));
    const prev = h('button', { type: 'button', class: 'secondary', disabled: cursors.length === 1 }, 'Previous');
    prev.addEventListener('click', () => busy(prev, () => load(cursors[cursors.length - 2], 'prev')));
    const next = h('button', { type: 'button', class: 'secondary', disabled: !page.next_cursor }, 'Next');
    next.addEventListener('click', () => busy(next, () => load(page.next_cursor, 'next')));
    pager.replaceChildren(prev, h('span', { class: 'muted' }, `Page ${cursors.length}`), next);
  }

  const verify = h('button', { type: 'button', class: 'secondary' }, 'Verify the chain');
  verify.addEventListener('click', () => busy(verify, async () => {
    check.replaceChildren(h('span', { class: 'muted' }, 'Checking every record…'));
    const r = await guarded(check, () => api('GET', '/api/audit/verify'));
    if (!r) { check.querySelector('.muted')?.remove(); return; }
    check.replaceChildren(r.valid
      ? h('div', { class: 'notice', 'data-chain': 'valid' }, r.records === null
        ? 'The chain is intact: every record verified.'
        : `The chain is intact: ${r.records} records verified.`)
      : h('div', { class: 'alert', 'data-chain': 'broken' },
        `The chain is broken at record seq ${r.first_bad.seq} (id ${r.first_bad.id}): ${r.first_bad.reason}.`));
  }));
  const exp = h('button', { type: 'button', class: 'secondary' }, 'Export JSON Lines');
  exp.addEventListener('click', async () => {
    exp.disabled = true;
    try {
      const lines = [];
      let cursor = '';
      for (let i = 0; i < 1000; i += 1) {
        const page = await api('GET', auditQuery(filters, cursor, 1000));
        for (const r of page.data) lines.push(JSON.stringify(r));
        if (!page.next_cursor) break;
        cursor = page.next_cursor;
      }
      const blob = new Blob(lines.map((l) => `${l}\n`), { type: 'application/x-ndjson' });
      const a = h('a', { href: URL.createObjectURL(blob), download: `sluice-audit-${new Date().toISOString().slice(0, 19)}.jsonl` });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      box.prepend(errorBox(e));
    } finally {
      exp.disabled = false;
    }
  });
  showAt(gen, h('h1', {}, 'Audit log'), box,
    h('div', { class: 'card' }, filterForm, h('div', { class: 'actions' }, verify, exp), check),
    h('div', { class: 'card' }, list, pager), detail);
  await load();
}

// ---- usage -----------------------------------------------------------------------------------

function budgetRow(label, b) {
  if (!b) return null;
  const left = Math.max(0, b.tokens - b.used_tokens);
  return h('tr', {}, h('td', {}, label), h('td', {}, `${b.used_tokens} of ${b.tokens} tokens this ${b.period}`),
    h('td', {}, h('meter', { min: 0, max: b.tokens, value: Math.min(b.used_tokens, b.tokens), low: b.tokens * 0.7, high: b.tokens * 0.9, optimum: 0 })),
    h('td', {}, `${left} left`));
}

async function usagePage() {
  const gen = generation;
  const box = h('div');
  const result = h('div');
  const orgs = await guarded(box, loadOrgs) || [];
  const form = h('form', {
    class: 'filters',
    onsubmit: (ev) => { ev.preventDefault(); load(); },
  },
  field('Org', select('org_id', orgs.map((o) => [o.id, o.name]), orgs[0]?.id)),
  field('Per', select('group_by', [['key', 'key'], ['model', 'model']], 'key')),
  field('Bucket', select('bucket', [['hour', 'hour (last day)'], ['day', 'day (last 30 days)']], 'hour')),
  h('button', { type: 'submit' }, 'Show'));
  async function load() {
    const f = new FormData(form);
    const q = new URLSearchParams({ org_id: f.get('org_id') || '', group_by: f.get('group_by'), bucket: f.get('bucket') });
    const u = await guarded(result, () => api('GET', `/api/usage?${q}`));
    if (!u) return;
    const name = u.group_by;
    // Key names for key ids (the same roles read both).
    const names = new Map();
    if (name === 'key_id') {
      const keys = await guarded(result, () => api('GET', `/api/orgs/${u.org_id}/keys`));
      for (const k of keys?.data || []) names.set(k.id, k.name);
    }
    const byBucket = new Map();
    for (const r of u.data) {
      const t = Date.parse(r.bucket_start);
      byBucket.set(t, (byBucket.get(t) || 0) + r.total_tokens);
    }
    // Every bucket from `since` to now, empty ones too (the time axis stays true).
    const step = u.bucket === 'hour' ? 3_600_000 : 86_400_000;
    const points = [];
    for (let t = Date.parse(u.since); t <= Date.now() && points.length < 1000; t += step) {
      const iso = new Date(t).toISOString();
      points.push({ label: u.bucket === 'hour' ? iso.slice(5, 16).replace('T', ' ') : iso.slice(0, 10), value: byBucket.get(t) || 0 });
    }
    const budgets = [budgetRow('Org', u.budgets.org), ...u.budgets.keys.map((k) => budgetRow(`Key ${k.name}`, k.budget))].filter(Boolean);
    result.replaceChildren(
      h('div', { class: 'card' }, barChart(points, { title: `Tokens per ${u.bucket}` }),
        u.truncated ? h('p', { class: 'warn' }, 'Only the newest 10,000 rows are shown: narrow the period.') : null),
      h('div', { class: 'card' }, h('h2', {}, 'Budgets'), budgets.length
        ? h('table', {}, h('tbody', {}, budgets)) : h('p', { class: 'muted' }, 'No budget is set for this org or its keys.')),
      h('div', { class: 'card' }, h('h2', {}, `Per ${name === 'key_id' ? 'key' : 'model'} and ${u.bucket}`),
        table([
          ['Start', (r) => when(r.bucket_start)],
          [name === 'key_id' ? 'Key' : 'Model', (r) => (name === 'key_id' && names.has(r.key_id)
            ? h('span', { title: r.key_id }, names.get(r.key_id)) : r[name])],
          ['Requests', (r) => r.requests], ['Input tokens', (r) => r.input_tokens],
          ['Output tokens', (r) => r.output_tokens], ['Total', (r) => r.total_tokens],
        ], u.data)));
  }
  showAt(gen, h('h1', {}, 'Usage'), box, h('div', { class: 'card' }, form), result);
  if (orgs.length) await load();
}

// ---- credentials -----------------------------------------------------------------------------

async function credentialsPage() {
  const gen = generation;
  const box = h('div');
  const listSlot = h('div');
  const load = async () => {
    const r = await guarded(box, () => api('GET', '/api/credentials'));
    if (!r) return;
    listSlot.replaceChildren(table([
      ['Name', (c) => c.name], ['Kind', (c) => c.kind],
      ['Expires', (c) => when(c.kind === 'oauth' ? c.token_expires_at : c.expires_at)],
      ['State', (c) => c.last_error === 'needs_reconnect' ? h('span', { class: 'bad' }, 'needs reconnect (sluice credentials connect)')
        : c.expired ? h('span', { class: 'bad' }, 'expired')
          : c.refresh_failures ? h('span', { class: 'warn' }, `${c.refresh_failures} failed refreshes (${c.last_error})`)
            : h('span', { class: 'ok' }, 'ok')],
      ['Age (days)', (c) => c.age_days], ['Sealed by current key', (c) => c.current_key === false ? h('span', { class: 'warn' }, 'no: rotate') : 'yes'],
      ['', (c) => confirmButton('Delete', 'Click again to delete', async () => {
        const d = await guarded(box, () => api('DELETE', `/api/credentials/${encodeURIComponent(c.name)}`));
        if (d) { box.replaceChildren(notice(`${c.name} deleted.`)); load(); }
      })],
    ], r.data));
  };
  const out = h('div');
  const form = h('form', {
    class: 'inline',
    onsubmit: onSubmit(async (ev) => {
      out.replaceChildren();
      const f = new FormData(form);
      const body = { secret: f.get('secret'), expires_at: isoOrNothing(f.get('expires_at')) };
      const name = String(f.get('name')).trim();
      const r = await guarded(out, () => api('PUT', `/api/credentials/${encodeURIComponent(name)}`, body));
      form.querySelector('input[name=secret]').value = '';
      if (r) { out.replaceChildren(notice(`${name} set. The secret is sealed and never shown again.`)); load(); }
    }),
  },
  field('Name', h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9_.\\-]+' })),
  field('Secret', h('input', { name: 'secret', type: 'password', autocomplete: 'off', required: true })),
  field('Expires (optional)', h('input', { name: 'expires_at', type: 'datetime-local' })),
  h('button', { type: 'submit' }, 'Set or replace'));
  showAt(gen, h('h1', {}, 'Upstream credentials'), box, h('div', { class: 'card' }, listSlot),
    h('div', { class: 'card' }, h('h2', {}, 'Set a static credential'), out, form,
      h('p', { class: 'muted' }, 'Write-only: the secret is sealed with the master key and never shown. OAuth credentials are connected with `sluice credentials connect`.')));
  await load();
}

// ---- MCP servers -----------------------------------------------------------------------------

async function mcpPage() {
  const gen = generation;
  const box = h('div');
  const perKey = h('div');
  const servers = await guarded(box, () => api('GET', '/api/mcp/servers'));
  const orgs = await guarded(box, loadOrgs) || [];
  const orgSel = select('org', orgs.map((o) => [o.id, o.name]), orgs[0]?.id, { 'aria-label': 'Org' });
  async function load() {
    const org = orgs.find((o) => o.id === orgSel.value);
    if (!org) return;
    if (!orgRole(org.id, 'auditor')) {
      perKey.replaceChildren(h('p', { class: 'muted' }, `Org default tools: ${org.mcp_tools || 'none'}.`));
      return;
    }
    const keys = await guarded(perKey, () => api('GET', `/api/orgs/${org.id}/keys`));
    if (!keys) return;
    perKey.replaceChildren(h('p', {}, 'Org default: tools ', h('code', {}, org.mcp_tools || 'none'),
      ', resources ', h('code', {}, org.mcp_resources || 'none'), ', prompts ', h('code', {}, org.mcp_prompts || 'none')),
    table([
      ['Key', (k) => k.name], ['Status', (k) => k.status],
      ['Tools it may call', (k) => h('code', {}, k.mcp_tools === null ? `${org.mcp_tools || 'none'} (org default)` : k.mcp_tools || 'none')],
      ['Resources', (k) => h('code', {}, k.mcp_resources === null ? `${org.mcp_resources || 'none'} (org default)` : k.mcp_resources || 'none')],
      ['Prompts', (k) => h('code', {}, k.mcp_prompts === null ? `${org.mcp_prompts || 'none'} (org default)` : k.mcp_prompts || 'none')],
    ], keys.data.filter((k) => k.status === 'active')));
  }
  orgSel.addEventListener('change', load);
  showAt(gen, h('h1', {}, 'MCP servers'), box,
    h('div', { class: 'card' }, table([
      ['Name', (m) => m.name], ['Path', (m) => h('code', {}, m.path)], ['URL', (m) => m.url],
      ['Region', (m) => m.region], ['Credential', (m) => m.credential ? `${m.credential} (${m.credential_kind})` : null],
      ['Health', (m) => healthCell(m.healthy)],
    ], servers?.data || [])),
    h('div', { class: 'card' }, h('h2', {}, 'What each key may use'), orgs.length > 1 ? orgSel : null, perKey));
  await load();
}

// ---- account ---------------------------------------------------------------------------------

function enrollmentView(e) {
  return h('div', {},
    e.qr_svg ? h('img', { class: 'qr', alt: 'TOTP QR code', src: `data:image/svg+xml;base64,${btoa(e.qr_svg)}` }) : null,
    h('p', {}, 'Scan the QR code, or enter this URI, in an authenticator app:'),
    h('p', {}, h('code', { 'data-otpauth': true }, e.otpauth_uri)),
    h('p', {}, 'Recovery codes (each works once; store them offline):'),
    h('pre', {}, (e.recovery_codes || []).join('\n')));
}

async function accountPage() {
  const gen = generation;
  const u = await guarded(main(), () => api('GET', '/api/auth/me'));
  if (!u) return;
  state.me = u;
  const pwOut = h('div');
  const pwForm = h('form', {
    class: 'inline',
    onsubmit: onSubmit(async (ev) => {
      pwOut.replaceChildren();
      const f = new FormData(pwForm);
      const r = await guarded(pwOut, () => api('POST', '/api/auth/password', { current_password: f.get('current'), new_password: f.get('new') }));
      pwForm.reset();
      if (r) pwOut.replaceChildren(notice('Password changed; your other sessions were signed out.'));
    }),
  },
  field('Current password', h('input', { name: 'current', type: 'password', autocomplete: 'current-password', required: true })),
  field('New password', h('input', { name: 'new', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 })),
  h('button', { type: 'submit' }, 'Change password'));
  const totpOut = h('div');
  const totpForm = h('form', {
    class: 'inline',
    onsubmit: onSubmit(async (ev) => {
      totpOut.replaceChildren();
      const f = new FormData(totpForm);
      const body = { password: f.get('password') };
      if (f.get('code')) body.totp = String(f.get('code')).trim();
      if (f.get('recovery')) body.recovery_code = String(f.get('recovery')).trim();
      const r = await guarded(totpOut, () => api('POST', '/api/auth/totp', body));
      totpForm.reset();
      if (!r) return;
      totpOut.replaceChildren(h('div', { class: 'secret-once' }, h('p', {}, h('strong', {}, 'Shown this once.')), enrollmentView(r)));
      // Enrolled now: a next enrolment needs a current code.
      const submit = totpForm.querySelector('button[type=submit]');
      if (!totpForm.querySelector('input[name=code]')) {
        submit.before(field('Current code', h('input', { name: 'code', autocomplete: 'one-time-code' })),
          field('or a recovery code', h('input', { name: 'recovery' })));
      }
      submit.textContent = 'Enrol a new authenticator';
    }),
  },
  field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
  u.totp_enrolled ? field('Current code', h('input', { name: 'code', autocomplete: 'one-time-code' })) : null,
  u.totp_enrolled ? field('or a recovery code', h('input', { name: 'recovery' })) : null,
  h('button', { type: 'submit' }, u.totp_enrolled ? 'Enrol a new authenticator' : 'Enrol an authenticator'));
  showAt(gen, h('h1', {}, 'Account'),
    h('div', { class: 'card' }, h('p', {}, `${u.email}, ${u.operator ? 'operator' : `${u.role} of ${u.org_id}`}`),
      h('p', {}, 'Two-factor: ', u.totp_enrolled ? `TOTP, ${u.recovery_codes_left} recovery codes left` : h('span', { class: 'warn' }, 'not enrolled'))),
    h('div', { class: 'card' }, h('h2', {}, 'Password'), pwOut, pwForm),
    h('div', { class: 'card' }, h('h2', {}, 'Authenticator (TOTP)'), totpOut, totpForm));
}

render();
