// Overview: health, jobs by state per queue, events.
import { h, append } from './dom.js';
import { api } from './api.js';
import { sparkline } from './chart.js';

// In cluster mode the overview and the queues are those of every node alive.
export async function overviewPage(main) {
  const [health, { queues }, history] = await Promise.all([
    fetch('/healthz').then((r) => r.json()),
    api('GET', '/admin/queues'),
    api('GET', '/admin/overview'),
  ]);
  const totals = history.totals || {};
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  append(main, [
    h('h1', null, 'Overview'),
    h('dl', { class: 'kv', id: 'health' },
      h('dt', null, 'health'), h('dd', null, health.status),
      h('dt', null, 'events published'), h('dd', null, String(totals.events_published || 0)),
      h('dt', null, 'events delivered'), h('dd', null, String(totals.events_delivered || 0)),
      h('dt', null, 'events queued'), h('dd', null, String(totals.events_queued || 0)),
      h('dt', null, 'open websockets'), h('dd', null, String(totals.open_websockets || 0))),
    h('h2', null, 'Channels over the last hour (a point a minute)'),
    h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'charts' },
      h('thead', null, h('tr', null, ['Channel', 'Requests', 'Errors (5xx)', 'p99 (ms)'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, Object.entries(history.channels).map(([code, c]) => h('tr', { 'data-code': code },
        h('th', { scope: 'row' }, code),
        h('td', null, sparkline(c.requests, `${code} requests`), h('div', { class: 'muted' }, `${sum(c.requests)} in the hour`)),
        h('td', null, sparkline(c.errors, `${code} errors`), h('div', { class: 'muted' }, `${sum(c.errors)} in the hour`)),
        h('td', null, sparkline(c.p99_ms, `${code} p99`), h('div', { class: 'muted' }, `max ${Math.max(...c.p99_ms)} ms`))))))),
    h('h2', null, 'Jobs by queue and state'),
    h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'queues' },
      h('thead', null, h('tr', null, ['Queue', 'Channels', 'Jobs'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, queues.map((q) => h('tr', null, h('td', null, q.name), h('td', null, q.channels.join(', ')),
        h('td', null, Object.entries(q.jobs).map(([s, n]) => `${s}: ${n}`).join(' · ') || '—')))))),
  ]);
}
