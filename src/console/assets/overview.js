// Overview: jobs per queue first (each count opens those jobs), health,
// and each channel's last hour; live: it follows the activity stream and
// polls every 5 s, updating the numbers in place (scroll and focus stay).
import { h, append, clear } from './dom.js';
import { api, listen } from './api.js';
import { sparkline } from './chart.js';

const STATES = ['queued', 'running', 'waiting', 'failed', 'timed_out', 'succeeded'];
const BAD = new Set(['failed', 'timed_out']);

// In cluster mode the overview and the queues are those of every node alive.
export async function overviewPage(main) {
  const queuesBody = h('tbody');
  const health = h('dl', { class: 'kv', id: 'health' });
  const charts = h('div', { class: 'charts', id: 'charts' });
  const updated = h('span', { class: 'live', id: 'overview-updated', title: 'Updates live' }, '● live');
  append(main, [
    h('div', { class: 'bar' }, h('h1', null, 'Overview'), updated),
    h('h2', null, 'Jobs by queue'),
    h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'queues' },
      h('thead', null, h('tr', null, ['Queue', ...STATES, 'Channels'].map((c) => h('th', { scope: 'col' }, c)))),
      queuesBody)),
    health,
    h('h2', null, 'Channels over the last hour (a point a minute)'),
    charts,
  ]);
  const sum = (a) => a.reduce((x, y) => x + y, 0);

  function renderQueues(queues) {
    clear(queuesBody);
    if (!queues.length) append(queuesBody, h('tr', null, h('td', { colspan: STATES.length + 2 }, 'No queues yet.')));
    for (const q of queues) {
      append(queuesBody, h('tr', { 'data-queue': q.name },
        h('th', { scope: 'row' }, h('a', { href: `#/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
        STATES.map((s) => {
          const n = (q.jobs || {})[s] || 0;
          return h('td', { class: n && BAD.has(s) ? 'error-text count' : 'count', 'data-state': s },
            n ? h('a', { href: `#/jobs?queue=${encodeURIComponent(q.name)}&state=${s}`, class: n && BAD.has(s) ? 'error-text' : null }, String(n)) : '0');
        }),
        h('td', null, q.channels.join(', '))));
    }
  }

  function renderHealth(status, totals) {
    clear(health);
    append(health, [
      h('dt', null, 'health'), h('dd', { class: status === 'ok' ? null : 'error-text' }, status),
      h('dt', null, 'events published'), h('dd', null, String(totals.events_published || 0)),
      h('dt', null, 'events delivered'), h('dd', null, String(totals.events_delivered || 0)),
      h('dt', null, 'events queued'), h('dd', null, String(totals.events_queued || 0)),
      h('dt', null, 'open websockets'), h('dd', null, String(totals.open_websockets || 0)),
    ]);
  }

  // One card a channel; its charts scale to the card (readable on a phone).
  function renderCharts(channels) {
    clear(charts);
    const entries = Object.entries(channels || {});
    if (!entries.length) append(charts, h('p', { class: 'muted' }, 'No traffic in the last hour.'));
    for (const [code, c] of entries) {
      const errors = sum(c.errors);
      append(charts, h('section', { class: 'chart-card', 'data-code': code, 'aria-label': `Channel ${code}` },
        h('h3', null, h('a', { href: `#/channels/${encodeURIComponent(code)}` }, code)),
        h('figure', null, sparkline(c.requests, `${code} requests`), h('figcaption', { class: 'muted' }, `${sum(c.requests)} requests in the hour`)),
        h('figure', { class: errors ? 'bad' : null }, sparkline(c.errors, `${code} errors`),
          h('figcaption', { class: errors ? 'error-text' : 'muted' }, `${errors} errors (5xx)`)),
        h('figure', null, sparkline(c.p99_ms, `${code} p99`), h('figcaption', { class: 'muted' }, `p99 up to ${Math.max(0, ...c.p99_ms)} ms`))));
    }
  }

  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [status, { queues }, history] = await Promise.all([
        fetch('/healthz').then((r) => r.json()).then((b) => b.status, () => 'unreachable'),
        api('GET', '/admin/queues'),
        api('GET', '/admin/overview'),
      ]);
      renderQueues(queues);
      renderHealth(status, history.totals || {});
      renderCharts(history.channels);
      updated.title = `Updated ${new Date().toLocaleTimeString()}`;
    } finally {
      busy = false;
    }
  }
  await refresh();
  const timer = setInterval(() => { refresh().catch(() => {}); }, 5000);
  let pending = null;
  const unlisten = listen((m) => {
    if (m.type !== 'job' || pending) return;
    pending = setTimeout(() => { pending = null; refresh().catch(() => {}); }, 300);
  });
  return () => { clearInterval(timer); clearTimeout(pending); unlisten(); };
}
