// Job processing: a queue selector upper left, a state filter, the jobs
// newest first, a job card with its attempts, Retry; live without a reload.
import { h, append, clear, when, json, toast, dialog, patchRows } from './dom.js';
import { api, listen } from './api.js';

const STATES = ['', 'queued', 'running', 'waiting', 'succeeded', 'failed', 'timed_out'];

// A job whose error stands (shown red); a succeeded job's old error does not.
const failedState = (state) => state === 'failed' || state === 'timed_out';

// The queue selector's options: all queues, then each queue with its channels.
function queueOptions(queues) {
  return [h('option', { value: '' }, 'All queues'),
    ...queues.map((q) => h('option', { value: q.name }, `${q.name} (${q.channels.join(', ')})`))];
}

export async function jobsPage(main, ctx) {
  const { queues } = await api('GET', '/admin/queues');
  const queue = h('select', { id: 'queue', 'aria-label': 'Queue' }, queueOptions(queues));
  // Channels come and go while the page is open (here or on another node):
  // the queue list follows them, keeping the queue chosen.
  let shownQueues = JSON.stringify(queues.map((q) => [q.name, q.channels]));
  async function refreshQueues() {
    let fresh;
    try { ({ queues: fresh } = await api('GET', '/admin/queues')); } catch { return; }
    const text = JSON.stringify(fresh.map((q) => [q.name, q.channels]));
    if (text === shownQueues) return;
    shownQueues = text;
    const chosen = queue.value;
    clear(queue);
    append(queue, queueOptions(fresh));
    queue.value = fresh.some((q) => q.name === chosen) ? chosen : '';
    if (queue.value !== chosen) { page = 0; load(); }
  }
  const queuesTimer = setInterval(refreshQueues, 3000);
  const state = h('select', { id: 'state', 'aria-label': 'State' }, STATES.map((s) => h('option', { value: s }, s || 'Any state')));
  const body = h('tbody');
  const card = h('section', { class: 'detail', id: 'job-card', 'aria-label': 'Job' });
  let open = ctx.args[0] || null;
  const PAGE = 100;
  let page = 0;
  const pageInfo = h('span', { id: 'page' });
  const prev = h('button', { type: 'button', id: 'prev-page', onclick: () => { page = Math.max(0, page - 1); load(); } }, 'Newer');
  const next = h('button', { type: 'button', id: 'next-page', onclick: () => { page += 1; load(); } }, 'Older');
  append(main, [
    h('div', { class: 'bar' }, queue, state, h('h1', null, 'Jobs'),
      ctx.admin && h('button', { type: 'button', id: 'bulk-retry', onclick: bulkRetry }, 'Retry failed…'),
      h('span', { class: 'live', title: 'Updates live' }, '● live')),
    h('div', { class: 'with-panel' },
      h('div', { class: 'listing' },
        h('div', { class: 'scroll' }, h('table', { class: 'list', id: 'jobs' },
          h('thead', null, h('tr', null, ['Job', 'Channel', 'Kind', 'State', 'Attempts', 'Created', 'Next attempt', 'Last error'].map((c) => h('th', { scope: 'col' }, c)))),
          body)),
        h('div', { class: 'buttons' }, prev, pageInfo, next)),
      card),
  ]);

  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE + 1), offset: String(page * PAGE) });
    if (queue.value) q.set('queue', queue.value);
    if (state.value) q.set('state', state.value);
    const { jobs: fetched } = await api('GET', `/admin/jobs?${q}`);
    const more = fetched.length > PAGE;
    const jobs = fetched.slice(0, PAGE);
    prev.disabled = page === 0;
    next.disabled = !more;
    pageInfo.textContent = `page ${page + 1}`;
    // Row by row: a live update keeps the focus, selection and scroll of
    // the rows that did not change (a keyboard user can go on).
    const rows = jobs.map((j) => ({
      key: j.id,
      sig: JSON.stringify([j.state, j.attempt, j.max_attempts, j.next_attempt_at, j.last_error, j.test, j.id === open]),
      make: () => h('tr', { 'data-id': j.id, class: j.id === open ? 'open' : null },
        h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', 'data-focus': `open-${j.id}`, 'aria-controls': 'job-card',
          onclick: () => { open = j.id; showCard(true); markOpen(); } }, j.id.slice(0, 8)),
        j.test ? [' ', h('span', { class: 'pill mode test' }, 'test')] : null),
        h('td', null, j.channel), h('td', null, j.kind),
        h('td', null, h('span', { class: `pill ${j.state}` }, j.state)),
        h('td', { class: 'attempts' }, `${j.attempt}/${j.max_attempts}`),
        h('td', null, when(j.created)), h('td', null, when(j.next_attempt_at)),
        // An error is red while it stands: not once the job succeeded after it.
        h('td', { class: failedState(j.state) ? 'error-text' : 'muted' }, j.last_error || '')),
    }));
    if (!jobs.length) rows.push({ key: 'none', sig: '', make: () => h('tr', null, h('td', { colspan: 8 }, 'No jobs.')) });
    patchRows(body, rows);
    if (open) await showCard(false);
  }

  function markOpen() {
    for (const r of body.querySelectorAll('tr[data-id]')) r.classList.toggle('open', r.dataset.id === open);
  }

  // The card beside the list (below it on a narrow screen). Opened by the
  // user: focus moves to it (and it is scrolled into view); a live update
  // draws it again only when the job changed, keeping the focus inside it.
  let shown = null;
  async function showCard(byUser) {
    const j = await api('GET', `/admin/jobs/${encodeURIComponent(open)}`);
    const sig = JSON.stringify(j);
    if (!byUser && sig === shown) return;
    shown = sig;
    const held = card.contains(document.activeElement) ? document.activeElement.id : null;
    // The calls opened stay open when the same job is drawn again.
    const opened = j.id === card.dataset.job
      ? [...card.querySelectorAll('details.call')].map((d) => d.open) : [];
    card.dataset.job = j.id;
    clear(card);
    append(card, [
      h('h2', { tabindex: '-1', id: 'card-title' }, `Job ${j.id}`),
      h('dl', { class: 'kv' },
        h('dt', null, 'channel'), h('dd', null, `${j.channel} (queue ${j.queue})`),
        h('dt', null, 'state'), h('dd', { id: 'card-state' }, j.state),
        h('dt', null, 'attempts'), h('dd', { id: 'card-attempts' }, `${j.attempt}/${j.max_attempts}`),
        h('dt', null, 'next attempt'), h('dd', null, when(j.next_attempt_at)),
        h('dt', null, 'tags'), h('dd', null, (j.tags || []).join(', ') || '—'),
        h('dt', null, 'mode'), h('dd', { id: 'card-mode' }, j.test ? h('span', { class: 'pill mode test' }, 'test') : 'production'),
        h('dt', null, failedState(j.state) ? 'last error' : 'an earlier attempt failed'),
        h('dd', { id: 'card-error', class: failedState(j.state) ? 'error-text' : 'muted' }, j.last_error || '—')),
      ctx.admin && (j.state === 'failed' || j.state === 'timed_out') &&
        h('button', { type: 'button', id: 'retry', onclick: async () => {
          await api('POST', `/admin/jobs/${encodeURIComponent(j.id)}/retry`);
          toast('Retry queued');
        } }, 'Retry'),
      h('h3', null, 'Input'),
      h('pre', { id: 'card-input' }, j.input === null || j.input === undefined
        ? (j.state === 'succeeded' ? '— (not kept once the job succeeded)' : '—') : json(j.input)),
      errorGroups(j.attempts || []),
      h('h3', null, 'Attempts'),
      h('ol', { class: 'timeline', id: 'attempts' }, (j.attempts || []).map(attemptItem)),
      h('h3', null, 'Result'), h('pre', null, j.result === null || j.result === undefined ? '—' : json(j.result)),
    ]);
    card.querySelectorAll('details.call').forEach((d, i) => { if (opened[i]) d.open = true; });
    if (byUser) {
      const title = card.querySelector('#card-title');
      title.focus({ preventScroll: true });
      card.scrollIntoView({ block: 'nearest' });
    } else if (held) {
      const again = card.querySelector(`#${CSS.escape(held)}`) || card.querySelector('#card-title');
      again.focus({ preventScroll: true });
    }
  }

  // The same error over several attempts is said once, with the attempts it ended.
  function errorGroups(attempts) {
    const groups = new Map();
    for (const a of attempts) {
      if (!a.error) continue;
      if (!groups.has(a.error)) groups.set(a.error, []);
      groups.get(a.error).push(a.attempt);
    }
    if (!groups.size) return null;
    return [h('h3', null, 'Errors'), h('ul', { id: 'card-errors', class: 'errors' },
      [...groups].map(([error, ns]) => h('li', null,
        h('span', { class: 'pill failed' }, `×${ns.length}`), ' ',
        h('span', { class: 'error-text' }, error),
        h('span', { class: 'muted' }, ` — attempt${ns.length === 1 ? '' : 's'} ${ns.join(', ')}`))))];
  }

  // One attempt: when, how long, how it ended; each outbound call with its
  // request and response (credentials shown as ***), and the script's log lines.
  function attemptItem(a) {
    const headers = (hs) => h('dl', { class: 'kv' }, Object.entries(hs || {}).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
    const calls = (a.calls || []).map((c) => h('details', { class: 'call' },
      h('summary', null, `${c.method} ${c.url} → `,
        c.response ? h('span', { class: c.response.status >= 400 ? 'error-text' : null }, String(c.response.status)) : h('span', { class: 'error-text' }, 'no answer'),
        ` · ${c.duration_ms} ms`),
      h('h4', null, 'Request'), headers(c.request && c.request.headers),
      c.request && c.request.body !== undefined ? h('pre', null, c.request.body) : null,
      h('h4', null, 'Response'),
      c.response ? [h('p', null, `status ${c.response.status}`), headers(c.response.headers), h('pre', null, c.response.body || '')]
        : h('p', { class: 'error-text' }, c.error || '')));
    const logs = (a.logs || []).length ? h('ol', { class: 'logs' }, a.logs.map((l) =>
      h('li', { class: `log ${l.level}` }, h('span', { class: 'muted' }, `${when(l.at)} ${l.level} `), l.text))) : null;
    const more = [a.more_calls ? `${a.more_calls} more call${a.more_calls === 1 ? '' : 's'} not kept` : null,
      a.more_logs ? `${a.more_logs} more log line${a.more_logs === 1 ? '' : 's'} not kept` : null,
      a.trail_left_out ? 'its calls and log lines were left out of the shared record (it grew too large)' : null].filter(Boolean);
    return h('li', { class: a.outcome, 'data-attempt': a.attempt },
      `#${a.attempt} · ${when(a.started)} · ${a.duration_ms} ms · ${a.outcome}`,
      a.node ? h('span', { class: 'muted' }, ` · on ${a.node}`) : null,
      a.error ? h('div', { class: 'error-text' }, a.error) : null,
      calls, logs, more.length ? h('p', { class: 'muted' }, more.join(' · ')) : null);
  }

  // Bulk retry (POST /admin/jobs/retry): the failed jobs of the queue (and
  // state) chosen, narrowed by error text; the count is shown before anything runs.
  async function bulkRetry() {
    const filters = (dryRun) => {
      const f = { dry_run: dryRun };
      if (queue.value) f.queue = queue.value;
      if (state.value === 'failed' || state.value === 'timed_out') f.state = state.value;
      if (errorText.value.trim()) f.error = errorText.value.trim();
      if (since.value) f.since = new Date(Date.now() - Number(since.value) * 3600000).toISOString();
      return f;
    };
    const errorText = h('input', { id: 'bulk-error', 'aria-label': 'Last error contains', placeholder: 'e.g. 503' });
    // The time range: jobs made in the last hours chosen (the API's `since`).
    const since = h('select', { id: 'bulk-since', 'aria-label': 'Made within' },
      [['', 'any time'], ['1', 'the last hour'], ['24', 'the last 24 hours'], ['168', 'the last 7 days']]
        .map(([v, t]) => h('option', { value: v }, t)));
    since.addEventListener('change', preview);
    const count = h('p', { id: 'bulk-count', role: 'status' }, '…');
    let matched = 0;
    async function preview() {
      try {
        ({ matched } = await api('POST', '/admin/jobs/retry', filters(true)));
        count.textContent = `${matched} job${matched === 1 ? '' : 's'} will be retried`;
      } catch (e) {
        count.textContent = e.message;
      }
    }
    let timer = null;
    errorText.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(preview, 250); });
    await preview();
    const where = queue.value ? `queue ${queue.value}` : 'every queue';
    const go = await dialog(`Retry failed jobs of ${where}?`,
      [h('label', null, 'Last error contains ', errorText), h('label', null, 'Made within ', since), count],
      [{ label: 'Cancel', value: () => false }, { label: 'Retry them', class: 'danger', value: () => true }]);
    if (!go) return;
    try {
      const r = await api('POST', '/admin/jobs/retry', filters(false));
      toast(`${r.retried} job${r.retried === 1 ? '' : 's'} retried`);
      await load();
    } catch (e) {
      toast(`Not retried: ${e.message}`, 'bad');
    }
  }

  // Opened from the overview's counts: that queue and state.
  const wanted = ctx.query || new URLSearchParams();
  if (wanted.get('queue') && queues.some((q) => q.name === wanted.get('queue'))) queue.value = wanted.get('queue');
  if (wanted.get('state') && STATES.includes(wanted.get('state'))) state.value = wanted.get('state');
  queue.addEventListener('change', () => { page = 0; load(); });
  state.addEventListener('change', () => { page = 0; load(); });
  await load();
  let pending = null;
  const unlisten = listen((m) => {
    if (m.type !== 'job' || pending) return;
    pending = setTimeout(() => { pending = null; load(); }, 200);
  });
  return () => { clearInterval(queuesTimer); unlisten(); };
}
