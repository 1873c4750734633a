// Live: open websocket connections, and tails of events and requests. The
// filters apply to the rows listed already as well as to those that come;
// Pause holds new rows back (they come in when the tail goes on); the
// console's own calls (/admin, /console) are left out unless asked for.
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

// The console's own polling and the admin API: not channel traffic.
const own = (path) => /^\/(admin|console)(\/|$)/.test(path || '');

export async function livePage(main) {
  const conns = h('tbody');
  const events = h('tbody', { id: 'event-tail' });
  const requests = h('tbody', { id: 'request-tail' });
  const filter = h('input', { id: 'event-filter', 'aria-label': 'Event name pattern', placeholder: 'order.*' });
  const requestFilter = h('input', { id: 'request-filter', 'aria-label': 'Requests holding', placeholder: 'channel, path or status' });
  const showOwn = h('input', { type: 'checkbox', id: 'show-admin', 'aria-label': 'Show admin and console requests' });
  let paused = false;
  const held = [];
  const pause = h('button', { type: 'button', id: 'pause', 'aria-pressed': 'false', onclick: () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Go on' : 'Pause';
    if (!paused) { for (const [tbody, row] of held.splice(0)) add(tbody, row); }
  } }, 'Pause');
  append(main, [
    h('div', { class: 'bar' }, h('h1', null, 'Live'), pause),
    h('h2', null, 'Open websocket connections'),
    h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'connections' },
      h('thead', null, h('tr', null, ['Channel', 'Sender', 'Since', 'Subscriptions', 'Node'].map((c) => h('th', { scope: 'col' }, c)))), conns)),
    h('div', { class: 'split2' },
      h('section', null, h('h2', null, 'Events'), h('label', null, 'Filter ', filter),
        h('table', { class: 'list' }, h('thead', null, h('tr', null, ['Time', 'Name', 'Source', 'Reached'].map((c) => h('th', { scope: 'col' }, c)))), events)),
      h('section', null, h('h2', null, 'Requests'),
        h('div', { class: 'bar' }, h('label', null, 'Filter ', requestFilter), h('label', null, showOwn, ' admin and console')),
        h('div', { class: 'scroll' }, h('table', { class: 'list' }, h('thead', null, h('tr', null, ['Time', 'Method', 'Path', 'Channel', 'Status', 'ms', 'Request id'].map((c) => h('th', { scope: 'col' }, c)))), requests)))),
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
  // Whether a row shows under the filters as they are now.
  const shows = (row) => {
    if (row.dataset.name !== undefined) return matches(filter.value.trim(), row.dataset.name);
    const needle = requestFilter.value.trim().toLowerCase();
    return (showOwn.checked || row.dataset.own !== 'true')
      && (!needle || row.textContent.toLowerCase().includes(needle));
  };
  const refilter = (tbody) => { for (const row of tbody.children) row.hidden = !shows(row); };
  filter.addEventListener('input', () => refilter(events));
  requestFilter.addEventListener('input', () => refilter(requests));
  showOwn.addEventListener('change', () => refilter(requests));
  function add(tbody, row) {
    row.hidden = !shows(row);
    tbody.prepend(row);
    while (tbody.children.length > MAX_ROWS) tbody.lastChild.remove();
  }
  await loadConns();
  const timer = setInterval(loadConns, 2000);
  const stop = listen((m) => {
    const t = new Date().toLocaleTimeString();
    let row = null;
    let tbody = null;
    if (m.type === 'event') {
      tbody = events;
      row = h('tr', { 'data-name': m.name }, h('td', null, t), h('td', null, m.name), h('td', null, m.source), h('td', null, String(m.reached)));
    } else if (m.type === 'request') {
      tbody = requests;
      row = h('tr', { 'data-own': String(own(m.path)), class: m.status >= 500 ? 'refused' : null },
        h('td', null, t), h('td', null, m.method || ''), h('td', { class: 'path' }, m.path || ''),
        h('td', null, m.channel || '—'), h('td', null, String(m.status)),
        h('td', null, String(m.duration_ms)), h('td', null, h('code', { title: m.request_id }, (m.request_id || '').slice(0, 8))));
    }
    if (!row) return;
    if (paused) held.push([tbody, row]);
    else add(tbody, row);
  });
  return () => { clearInterval(timer); stop(); };
}
