// The key console. Every action is one admin API call with the token the
// user signed in with (api.js); the page builds its DOM with createElement
// and textContent only, since key, tenant and org names are chosen by
// whoever holds a token.

import * as api from './api.js';
import { usageChart } from './chart.js';

const $ = id => document.getElementById(id);

const state = {
  tenants: [], orgs: [],
  tenantID: '', orgID: '', status: '',
  cursor: '',
  key: null, // the key shown in the detail view
  tenantPick: '', // the tenant whose orgs the tenants view shows
};

// --- small DOM helpers -------------------------------------------------

function h(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') {
      e.className = v;
    } else if (k === 'data') {
      Object.assign(e.dataset, v);
    } else {
      e.setAttribute(k, v);
    }
  }
  for (const c of children) {
    if (c !== null && c !== undefined) {
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  return e;
}

function clear(e) { e.replaceChildren(); }

// label names a tenant or org in a menu: its name and the end of its id,
// which tells apart two of the same name.
function label(r) {
  return r.name ? `${r.name} (…${r.id.slice(-6)})` : r.id;
}

function notice(text, info = false) {
  const n = $('notice');
  n.textContent = text;
  n.classList.toggle('info', info);
  n.hidden = !text;
}

function fail(err) {
  if (err instanceof api.APIError && err.status === 401 && err.code === 'unauthorized') {
    signOut();
    notice('The admin token was refused (401): sign in again.');
    return;
  }
  notice(api.describe(err));
}

function when(iso) {
  if (!iso) {
    return '—';
  }
  const t = Date.parse(iso);
  const s = Math.round((Date.now() - t) / 1000);
  const a = Math.abs(s);
  let text;
  if (a < 45) {
    text = 'just now';
  } else {
    const [n, unit] = a < 3600 ? [Math.round(a / 60), 'min'] : a < 86400 ? [Math.round(a / 3600), 'h'] : [Math.round(a / 86400), 'd'];
    text = s >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
  }
  const e = h('time', { datetime: iso, title: new Date(t).toISOString() }, text);
  return e;
}

// keyState is what the key is now: the stored status, with expired from
// expires_at, and rotating for a key revoked at a future instant (a
// rotation's grace period).
export function keyState(k, now = Date.now()) {
  if (k.revoked_at) {
    return Date.parse(k.revoked_at) > now ? 'rotating' : 'revoked';
  }
  if (k.status === 'revoked') {
    return 'revoked';
  }
  if (k.expires_at && Date.parse(k.expires_at) <= now) {
    return 'expired';
  }
  return k.status;
}

function badge(s) { return h('span', { class: 'badge status-' + s }, s); }

function scopes(list) {
  const f = document.createDocumentFragment();
  for (const s of list || []) {
    f.append(h('span', { class: 'scope' }, s));
  }
  if (!list || list.length === 0) {
    f.append('—');
  }
  return f;
}

function credits(k) {
  return k.credits_remaining === undefined || k.credits_remaining === null ? 'unmetered' : String(k.credits_remaining);
}

// --- views ---------------------------------------------------------------

function show(view) {
  for (const v of ['signin', 'keys', 'key', 'tenants']) {
    $('view-' + v).hidden = v !== view;
  }
  $('tab-keys').setAttribute('aria-current', view === 'keys' || view === 'key' ? 'page' : 'false');
  $('tab-tenants').setAttribute('aria-current', view === 'tenants' ? 'page' : 'false');
}

// --- sign-in -------------------------------------------------------------

async function signIn(ev) {
  ev.preventDefault();
  const input = $('signin-token');
  const t = input.value.trim();
  input.value = '';
  if (!t) {
    return;
  }
  api.setToken(t);
  try {
    await loadTenants();
  } catch (err) {
    if (err instanceof api.APIError && err.status === 401) {
      api.clearToken();
      notice('That token was refused (401).');
      return;
    }
    if (!(err instanceof api.APIError && err.status === 403)) {
      api.clearToken();
      fail(err);
      return;
    }
    // A token without tenants:read still manages the keys it reaches.
    state.tenants = [];
    fillTenantFilter();
  }
  notice('');
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = 'Signed in';
  show('keys');
  await refreshOrgs();
  await loadKeys(false);
}

function signOut() {
  api.clearToken();
  Object.assign(state, { tenants: [], orgs: [], tenantID: '', orgID: '', status: '', cursor: '', key: null, tenantPick: '' });
  for (const id of ['keys-body', 'audit-body', 'usage-chart', 'key-fields', 'tenant-list', 'org-list', 'filter-tenant', 'filter-org']) {
    clear($(id));
  }
  $('key-title').textContent = '';
  $('usage-total').textContent = '';
  $('filter-status').value = '';
  $('keys-more').hidden = true;
  $('keys-empty').hidden = true;
  for (const d of ['create-dialog', 'secret-dialog', 'confirm-dialog']) {
    if ($(d).open) {
      $(d).close();
    }
  }
  $('nav').hidden = true;
  $('who').hidden = true;
  show('signin');
  notice('Signed out.', true);
}

// --- tenants and orgs --------------------------------------------------

async function loadTenants() {
  const res = await api.call('GET', '/v1/tenants');
  state.tenants = res.data || [];
  if (!state.tenants.some(t => t.id === state.tenantID)) {
    state.tenantID = state.tenants.length === 1 ? state.tenants[0].id : '';
  }
  fillTenantFilter();
}

function fillTenantFilter() {
  const sel = $('filter-tenant');
  clear(sel);
  sel.append(h('option', { value: '' }, 'All tenants'));
  for (const t of state.tenants) {
    sel.append(h('option', { value: t.id, title: t.id }, label(t)));
  }
  sel.value = state.tenantID;
  sel.disabled = state.tenants.length === 0;
}

// refreshOrgs loads the orgs of the selected tenant for the org filter.
async function refreshOrgs() {
  const sel = $('filter-org');
  clear(sel);
  state.orgs = [];
  if (state.tenantID) {
    try {
      const res = await api.call('GET', '/v1/orgs' + api.query({ tenant_id: state.tenantID }));
      state.orgs = res.data || [];
    } catch (err) {
      if (!(err instanceof api.APIError && err.status === 403)) {
        fail(err);
      }
    }
  }
  sel.append(h('option', { value: '' }, 'All orgs'));
  for (const o of state.orgs) {
    sel.append(h('option', { value: o.id, title: o.id }, label(o)));
  }
  if (!state.orgs.some(o => o.id === state.orgID)) {
    state.orgID = '';
  }
  sel.value = state.orgID;
  sel.disabled = state.orgs.length === 0;
}

async function showTenants() {
  show('tenants');
  const list = $('tenant-list');
  clear(list);
  try {
    await loadTenants();
  } catch (err) {
    fail(err);
    return;
  }
  if (!state.tenants.some(t => t.id === state.tenantPick)) {
    state.tenantPick = state.tenantID || (state.tenants[0] ? state.tenants[0].id : '');
  }
  for (const t of state.tenants) {
    const open = h('button', { type: 'button', class: 'link' }, t.name || t.id);
    open.addEventListener('click', () => { state.tenantPick = t.id; showTenants(); });
    const keys = h('button', { type: 'button', class: 'secondary' }, 'Keys');
    keys.addEventListener('click', () => openKeys(t.id, ''));
    list.append(h('li', { class: t.id === state.tenantPick ? 'selected' : '', data: { tenantId: t.id } }, open, h('code', {}, t.id), h('span', { class: 'grow' }), keys));
  }
  if (state.tenants.length === 0) {
    list.append(h('li', { class: 'muted' }, 'No tenants visible to this token.'));
  }
  await showOrgs();
}

async function showOrgs() {
  const list = $('org-list');
  clear(list);
  const t = state.tenants.find(x => x.id === state.tenantPick);
  $('orgs-of').textContent = t ? 'of ' + (t.name || t.id) : '';
  $('org-form').hidden = !t;
  if (!t) {
    return;
  }
  let orgs = [];
  try {
    orgs = (await api.call('GET', '/v1/orgs' + api.query({ tenant_id: t.id }))).data || [];
  } catch (err) {
    fail(err);
    return;
  }
  for (const o of orgs) {
    const keys = h('button', { type: 'button', class: 'secondary' }, 'Keys');
    keys.addEventListener('click', () => openKeys(t.id, o.id));
    list.append(h('li', { data: { orgId: o.id } }, h('span', {}, o.name || o.id), h('code', {}, o.id), h('span', { class: 'grow' }), keys));
  }
  if (orgs.length === 0) {
    list.append(h('li', { class: 'muted' }, 'No orgs.'));
  }
}

async function createTenant(ev) {
  ev.preventDefault();
  try {
    const t = await api.call('POST', '/v1/tenants', { name: $('tenant-name').value.trim() });
    $('tenant-name').value = '';
    state.tenantPick = t.id;
    notice('Tenant ' + t.id + ' created.', true);
  } catch (err) {
    fail(err);
  }
  await showTenants();
}

async function createOrg(ev) {
  ev.preventDefault();
  try {
    const o = await api.call('POST', '/v1/orgs', { tenant_id: state.tenantPick, name: $('org-name').value.trim() });
    $('org-name').value = '';
    notice('Org ' + o.id + ' created.', true);
  } catch (err) {
    fail(err);
  }
  await showOrgs();
}

async function openKeys(tenantID, orgID) {
  state.tenantID = tenantID;
  fillTenantFilter();
  state.orgID = orgID;
  await refreshOrgs();
  show('keys');
  await loadKeys(false);
}

// --- keys ----------------------------------------------------------------

function keyRow(k) {
  const name = h('button', { type: 'button', class: 'link key-open' }, k.name || '(unnamed)');
  name.addEventListener('click', () => openKey(k.id));
  const cell = (label, content, cls) => h('td', { 'data-label': label, class: cls || '' }, content);
  return h('tr', { data: { keyId: k.id } },
    cell('Name', name),
    cell('Prefix', h('code', {}, k.display_prefix || ''), 'nowrap'),
    cell('Env', k.environment),
    cell('Tier', k.tier),
    cell('Scopes', scopes(k.scopes)),
    cell('Status', badge(keyState(k)), 'status'),
    cell('Created', when(k.created_at), 'nowrap'),
    cell('Last used', k.last_used_at ? when(k.last_used_at) : 'never', 'nowrap'),
    cell('Expires', k.expires_at ? when(k.expires_at) : 'never', 'nowrap'),
    cell('Credits', credits(k)),
    cell('', (() => {
      const b = h('button', { type: 'button', class: 'secondary' }, 'Details');
      b.addEventListener('click', () => openKey(k.id));
      return b;
    })()));
}

async function loadKeys(append) {
  const body = $('keys-body');
  let page;
  try {
    page = await api.call('GET', '/v1/keys' + api.query({
      tenant_id: state.tenantID, org_id: state.orgID, status: state.status,
      cursor: append ? state.cursor : '', limit: 25,
    }));
  } catch (err) {
    if (!append) {
      clear(body);
    }
    fail(err);
    return;
  }
  if (!append) {
    clear(body);
  }
  for (const k of page.data || []) {
    body.append(keyRow(k));
  }
  state.cursor = page.next_cursor || '';
  $('keys-more').hidden = !page.has_more;
  $('keys-empty').hidden = body.children.length > 0;
}

// --- one key -------------------------------------------------------------

async function openKey(id) {
  let k;
  try {
    k = await api.call('GET', api.keyPath(id));
  } catch (err) {
    fail(err);
    return;
  }
  state.key = k;
  show('key');
  renderKey(k);
  await Promise.all([loadUsage(), loadAudit()]);
}

function renderKey(k) {
  $('key-title').textContent = k.name || '(unnamed)';
  const dl = $('key-fields');
  clear(dl);
  const st = keyState(k);
  const rows = [
    ['ID', h('code', {}, k.id)],
    ['Status', badge(st)],
    ['Prefix', h('code', {}, k.display_prefix || '')],
    ['Tenant', h('code', {}, k.tenant_id)],
    ['Org', k.org_id ? h('code', {}, k.org_id) : '— (tenant-level)'],
    ['User', k.user_id || '—'],
    ['Environment', k.environment],
    ['Tier', k.tier],
    ['Scopes', scopes(k.scopes)],
    ['Slot', k.slot || '—'],
    ['Created', when(k.created_at)],
    ['Last used', k.last_used_at ? when(k.last_used_at) : 'never'],
    ['Expires', k.expires_at ? when(k.expires_at) : 'never'],
    ['Credits', credits(k)],
  ];
  if (k.revoked_at) {
    rows.push([st === 'rotating' ? 'Stops working' : 'Revoked', when(k.revoked_at)]);
  }
  if (k.rotated_to) {
    rows.push(['Rotated to', h('code', {}, k.rotated_to)]);
  }
  for (const [label, value] of rows) {
    dl.append(h('dt', {}, label), h('dd', { data: { field: label.toLowerCase().replace(' ', '-') } }, value));
  }
  const revoked = st === 'revoked';
  $('key-deactivate').hidden = revoked || k.status !== 'active';
  $('key-reactivate').hidden = revoked || k.status !== 'inactive';
  $('key-rotate').parentElement.hidden = revoked || st === 'rotating';
  $('key-revoke').hidden = revoked;
  $('key-regenerate').hidden = !k.slot;
}

async function loadUsage() {
  const k = state.key;
  const box = $('usage-chart');
  const g = $('usage-granularity').value;
  clear(box);
  $('usage-total').textContent = '';
  try {
    const res = await api.call('GET', api.keyPath(k.id, '/usage') + api.query({ granularity: g }));
    const c = usageChart(res.data || [], g);
    box.append(c.svg);
    $('usage-total').textContent = `${c.allowed} allowed, ${c.denied} denied in the period shown.`;
  } catch (err) {
    box.append(h('p', { class: 'muted' }, api.describe(err)));
  }
}

async function loadAudit() {
  const k = state.key;
  const body = $('audit-body');
  clear(body);
  $('audit-empty').hidden = true;
  let entries = [];
  try {
    entries = (await api.call('GET', '/v1/audit' + api.query({ target: k.id, limit: 100 }))).data || [];
  } catch (err) {
    body.append(h('tr', {}, h('td', { colspan: '5', class: 'muted' }, api.describe(err))));
    return;
  }
  for (const e of entries.slice().reverse()) {
    body.append(h('tr', { data: { action: e.action } },
      h('td', { 'data-label': 'Time', class: 'nowrap' }, when(e.time)),
      h('td', { 'data-label': 'Action' }, h('code', {}, e.action)),
      h('td', { 'data-label': 'Outcome' }, `${e.outcome} (${e.status})`),
      h('td', { 'data-label': 'By' }, e.token_name || '—'),
      h('td', { 'data-label': 'Client' }, e.client_addr || '—')));
  }
  $('audit-empty').hidden = entries.length > 0;
}

// act runs one change of the key shown, then shows it again.
async function act(fn) {
  try {
    await fn();
    notice('');
  } catch (err) {
    fail(err);
  }
  if (state.key) {
    await openKey(state.key.id);
  }
}

async function deactivate() {
  const k = state.key;
  if (!await confirmAction('Deactivate key?', `Checks with "${k.name}" are refused until it is reactivated.`, 'Deactivate')) {
    return;
  }
  await act(() => api.call('PATCH', api.keyPath(k.id), { status: 'inactive' }));
}

async function reactivate() {
  const k = state.key;
  await act(() => api.call('PATCH', api.keyPath(k.id), { status: 'active' }));
}

async function revoke() {
  const k = state.key;
  if (!await confirmAction('Revoke key?', `"${k.name}" (${k.display_prefix}…) stops working now. This cannot be undone.`, 'Revoke')) {
    return;
  }
  await act(() => api.call('POST', api.keyPath(k.id, '/revoke'), {}));
}

async function rotate() {
  const k = state.key;
  const sel = $('rotate-grace');
  const grace = sel.value;
  const label = sel.options[sel.selectedIndex].textContent;
  if (!await confirmAction('Rotate key?', `A new key replaces "${k.name}"; the old one keeps working for ${label}.`, 'Rotate')) {
    return;
  }
  try {
    const n = await api.call('POST', api.keyPath(k.id, '/rotate'), { grace_period: grace });
    showSecret(n.key, () => openKey(n.id));
  } catch (err) {
    fail(err);
  }
}

async function regenerate() {
  const k = state.key;
  if (!await confirmAction('Regenerate key?', `A new key takes slot "${k.slot}"; "${k.name}" is revoked at once.`, 'Regenerate')) {
    return;
  }
  const spec = { tenant_id: k.tenant_id, name: k.name, environment: k.environment, tier: k.tier, slot: k.slot };
  if (k.org_id) { spec.org_id = k.org_id; }
  if (k.user_id) { spec.user_id = k.user_id; }
  if (k.scopes && k.scopes.length) { spec.scopes = k.scopes; }
  try {
    const n = await api.call('POST', '/v1/keys', spec);
    showSecret(n.key, () => openKey(n.id));
  } catch (err) {
    fail(err);
  }
}

// --- create --------------------------------------------------------------

function createTarget() {
  const tenant = state.tenantID || (state.tenants.length === 1 ? state.tenants[0].id : '');
  const org = state.orgID || (state.orgs.length === 1 ? state.orgs[0].id : '');
  return { tenant, org };
}

function openCreate() {
  const { tenant, org } = createTarget();
  $('create-error').hidden = true;
  if (!tenant) {
    notice('Pick a tenant first: a key belongs to one.');
    return;
  }
  $('create-where').textContent = 'In tenant ' + tenant + (org ? ', org ' + org : ' (tenant-level key)');
  $('create-dialog').showModal();
  $('create-name').focus();
}

async function createKey(ev) {
  ev.preventDefault();
  const { tenant, org } = createTarget();
  const spec = {
    tenant_id: tenant,
    name: $('create-name').value.trim(),
    environment: $('create-env-test').checked ? 'test' : 'live',
  };
  if (org) { spec.org_id = org; }
  const sc = $('create-scopes').value.split(',').map(s => s.trim()).filter(s => s);
  if (sc.length) { spec.scopes = sc; }
  const tier = $('create-tier').value.trim();
  if (tier) { spec.tier = tier; }
  if ($('create-expiry').value) { spec.expires_in = $('create-expiry').value; }
  const slot = $('create-slot').value.trim();
  if (slot) { spec.slot = slot; }
  const cr = $('create-credits').value.trim();
  if (cr !== '') { spec.credits_remaining = Number(cr); }
  $('create-submit').disabled = true;
  try {
    const n = await api.call('POST', '/v1/keys', spec);
    $('create-dialog').close();
    $('create-form').reset();
    showSecret(n.key, null);
    await loadKeys(false);
  } catch (err) {
    const e = $('create-error');
    e.textContent = api.describe(err);
    e.hidden = false;
  } finally {
    $('create-submit').disabled = false;
  }
}

// --- dialogs -------------------------------------------------------------

// The shown-once key is in the page only while its dialog is open: closing
// it (button or Escape) empties the element, and nothing else holds it.
let afterSecret = null;

function showSecret(raw, then) {
  $('secret-value').textContent = raw;
  $('secret-copied').hidden = true;
  afterSecret = then;
  $('secret-dialog').showModal();
}

async function copySecret() {
  const text = $('secret-value').textContent;
  const done = $('secret-copied');
  try {
    await navigator.clipboard.writeText(text);
    done.textContent = 'Copied.';
  } catch {
    // No clipboard (an insecure origin, a denied permission): select it.
    const r = document.createRange();
    r.selectNodeContents($('secret-value'));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(r);
    done.textContent = 'Selected: copy it with Ctrl+C (⌘C).';
  }
  done.hidden = false;
}

// forgetSecret runs before the dialog closes (its button) and again on the
// close event (Escape), which the browser fires a task later.
function forgetSecret() {
  $('secret-value').textContent = '';
  $('secret-copied').hidden = true;
  window.getSelection().removeAllRanges();
}

function secretClosed() {
  forgetSecret();
  const then = afterSecret;
  afterSecret = null;
  if (then) {
    then();
  }
}

let confirmResolve = null;

function confirmAction(title, text, ok) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = ok;
  $('confirm-dialog').showModal();
  return new Promise(resolve => { confirmResolve = resolve; });
}

function confirmDone(v) {
  const r = confirmResolve;
  confirmResolve = null;
  if ($('confirm-dialog').open) {
    $('confirm-dialog').close();
  }
  if (r) {
    r(v);
  }
}

// --- wiring --------------------------------------------------------------

function wire() {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('tab-keys').addEventListener('click', () => { notice(''); show('keys'); loadKeys(false); });
  $('tab-tenants').addEventListener('click', () => { notice(''); showTenants(); });
  $('filter-tenant').addEventListener('change', async ev => {
    state.tenantID = ev.target.value;
    state.orgID = '';
    await refreshOrgs();
    await loadKeys(false);
  });
  $('filter-org').addEventListener('change', ev => { state.orgID = ev.target.value; loadKeys(false); });
  $('filter-status').addEventListener('change', ev => { state.status = ev.target.value; loadKeys(false); });
  $('refresh-keys').addEventListener('click', () => loadKeys(false));
  $('keys-more').addEventListener('click', () => loadKeys(true));
  $('open-create').addEventListener('click', openCreate);
  $('create-form').addEventListener('submit', createKey);
  $('create-cancel').addEventListener('click', () => { $('create-dialog').close(); $('create-form').reset(); });
  $('back-to-keys').addEventListener('click', () => { state.key = null; show('keys'); loadKeys(false); });
  $('key-deactivate').addEventListener('click', deactivate);
  $('key-reactivate').addEventListener('click', reactivate);
  $('key-rotate').addEventListener('click', rotate);
  $('key-regenerate').addEventListener('click', regenerate);
  $('key-revoke').addEventListener('click', revoke);
  $('usage-granularity').addEventListener('change', loadUsage);
  $('secret-copy').addEventListener('click', copySecret);
  $('secret-close').addEventListener('click', () => { forgetSecret(); $('secret-dialog').close(); });
  $('secret-dialog').addEventListener('close', secretClosed);
  $('confirm-ok').addEventListener('click', () => confirmDone(true));
  $('confirm-cancel').addEventListener('click', () => confirmDone(false));
  $('confirm-dialog').addEventListener('close', () => confirmDone(false));
  $('tenant-form').addEventListener('submit', createTenant);
  $('org-form').addEventListener('submit', createOrg);
  show('signin');
  document.body.dataset.ready = 'true';
}

wire();
