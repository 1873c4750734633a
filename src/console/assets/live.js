// Live: open websocket connections, and tails of events and requests.
import { h, append, clear, when } from './dom.js';
import { api, listen } from './api.js';

const MAX_ROWS = 200;

function matches(pattern, name) {
  if (!pattern) return true;
  const p = pattern.split('.');
  const n = name.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i < n.length;
    if (i >= n.length || (p[i] !== '*' && p[i] !== n[i])) return false;
  }
  return p.length === n.length;
}

export async function livePage(main) {
  const conns = h('tbody');
  const events = h('tbody', { id: 'event-tail' });
  const requests = h('tbody', { id: 'request-tail' });
  const filter = h('input', { id: 'event-filter', 'aria-label': 'Event name pattern', placeholder: 'order.*' });
  append(main, [
    h('h1', null, 'Live'),
    h('h2', null, 'Open websocket connections'),
    h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'connections' },
      h('thead', null, h('tr', null, ['Channel', 'Sender', 'Since', 'Subscriptions', 'Node'].map((c) => h('th', { scope: 'col' }, c)))), conns)),
    h('div', { class: 'split2' },
      h('section', null, h('h2', null, 'Events'), h('label', null, 'Filter ', filter),
        h('table', { class: 'list' }, h('thead', null, h('tr', null, ['Time', 'Name', 'Source', 'Reached'].map((c) => h('th', { scope: 'col' }, c)))), events)),
      h('section', null, h('h2', null, 'Requests'),
        h('table', { class: 'list' }, h('thead', null, h('tr', null, ['Time', 'Channel', 'Status', 'ms', 'Request id'].map((c) => h('th', { scope: 'col' }, c)))), requests))),
  ]);
  async function loadConns() {
    const { connections } = await api('GET', '/admin/connections');
    clear(conns);
    const rows = Object.entries(connections).flatMap(([code, list]) => list.map((c) => [code, c]));
    if (!rows.length) append(conns, h('tr', null, h('td', { colspan: 5 }, 'None open.')));
    for (const [code, c] of rows) {
      append(conns, h('tr', null, h('td', null, code), h('td', null, c.address), h('td', null, when(c.opened)),
        h('td', null, (c.patterns || []).join(', ') || '—'), h('td', null, c.node || 'this node')));
    }
  }
  const add = (tbody, row) => {
    tbody.prepend(row);
    while (tbody.children.length > MAX_ROWS) tbody.lastChild.remove();
  };
  await loadConns();
  const timer = setInterval(loadConns, 2000);
  const stop = listen((m) => {
    const t = new Date().toLocaleTimeString();
    if (m.type === 'event' && matches(filter.value.trim(), m.name)) {
      add(events, h('tr', null, h('td', null, t), h('td', null, m.name), h('td', null, m.source), h('td', null, String(m.reached))));
    } else if (m.type === 'request') {
      add(requests, h('tr', null, h('td', null, t), h('td', null, m.channel || '—'), h('td', null, String(m.status)),
        h('td', null, String(m.duration_ms)), h('td', null, m.request_id)));
    }
  });
  return () => { clearInterval(timer); stop(); };
}
