// Channels: the integration modules panel.
import { h, append, clear, when, json, dialog, toast, tabs } from './dom.js';
import { historyPanel } from './history.js';
import { api } from './api.js';
import { sparkline } from './chart.js';

export async function channelsPage(main, ctx) {
  const table = h('tbody');
  const detail = h('section', { class: 'detail', 'aria-label': 'Channel' });
  append(main, [
    h('div', { class: 'bar' },
      h('h1', null, 'Channels'),
      ctx.admin && h('button', { type: 'button', id: 'add-channel', onclick: () => edit(null) }, 'Add channel')),
    h('div', { class: 'scroll' },
      h('table', { class: 'list', id: 'channels' },
        h('thead', null, h('tr', null,
          ['Code', 'Title', 'Type', 'Queue', 'Activated', 'State', 'Auto start', 'Script', 'Last hour', 'Last request', 'Connections', 'Actions']
            .map((c) => h('th', { scope: 'col' }, c)))),
        table)),
    detail,
  ]);

  async function load() {
    const [{ channels }, { connections }, { scripts }, history] = await Promise.all([
      api('GET', '/admin/channels'), api('GET', '/admin/connections'), api('GET', '/admin/scripts'),
      api('GET', '/admin/overview')]);
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    const scriptOk = Object.fromEntries(scripts.map((s) => [s.code, s.status]));
    clear(table);
    if (!channels.length) append(table, h('tr', null, h('td', { colspan: 12 }, 'No channels yet.')));
    for (const c of channels) {
      const o = c.opts || {};
      const disabled = c.state === 'disabled';
      const recv = c.recv_svcscriptcode || c.recv_svcscriptcode_ws || c.send_svcscriptcode;
      const status = recv && scriptOk[recv];
      append(table, h('tr', { 'data-code': c.code },
        h('th', { scope: 'row' }, h('a', { href: `#/channels/${encodeURIComponent(c.code)}` }, c.code)),
        h('td', { class: 'title' }, o.title || ''),
        h('td', null, c.type || 'general'),
        h('td', null, o.queue || c.code),
        h('td', null, disabled ? 'deactivated' : 'activated'),
        h('td', null, h('span', { class: `pill ${c.state}` }, c.state)),
        h('td', null, o.autostart === false ? 'no' : 'yes'),
        h('td', null, recv ? `${recv}${status && !status.ok ? ' ✗' : ''}` : '—'),
        h('td', { class: 'hour' }, (() => {
          const hh = history.channels[c.code];
          if (!hh) return '—';
          return [sparkline(hh.requests, `${c.code} requests`, { width: 96, height: 22 }),
            h('span', { class: 'muted' }, ` ${sum(hh.requests)} req · ${sum(hh.errors)} err`)];
        })()),
        h('td', null, when((history.channels[c.code] || {}).last_request)),
        h('td', null, String((connections[c.code] || []).length)),
        h('td', { class: 'actions' }, ctx.admin ? [
          h('button', { type: 'button', class: 'toggle', onclick: () => setDisabled(c.code, !disabled) },
            disabled ? 'Activate' : 'Deactivate'),
          !disabled && h('button', { type: 'button', class: 'runstop', onclick: () => runStop(c.code, c.state === 'stopped') },
            c.state === 'stopped' ? 'Start' : 'Stop'),
        ] : '')));
    }
  }

  async function setDisabled(code, disabled) {
    const doc = await api('GET', `/admin/channels/${encodeURIComponent(code)}`);
    doc.opts = doc.opts || {};
    doc.opts.disabled = disabled;
    await api('PUT', `/admin/channels/${encodeURIComponent(code)}`, doc);
    toast(`${code} ${disabled ? 'deactivated' : 'activated'}`);
    await load();
  }

  async function runStop(code, start) {
    await api('POST', `/admin/channels/${encodeURIComponent(code)}/${start ? 'start' : 'stop'}`);
    await load();
  }

  async function show(code, tab) {
    clear(detail);
    const c = await api('GET', `/admin/channels/${encodeURIComponent(code)}`);
    const token = h('code', { id: 'token-value' }, c.token_local ? '••••••••' : '(none)');
    const details = [
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
      h('h2', null, `Channel ${c.code}`),
      h('p', { class: 'title' }, (c.opts && c.opts.title) || ''),
      parts,
    ]);
    await parts.ready;
  }

  async function edit(c) {
    const doc = c ? { ...c } : { code: '', type: 'general', opts: { title: '' } };
    for (const k of ['status', 'state', 'credential']) delete doc[k];
    const area = h('textarea', { class: 'code', rows: 18, 'aria-label': 'Channel document (JSON)' }, json(doc));
    const error = h('p', { class: 'error', role: 'alert' });
    const saved = await dialog(c ? `Settings of ${c.code}` : 'Add channel', [area, error], [
      { label: 'Cancel', value: () => null },
      { label: 'Save', value: () => area.value },
    ]);
    if (saved === null) return;
    try {
      const body = JSON.parse(saved);
      if (c) await api('PUT', `/admin/channels/${encodeURIComponent(c.code)}`, body);
      else await api('POST', '/admin/channels', body);
      toast('Saved');
      await load();
      if (c) await show(c.code);
    } catch (e) {
      toast(`Not saved: ${e.message}`, 'bad');
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
  if (ctx.args[0]) await show(ctx.args[0]);
}
