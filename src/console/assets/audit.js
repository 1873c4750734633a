// The audit log (SPEC §19): every admin action, newest first, with the
// filters of GET /admin/audit.
import { h, append, clear, when } from './dom.js';
import { api } from './api.js';

const PAGE = 100;

export async function auditPage(main) {
  const field = (id, label, placeholder) => h('label', null, label,
    h('input', { id, name: id, placeholder, 'aria-label': label }));
  const form = h('form', { class: 'form', id: 'audit-filters' },
    field('since', 'Since', '1h, 7d or 2026-12-01T00:00:00Z'),
    field('until', 'Until', 'an age or an RFC 3339 time'),
    field('by', 'By', 'admin, user:ID, anonymous'),
    field('code', 'Code', 'channel, script or secret'),
    field('action', 'Action', 'channel.change, token.show…'),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', id: 'audit-apply' }, 'Apply')));
  const body = h('tbody');
  const more = h('button', { type: 'button', id: 'audit-more', hidden: true }, 'Older entries');
  const error = h('p', { class: 'error', role: 'alert' });
  append(main, [
    h('h1', null, 'Audit'),
    form,
    error,
    h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'audit' },
      h('thead', null, h('tr', null, ['When', 'Action', 'Code', 'By', 'Address', 'Status', 'Versions', 'Request']
        .map((c) => h('th', { scope: 'col' }, c)))),
      body)),
    more,
  ]);
  let offset = 0;

  function query() {
    const params = new URLSearchParams();
    for (const name of ['since', 'until', 'by', 'code', 'action']) {
      const v = form.elements[name].value.trim();
      if (v) params.set(name, v);
    }
    params.set('limit', PAGE);
    params.set('offset', offset);
    return params.toString();
  }

  async function load(reset) {
    if (reset) { offset = 0; clear(body); }
    error.textContent = '';
    let entries;
    try {
      ({ entries } = await api('GET', `/admin/audit?${query()}`));
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    if (reset && !entries.length) append(body, h('tr', null, h('td', { colspan: 8 }, 'No entries.')));
    for (const e of entries) {
      const refused = e.status >= 400;
      append(body, h('tr', { class: refused ? 'refused' : null },
        h('td', null, when(e.at)),
        h('td', null, e.action),
        h('td', null, e.code || '—'),
        h('td', null, e.by),
        h('td', null, e.address),
        h('td', { class: refused ? 'error-text' : null }, String(e.status)),
        h('td', null, e.after !== undefined && e.after !== null ? `${e.before ?? '—'} → ${e.after}` : ''),
        h('td', null, h('code', { title: e.request_id }, (e.request_id || '').slice(0, 8)))));
    }
    offset += entries.length;
    more.hidden = entries.length < PAGE;
  }

  form.addEventListener('submit', (e) => { e.preventDefault(); load(true); });
  more.addEventListener('click', () => load(false));
  await load(true);
}
