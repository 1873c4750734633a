// Building the page without innerHTML: every value from outside becomes a
// text node, so a channel title or a job error holding markup shows as text.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  const list = Array.isArray(children) ? children.flat(Infinity) : [children];
  for (const c of list) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

export function json(v) {
  return JSON.stringify(v, null, 2);
}

// A small modal dialog; resolves with the value of the pressed button.
export function dialog(title, body, buttons) {
  return new Promise((resolve) => {
    const d = h('dialog', { class: 'dialog', 'aria-label': title });
    // Focus goes back to the control that opened it, however it closes.
    const opener = document.activeElement;
    const back = () => { if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus(); };
    const close = (v) => { d.close(); d.remove(); back(); resolve(v); };
    append(d, [
      h('h2', null, title),
      body,
      h('div', { class: 'buttons' }, buttons.map((b) =>
        h('button', { type: 'button', class: b.class || '', id: b.id || null, onclick: async () => {
          // A button with `act` closes only when its action went through: a
          // refused save keeps the dialog and the user's edits (act says why).
          if (b.act) {
            const done = await b.act(d);
            if (done === undefined || done === false) return;
            close(done);
            return;
          }
          close(b.value(d));
        } }, b.label))),
    ]);
    d.addEventListener('cancel', () => { d.remove(); back(); resolve(null); });
    document.body.append(d);
    d.showModal();
  });
}

export function toast(message, kind) {
  const t = h('div', { class: `toast ${kind || ''}`, role: 'status' }, message);
  document.body.append(t);
  setTimeout(() => t.remove(), 4000);
}

// Tabs: `list` of {id, label, render, shown?} (render(panel) fills the panel
// when the tab is first chosen, shown(panel) runs each time it is chosen);
// `first`: the id of the tab shown first. Arrow keys
// move between tabs, as WAI-ARIA says.
export function tabs(name, list, first) {
  const bar = h('div', { role: 'tablist', 'aria-label': name });
  const panels = h('div');
  const made = new Set();
  const buttons = list.map((t) => h('button', {
    type: 'button', role: 'tab', id: `tab-${t.id}`, 'aria-controls': `panel-${t.id}`,
  }, t.label));
  const boxes = list.map((t) => h('div', { role: 'tabpanel', id: `panel-${t.id}`, 'aria-labelledby': `tab-${t.id}` }));
  async function choose(i, focus) {
    buttons.forEach((b, j) => {
      b.setAttribute('aria-selected', String(i === j));
      b.tabIndex = i === j ? 0 : -1;
      boxes[j].hidden = i !== j;
    });
    if (focus) buttons[i].focus();
    if (!made.has(i)) { made.add(i); await list[i].render(boxes[i]); }
    if (list[i].shown) list[i].shown(boxes[i]);
  }
  buttons.forEach((b, i) => {
    b.addEventListener('click', () => choose(i, false));
    b.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowRight') choose((i + 1) % list.length, true);
      if (e.key === 'ArrowLeft') choose((i + list.length - 1) % list.length, true);
    });
  });
  append(bar, buttons);
  append(panels, boxes);
  const el = h('div', { class: 'tabs' }, bar, panels);
  el.ready = choose(Math.max(0, list.findIndex((t) => t.id === first)), false);
  return el;
}

// Updates a table body row by row: `items` is a list of {key, sig, make}
// (sig: what the row shows; make(): a new row). A row whose sig did not
// change stays the same element, so focus, selection and scroll stay with
// it; a changed row is replaced in place and, when it held the focus, the
// new row's element of the same id (or data-focus) takes it.
export function patchRows(tbody, items) {
  const old = new Map([...tbody.children].filter((r) => r.dataset.key).map((r) => [r.dataset.key, r]));
  const active = document.activeElement;
  items.forEach(({ key, sig, make }, i) => {
    let row = old.get(key);
    if (!row || row.dataset.sig !== sig) {
      const fresh = make();
      fresh.dataset.key = key;
      fresh.dataset.sig = sig;
      if (row) {
        const held = row.contains(active) ? (active.dataset.focus || active.id) : null;
        row.replaceWith(fresh);
        if (held) {
          const again = fresh.querySelector(`[data-focus="${CSS.escape(held)}"]`) || fresh.querySelector(`#${CSS.escape(held)}`);
          if (again) again.focus();
        }
      }
      row = fresh;
    }
    const at = tbody.children[i];
    if (at !== row) tbody.insertBefore(row, at || null);
  });
  // The listed rows now come first: what follows is no longer listed (a
  // row gone from the page, the "No jobs." line once there are jobs).
  while (tbody.children.length > items.length) tbody.lastElementChild.remove();
}
