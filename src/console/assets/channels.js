// Channels: the integration modules panel.
import { h, append, clear, when, json, dialog, toast, tabs } from './dom.js';
import { historyPanel } from './history.js';
import { settingsDialog } from './settings.js';
import { api } from './api.js';
import { sparkline } from './chart.js';

// "expires in 2 d" / "expired 3 h ago" for a token_valid_until.
function expiry(until) {
  if (!until) return null;
  const ms = new Date(until) - Date.now();
  if (Number.isNaN(ms)) return null;
  const span = (x) => {
    const m = Math.abs(x) / 60000;
    if (m < 60) return `${Math.round(m)} min`;
    if (m < 48 * 60) return `${Math.round(m / 60)} h`;
    return `${Math.round(m / 1440)} d`;
  };
  return ms > 0 ? { text: `expires in ${span(ms)}`, expired: false } : { text: `expired ${span(ms)} ago`, expired: true };
}

// "in 40 s" / "in 3 min" / a time, for a schedule's next run.
function soon(iso) {
  const ms = new Date(iso) - Date.now();
  if (Number.isNaN(ms)) return iso;
  if (ms < 1000) return 'now';
  if (ms < 60000) return `in ${Math.round(ms / 1000)} s`;
  if (ms < 3600000) return `in ${Math.round(ms / 60000)} min`;
  return when(iso);
}

// The columns that sort, and the value each sorts by.
const SORTS = {
  Code: (c) => c.code,
  Title: (c) => (c.opts && c.opts.title) || '',
  Type: (c) => c.type || 'general',
  Queue: (c) => (c.opts && c.opts.queue) || c.code,
  State: (c) => c.state,
};

export async function channelsPage(main, ctx) {
  const table = h('tbody');
  const detail = h('section', { class: 'detail', 'aria-label': 'Channel' });
  const search = h('input', { id: 'channel-search', type: 'search', 'aria-label': 'Find channels by code or title', placeholder: 'Find by code or title' });
  let sortBy = 'Code';
  let ascending = true;
  let last = null;
  const head = h('tr');
  function header() {
    clear(head);
    append(head, ['Code', 'Actions', 'Title', 'Type', 'Queue', 'Activated', 'State', 'Auto start', 'Script', 'Next run', 'Credential', 'Last hour', 'Last request', 'Connections']
      .map((c) => h('th', { scope: 'col', 'aria-sort': c === sortBy ? (ascending ? 'ascending' : 'descending') : null },
        SORTS[c] ? h('button', { type: 'button', class: 'link sort', 'data-sort': c, onclick: () => {
          ascending = c === sortBy ? !ascending : true;
          sortBy = c;
          header();
          if (last) render(last);
        } }, c, c === sortBy ? (ascending ? ' ▲' : ' ▼') : '') : c)));
  }
  header();
  append(main, [
    h('div', { class: 'bar' },
      h('h1', null, 'Channels'), search,
      ctx.admin && h('button', { type: 'button', id: 'add-channel', onclick: () => edit(null) }, 'Add channel')),
    h('div', { class: 'with-panel' },
      h('div', { class: 'scroll' },
        h('table', { class: 'list', id: 'channels' }, h('thead', null, head), table)),
      detail),
  ]);
  // Typing filters the rows listed, without asking the server again.
  function filterRows() {
    const needle = search.value.trim().toLowerCase();
    for (const row of table.querySelectorAll('tr[data-code]')) {
      row.hidden = !!needle && !row.dataset.find.includes(needle);
    }
  }
  search.addEventListener('input', filterRows);

  async function load() {
    last = await Promise.all([
      api('GET', '/admin/channels'), api('GET', '/admin/connections'), api('GET', '/admin/scripts'),
      api('GET', '/admin/overview')]);
    render(last);
  }

  function render([{ channels }, { connections }, { scripts }, history]) {
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    const scriptOk = Object.fromEntries(scripts.map((s) => [s.code, s.status]));
    const key = SORTS[sortBy];
    const sorted = [...channels].sort((a, b) => String(key(a)).localeCompare(String(key(b))) * (ascending ? 1 : -1));
    clear(table);
    if (!channels.length) append(table, h('tr', null, h('td', { colspan: 14 }, 'No channels yet.')));
    for (const c of sorted) {
      const o = c.opts || {};
      const disabled = c.state === 'disabled';
      const recv = c.recv_svcscriptcode || c.recv_svcscriptcode_ws || c.send_svcscriptcode;
      const status = recv && scriptOk[recv];
      const ends = expiry(o.token_valid_until);
      const broken = c.status && c.status.ok === false;
      append(table, h('tr', { 'data-code': c.code, 'data-find': `${c.code} ${o.title || ''}`.toLowerCase() },
        h('th', { scope: 'row' }, h('a', { href: `#/channels/${encodeURIComponent(c.code)}` }, c.code),
          ' ', h('span', { class: `pill mode ${o.mode === 'test' ? 'test' : 'production'}` }, o.mode === 'test' ? 'test' : 'production'),
          broken && h('div', { class: 'error-text load-error', title: c.status.error }, `does not load: serving ${c.status.serving || ''}`)),
        h('td', { class: 'actions' }, ctx.admin ? [
          h('button', { type: 'button', class: 'toggle', onclick: () => setDisabled(c.code, !disabled) },
            disabled ? 'Activate' : 'Deactivate'),
          !disabled && h('button', { type: 'button', class: 'runstop', onclick: () => runStop(c.code, c.state === 'stopped') },
            c.state === 'stopped' ? 'Start' : 'Stop'),
          o.mode === 'test' && h('button', { type: 'button', class: 'to-production', onclick: () => toProduction(o.queue || c.code) },
            'To production'),
        ] : ''),
        h('td', { class: 'title' }, o.title || ''),
        h('td', null, c.type || 'general'),
        h('td', null, o.queue || c.code),
        h('td', null, disabled ? 'deactivated' : 'activated'),
        h('td', null, h('span', { class: `pill ${c.state}` }, c.state)),
        h('td', null, o.autostart === false ? 'no' : 'yes'),
        h('td', { class: status && !status.ok ? 'error-text' : null, title: status && !status.ok ? status.error : null },
          recv ? `${recv}${status && !status.ok ? ' ✗ serving the last good version' : ''}` : '—'),
        h('td', { class: 'next-run', title: c.next_run || null }, c.next_run ? soon(c.next_run) : '—'),
        h('td', { class: ends && ends.expired ? 'error-text credential' : 'credential' }, ends ? ends.text : 'no expiry'),
        h('td', { class: 'hour' }, (() => {
          const hh = history.channels[c.code];
          if (!hh) return '—';
          return [sparkline(hh.requests, `${c.code} requests`, { width: 96, height: 22 }),
            h('span', { class: 'muted' }, ` ${sum(hh.requests)} req · ${sum(hh.errors)} err`)];
        })()),
        h('td', null, when((history.channels[c.code] || {}).last_request)),
        h('td', null, String((connections[c.code] || []).length))));
    }
    filterRows();
  }

  async function setDisabled(code, disabled) {
    const doc = await api('GET', `/admin/channels/${encodeURIComponent(code)}`);
    doc.opts = doc.opts || {};
    doc.opts.disabled = disabled;
    await api('PUT', `/admin/channels/${encodeURIComponent(code)}`, doc);
    toast(`${code} ${disabled ? 'deactivated' : 'activated'}`);
    await load();
  }

  // Every channel of the queue in test mode goes to production (POST /admin/queues/{name}/production).
  async function toProduction(queueName) {
    const ok = await dialog(`Switch queue ${queueName} to production?`,
      h('p', null, `Every channel of queue ${queueName} in test mode calls its production system from now on (url, token_remote). Jobs made in test mode stay in test mode.`),
      [{ label: 'Cancel', value: () => false }, { label: 'Switch to production', class: 'danger', value: () => true }]);
    if (!ok) return;
    const r = await api('POST', `/admin/queues/${encodeURIComponent(queueName)}/production`);
    toast(`${r.switched.length} channel${r.switched.length === 1 ? '' : 's'} now in production`);
    await load();
  }

  async function runStop(code, start) {
    await api('POST', `/admin/channels/${encodeURIComponent(code)}/${start ? 'start' : 'stop'}`);
    await load();
  }

  async function show(code, tab) {
    clear(detail);
    const [c, { scripts }] = await Promise.all([
      api('GET', `/admin/channels/${encodeURIComponent(code)}`), api('GET', '/admin/scripts')]);
    const token = h('code', { id: 'token-value' }, c.token_local ? '••••••••' : '(none)');
    // What does not load, said where the channel is looked at: its document, its scripts.
    const named = ['recv_svcscriptcode', 'send_svcscriptcode', 'recv_svcscriptcode_ws', 'send_svcscriptcode_ws']
      .map((f) => c[f]).concat(((c.opts && c.opts.schedule) || []).map((e) => e.script)).filter(Boolean);
    const broken = [
      c.status && c.status.ok === false ? [`The document does not load: ${c.status.error || ''}`, `serving ${c.status.serving || 'the last good version'}`] : null,
      ...scripts.filter((s) => named.includes(s.code) && s.status && s.status.ok === false)
        .map((s) => [`Script ${s.code} does not load: ${s.status.error || ''}`, `serving ${s.status.serving || 'the last good version'}`]),
    ].filter(Boolean);
    const details = [
      broken.length ? h('div', { class: 'load-errors', id: 'load-errors', role: 'alert' },
        broken.map(([what, serving]) => h('p', { class: 'error-text' }, what, h('br'), h('span', null, serving)))) : null,
      c.next_run ? h('p', { id: 'next-run' }, `Its schedule runs next ${soon(c.next_run)} (${when(c.next_run)}).`) : null,
      h('h3', null, 'Credentials'),
      h('dl', { class: 'kv' },
        h('dt', null, 'token_local'), h('dd', null, token),
        h('dt', null, 'valid until'), h('dd', null, (c.opts && c.opts.token_valid_until) || 'no expiry'),
        h('dt', null, 'credential'), h('dd', null, c.credential),
        h('dt', null, 'token_remote'), h('dd', null, c.token_remote ? '•••• (set)' : '(none)')),
      ctx.admin && h('div', { class: 'buttons' },
        h('button', { type: 'button', id: 'show-token', onclick: async () => {
          const t = await api('GET', `/admin/channels/${encodeURIComponent(code)}/token`);
          token.textContent = t.token_local || '(none)';
        } }, 'Show token'),
        h('button', { type: 'button', id: 'regenerate-token', onclick: async () => {
          const ok = await dialog(`Regenerate the token of ${code}?`,
            h('p', null, 'The old token stops working at once; callers using it get 401.'),
            [{ label: 'Cancel', value: () => false }, { label: 'Regenerate', class: 'danger', value: () => true }]);
          if (!ok) return;
          const t = await api('POST', `/admin/channels/${encodeURIComponent(code)}/token`);
          token.textContent = t.token_local;
          toast('New token shown once: copy it now.');
        } }, 'Regenerate token'),
        h('button', { type: 'button', id: 'edit-channel', onclick: () => edit(c) }, 'Settings'),
        h('button', { type: 'button', id: 'delete-channel', class: 'danger', onclick: () => remove(code) }, 'Delete')),
      h('h3', null, 'Document'),
      h('pre', { class: 'doc' }, json(c)),
    ];
    const parts = tabs(`Channel ${code}`, [
      { id: 'details', label: 'Details', render: (p) => append(p, details) },
      { id: 'history', label: 'History', render: async (p) => append(p, await historyPanel('channels', code, ctx, async () => { await load(); await show(code, 'history'); })) },
    ], tab);
    append(detail, [
      h('h2', { tabindex: '-1', id: 'detail-title' }, `Channel ${c.code}`),
      h('p', { class: 'title' }, (c.opts && c.opts.title) || ''),
      parts,
    ]);
    await parts.ready;
  }

  async function edit(c) {
    const { scripts } = await api('GET', '/admin/scripts');
    if (!await settingsDialog(c, scripts.map((s) => s.code))) return;
    toast('Saved');
    await load();
    if (c) {
      await show(c.code);
      // The panel was drawn again: focus goes to its Settings button, as it was.
      const again = document.getElementById('edit-channel');
      if (again) again.focus();
    }
  }

  async function remove(code) {
    const input = h('input', { 'aria-label': 'Channel code to confirm', id: 'confirm-code' });
    const typed = await dialog(`Delete channel ${code}?`,
      [h('p', null, `This removes channels/${code}.json and closes its websockets. Type ${code} to confirm.`), input],
      [{ label: 'Cancel', value: () => null }, { label: 'Delete', class: 'danger', value: () => input.value }]);
    if (typed !== code) { if (typed !== null) toast('Not deleted: the code did not match.', 'bad'); return; }
    await api('DELETE', `/admin/channels/${encodeURIComponent(code)}`);
    toast(`${code} deleted`);
    clear(detail);
    await load();
  }

  await load();
  if (ctx.args[0]) {
    await show(ctx.args[0]);
    // Opened from its link: the panel is where the user looks next.
    const title = document.getElementById('detail-title');
    if (title) { title.focus({ preventScroll: true }); detail.scrollIntoView({ block: 'nearest' }); }
  }
}
