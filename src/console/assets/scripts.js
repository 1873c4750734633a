// Scripts: the list, an editor with line numbers that marks compile errors
// as you type (POST /admin/check, nothing saved), Save, Try and Replay.
import { h, append, clear, json, toast, tabs } from './dom.js';
import { historyPanel } from './history.js';
import { colour } from './rhai.js';
import { api } from './api.js';

const INDENT = '    ';

// The top-level keys whose values differ between two answers (and, within
// `body`, the body's keys), for highlighting a replay's changes.
function changedKeys(a, b) {
  const keys = new Set();
  const walk = (x, y, prefix) => {
    const obj = (v) => v && typeof v === 'object' && !Array.isArray(v);
    if (!obj(x) || !obj(y)) return;
    for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) {
      if (JSON.stringify(x[k]) === JSON.stringify(y[k])) continue;
      if (prefix === '' && obj(x[k]) && obj(y[k])) walk(x[k], y[k], `${k}.`);
      else keys.add(`${prefix}${k}`);
    }
  };
  walk(a, b, '');
  return keys;
}

// An answer as JSON, each line of a changed key marked (`ins` or `del`).
function markChanged(value, keys, tag) {
  const lines = json(value).split('\n');
  const path = [];
  return lines.map((line) => {
    const m = /^(\s*)"([^"]+)":/.exec(line);
    let hit = false;
    if (m) {
      const depth = m[1].length / 2;
      path.length = depth - 1;
      path[depth - 1] = m[2];
      hit = keys.has(path.slice(0, depth).join('.'));
    }
    return [hit ? h(tag, null, line) : line, '\n'];
  });
}

// Tab indents (each selected line with a selection), Shift+Tab outdents;
// after Escape the next Tab leaves the editor, as it does everywhere else.
function tabIndents(area, changed) {
  let leave = false;
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { leave = true; return; }
    if (e.key !== 'Tab' || leave || area.readOnly) { leave = false; return; }
    e.preventDefault();
    const { selectionStart: start, selectionEnd: end, value } = area;
    const first = value.lastIndexOf('\n', start - 1) + 1;
    if (!e.shiftKey && start === end) {
      area.setRangeText(INDENT, start, end, 'end');
    } else {
      const block = value.slice(first, end);
      const lines = block.split('\n');
      const out = e.shiftKey
        ? lines.map((l) => l.replace(/^ {1,4}|^\t/, ''))
        : lines.map((l) => INDENT + l);
      area.setRangeText(out.join('\n'), first, end, 'select');
    }
    changed();
  });
}

export async function scriptsPage(main, ctx) {
  const { scripts } = await api('GET', '/admin/scripts');
  const list = h('ul', { class: 'side', id: 'script-list' },
    scripts.map((s) => h('li', null, h('a', {
      href: `#/scripts/${encodeURIComponent(s.code)}`,
      'aria-current': s.code === ctx.args[0] ? 'page' : null,
    }, s.code, s.status && s.status.ok === false ? ' ✗' : ''))));
  const pane = h('section', { class: 'editor-pane' });
  append(main, [h('h1', null, 'Scripts'), h('div', { class: 'split' }, list, pane)]);
  if (!ctx.args[0]) {
    append(pane, h('p', null, 'Pick a script.'));
    return;
  }
  const code = ctx.args[0];
  const info = scripts.find((s) => s.code === code) || { used_by: [] };
  const source = await api('GET', `/admin/scripts/${encodeURIComponent(code)}`);
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const area = h('textarea', { class: 'code', id: 'editor', spellcheck: 'false', 'aria-label': `Source of ${code}`, readonly: !ctx.admin }, source);
  // The coloured copy of the source under the (transparent) text of the textarea.
  const painted = h('pre', { class: 'code painted', id: 'painted', 'aria-hidden': 'true' });
  const problems = h('ul', { class: 'problems', id: 'problems', role: 'status' });
  let marked = new Set();
  // What the server holds: the marker says when the editor differs from it.
  let saved = source;
  const unsaved = h('span', { id: 'unsaved', class: 'unsaved', role: 'status', hidden: true }, '● unsaved changes');
  function dirty() {
    unsaved.hidden = area.value === saved;
  }

  function numbers() {
    const n = area.value.split('\n').length;
    clear(gutter);
    for (let i = 1; i <= n; i++) append(gutter, h('div', { class: marked.has(i) ? 'bad' : null }, String(i)));
    gutter.scrollTop = area.scrollTop;
    paint();
  }
  function paint() {
    clear(painted);
    // The trailing newline keeps the last line's height when it is empty.
    append(painted, [colour(area.value), '\n']);
    painted.scrollTop = area.scrollTop;
    painted.scrollLeft = area.scrollLeft;
  }
  area.addEventListener('scroll', () => {
    gutter.scrollTop = area.scrollTop;
    painted.scrollTop = area.scrollTop;
    painted.scrollLeft = area.scrollLeft;
  });

  let timer = null;
  async function check() {
    const r = await api('POST', '/admin/check', area.value, true);
    marked = new Set(r.errors.map((e) => e.line));
    clear(problems);
    if (r.ok) append(problems, h('li', { class: 'ok' }, 'Compiles; every function it calls exists.'));
    for (const e of r.errors) {
      append(problems, h('li', { class: 'bad' },
        h('button', { type: 'button', class: 'link', onclick: () => goTo(e.line, e.col) }, `line ${e.line}, col ${e.col}`),
        `: ${e.message}`));
    }
    numbers();
  }
  function goTo(line, col) {
    const lines = area.value.split('\n');
    let at = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) at += lines[i].length + 1;
    area.focus();
    area.setSelectionRange(at + col - 1, at + col - 1);
  }
  function edited() {
    numbers();
    dirty();
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  }
  area.addEventListener('input', edited);
  tabIndents(area, edited);

  // Try: a request form or a recorded request; Replay: the draft over the recordings.
  const channel = h('select', { id: 'try-channel', 'aria-label': 'Channel' },
    info.used_by.map((c) => h('option', { value: c }, c)));
  const method = h('select', { id: 'try-method', 'aria-label': 'Method' }, ['GET', 'POST', 'PUT', 'DELETE'].map((m) => h('option', null, m)));
  const path = h('input', { id: 'try-path', 'aria-label': 'Path after /api', placeholder: '/orders/1001' });
  const query = h('input', { id: 'try-query', 'aria-label': 'Query', placeholder: 'status=open' });
  const body = h('textarea', { id: 'try-body', rows: 3, 'aria-label': 'Body' });
  const record = h('select', { id: 'try-record', 'aria-label': 'Recorded request' }, h('option', { value: '' }, 'a new request (below)'));
  const out = h('div', { id: 'try-out', class: 'out' });

  async function loadRecords() {
    clear(record);
    append(record, h('option', { value: '' }, 'a new request (below)'));
    if (!channel.value) return;
    const { requests } = await api('GET', `/admin/channels/${encodeURIComponent(channel.value)}/requests?limit=50`);
    for (const r of requests) {
      append(record, h('option', { value: r.id }, `${r.ts} ${r.kind} ${r.method} ${r.path}${r.query ? `?${r.query}` : ''} → ${r.answer.status ?? (r.answer.success ? 'ok' : 'fail')}`));
    }
  }
  channel.addEventListener('change', loadRecords);

  async function tryIt() {
    const req = record.value
      ? { record: record.value }
      : { request: { method: method.value, path: path.value, query: query.value, body: body.value } };
    req.script = area.value;
    clear(out);
    try {
      const r = await api('POST', `/admin/channels/${encodeURIComponent(channel.value)}/try`, req);
      append(out, [
        h('h3', null, `Answer (${r.duration_ms} ms, ${r.operations} operations)`), h('pre', { id: 'try-answer' }, json(r.answer)),
        h('h3', null, 'Logs'), h('pre', { id: 'try-logs' }, r.logs.map((l) => `${l.level}: ${l.message}`).join('\n') || '—'),
        h('h3', null, 'Effects (not done: a dry run changes nothing)'), h('pre', { id: 'try-effects' }, r.effects.length ? json(r.effects) : '—'),
      ]);
    } catch (e) {
      append(out, h('p', { class: 'error' }, e.data && e.data.line ? `line ${e.data.line}, col ${e.data.col}: ${e.message}` : e.message));
    }
  }

  async function replay() {
    clear(out);
    try {
      const r = await api('POST', `/admin/channels/${encodeURIComponent(channel.value)}/replay`, { script: area.value, limit: 50 });
      append(out, h('h3', { id: 'replay-summary' }, `${r.changed} of ${r.results.length} answers change`));
      for (const x of r.results.filter((x) => !x.same)) {
        const q = x.request || {};
        const asked = q.kind === 'ws' ? `frame ${q.body || ''}` : `${q.method || ''} ${q.path || ''}${q.query ? `?${q.query}` : ''}`;
        const differ = changedKeys(x.before, x.after);
        append(out, h('div', { class: 'replayed' },
          h('p', { class: 'request' }, h('strong', null, 'Request '), h('code', null, asked),
            q.body && q.kind !== 'ws' ? h('pre', null, q.body) : null),
          h('div', { class: 'sidebyside changed' },
            h('div', null, h('h4', null, `Before (${x.request_id})`), h('pre', null, markChanged(x.before, differ, 'del'))),
            h('div', null, h('h4', null, 'After'), h('pre', null, markChanged(x.after, differ, 'ins'))))));
      }
    } catch (e) {
      append(out, h('p', { class: 'error' }, e.message));
    }
  }

  const save = ctx.admin && h('button', { type: 'button', id: 'save-script', onclick: async () => {
        try {
          const text = area.value;
          const r = await api('PUT', `/admin/scripts/${encodeURIComponent(code)}`, text, true);
          saved = text;
          dirty();
          toast('Saved');
          const w = (r.status && r.status.warnings) || [];
          for (const x of w) toast(`line ${x.line}: ${x.message}`);
        } catch (e) {
          toast(e.data && e.data.line ? `Not saved: line ${e.data.line}, col ${e.data.col}: ${e.message}` : `Not saved: ${e.message}`, 'bad');
          await check();
        }
      } }, 'Save');
  const editor = [
    h('div', { class: 'editor' }, gutter, h('div', { class: 'layers' }, painted, area)),
    problems,
    // Dry runs are for those who may change the script: not offered to a viewer.
    ctx.admin && h('details', { class: 'try', open: true },
      h('summary', null, 'Try and replay (dry runs: nothing is changed)'),
      h('div', { class: 'form' },
        h('label', null, 'Channel ', channel), h('label', null, 'Recorded ', record),
        h('label', null, 'Method ', method), h('label', null, 'Path ', path),
        h('label', null, 'Query ', query), h('label', { class: 'wide' }, 'Body ', body)),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', id: 'try', onclick: tryIt }, 'Try'),
        h('button', { type: 'button', id: 'replay', onclick: replay }, 'Replay recordings')),
      out),
  ];
  const parts = tabs(`Script ${code}`, [
    { id: 'editor-tab', label: 'Editor', render: (p) => append(p, editor) },
    { id: 'history', label: 'History', render: async (p) => append(p, await historyPanel('scripts', code, ctx, async () => {
      area.value = await api('GET', `/admin/scripts/${encodeURIComponent(code)}`);
      saved = area.value;
      dirty();
      numbers();
      await check();
    })) },
  ]);
  // The channels that name it (a change reaches each of them).
  const usedBy = h('p', { id: 'used-by', class: 'muted' }, info.used_by.length
    ? ['Used by ', info.used_by.map((c, i) => [i ? ', ' : '', h('a', { href: `#/channels/${encodeURIComponent(c)}` }, c)])]
    : 'Used by no channel');
  append(pane, [h('div', { class: 'bar' }, h('h2', null, code), unsaved, save), usedBy, parts]);
  await parts.ready;
  numbers();
  await check();
  if (ctx.admin) await loadRecords();
}
