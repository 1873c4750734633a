// History of a channel or a script (SPEC §19): its versions, a side-by-side
// diff of any two, and Restore behind a confirmation that names the version.
// A viewer sees all of it and restores nothing.
import { h, append, clear, when, dialog, toast } from './dom.js';
import { api } from './api.js';

// The unified diff of the API as two columns: removed lines on the left,
// added on the right, context on both.
function sideBySide(diff) {
  const body = h('tbody');
  let left = [];
  let right = [];
  let ln = 0;
  let rn = 0;
  const row = (l, r, cls) => append(body, h('tr', { class: cls },
    h('td', { class: 'n' }, l ? String(l[0]) : ''), h('td', { class: l ? (cls || 'del') : 'empty' }, l ? l[1] : ''),
    h('td', { class: 'n' }, r ? String(r[0]) : ''), h('td', { class: r ? (cls || 'add') : 'empty' }, r ? r[1] : '')));
  const flush = () => {
    for (let i = 0; i < Math.max(left.length, right.length); i++) row(left[i], right[i], null);
    left = [];
    right = [];
  };
  for (const line of diff.split('\n')) {
    if (line.startsWith('---') || line.startsWith('+++')) continue;
    const hunk = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(line);
    if (hunk) {
      flush();
      ln = Number(hunk[1]);
      rn = Number(hunk[2]);
      append(body, h('tr', { class: 'hunk' }, h('td', { colspan: 4 }, line)));
    } else if (line.startsWith('-')) left.push([ln++, line.slice(1)]);
    else if (line.startsWith('+')) right.push([rn++, line.slice(1)]);
    else if (line.startsWith(' ')) { flush(); row([ln++, line.slice(1)], [rn++, line.slice(1)], 'same'); }
  }
  flush();
  if (!body.firstChild) append(body, h('tr', null, h('td', { colspan: 4 }, 'The two versions are the same.')));
  return h('table', { class: 'diff', id: 'diff' },
    h('caption', { class: 'muted' }, 'Left: the older version (removed lines); right: the newer (added lines).'),
    h('colgroup', null, h('col', { class: 'n' }), h('col'), h('col', { class: 'n' }), h('col')), body);
}

// `kind`: 'channels' or 'scripts'. `onRestored` runs after a restore.
export async function historyPanel(kind, code, ctx, onRestored) {
  const panel = h('div', { class: 'history', id: 'history' });
  const base = `/admin/${kind}/${encodeURIComponent(code)}`;

  async function render() {
    clear(panel);
    let versions;
    try {
      ({ versions } = await api('GET', `${base}/versions`));
    } catch (e) {
      append(panel, h('p', { class: 'error' }, `No history: ${e.message}`));
      return;
    }
    const numbers = versions.map((v) => v.number);
    const pick = (id, label, selected) => h('label', null, `${label} `,
      h('select', { id, 'aria-label': `${label} version` },
        versions.map((v) => h('option', { value: v.number, selected: v.number === selected || null },
          `${v.number} · ${v.kind} · ${when(v.at)}`))));
    const from = pick('diff-from', 'From', numbers[1] ?? numbers[0]);
    const to = pick('diff-to', 'To', numbers[0]);
    const out = h('div', { class: 'scroll', id: 'diff-out', 'aria-live': 'polite' });
    async function compare() {
      clear(out);
      const a = from.querySelector('select').value;
      const b = to.querySelector('select').value;
      try {
        const { diff } = await api('GET', `${base}/diff?from=${a}&to=${b}`);
        append(out, h('div', { class: 'scroll' }, sideBySide(diff)));
      } catch (e) {
        append(out, h('p', { class: 'error' }, e.message));
      }
    }
    const table = h('table', { class: 'list', id: 'versions' },
      h('thead', null, h('tr', null, ['Version', 'When', 'Kind', 'By', 'SHA-256', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, versions.map((v, i) => h('tr', { 'data-version': v.number },
        h('th', { scope: 'row' }, String(v.number), i === 0 ? h('span', { class: 'muted' }, ' current') : ''),
        h('td', null, when(v.at)),
        h('td', null, h('span', { class: `pill ${v.kind}` }, v.kind)),
        h('td', null, v.by.by, v.by.address ? h('span', { class: 'muted' }, ` from ${v.by.address}`) : ''),
        h('td', null, h('code', { title: v.sha256 }, v.sha256.slice(0, 12))),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'link', onclick: () => {
            from.querySelector('select').value = String(v.number);
            to.querySelector('select').value = String(numbers[0]);
            compare();
          } }, 'Compare with current'),
          ctx.admin && i > 0 && v.kind !== 'deleted' && h('button', {
            type: 'button', class: 'restore', 'data-version': v.number, onclick: () => restore(v),
          }, `Restore ${v.number}`))))));
    append(panel, [
      // Its own scroll box: on a phone the table scrolls, not the page.
      h('div', { class: 'scroll' }, table),
      h('div', { class: 'bar' }, from, to,
        h('button', { type: 'button', id: 'compare', onclick: compare }, 'Compare')),
      out,
    ]);
    if (versions.length > 1) await compare();
  }

  async function restore(v) {
    const ok = await dialog(`Restore version ${v.number} of ${code}?`,
      h('p', null, `Version ${v.number} (${v.kind} ${when(v.at)} by ${v.by.by}) becomes the current one, as a new version; every node loads it.`),
      [{ label: 'Cancel', value: () => false }, { label: `Restore version ${v.number}`, class: 'danger', value: () => true }]);
    if (!ok) return;
    try {
      await api('POST', `${base}/restore`, { version: v.number });
      toast(`${code}: version ${v.number} restored`);
      await render();
      if (onRestored) await onRestored();
    } catch (e) {
      toast(`Not restored: ${e.message}`, 'bad');
    }
  }

  await render();
  return panel;
}
