// A channel's settings as a form: the common fields with a line of help
// each, the whole document as JSON beside it (both edit the same document).
// A save the server refuses keeps the dialog open with the edits and says why.
import { h, append, clear, json, dialog, tabs } from './dom.js';
import { api } from './api.js';

const SCRIPT = 'script';
// [path, label, kind, help]; kind: text, number, check, script, or a list of choices.
const FIELDS = [
  ['code', 'Code', 'text', 'Letters, digits, _ - . (up to 64); the channel answers at /channels/CODE/…', { newOnly: true }],
  ['type', 'Type', ['general', 'events'], 'general: HTTP and websocket traffic to scripts; events: receives system events'],
  ['opts.title', 'Title', 'text', 'Shown in the console'],
  ['url', 'URL', 'text', 'The external system; a webquery path is joined to it (https://erp.example/api/)'],
  ['token_remote', 'Remote token', 'text', 'What scripts send as token_remote(); $secret:NAME keeps it out of the document'],
  ['recv_svcscriptcode', 'HTTP script', SCRIPT, 'Runs for each request to /channels/CODE/api'],
  ['send_svcscriptcode', 'Send script', SCRIPT, 'Runs each send job (POST /channels/CODE/send, channel_send)'],
  ['recv_svcscriptcode_ws', 'Websocket script', SCRIPT, 'Runs for each message frame of a websocket'],
  ['send_svcscriptcode_ws', 'Push script', SCRIPT, 'Runs for channel_send_ws: pushes to the connected clients'],
  ['opts.issync', 'Callers wait for the answer', 'check', 'Off: a request is answered 202 at once and runs as an inbox job, one at a time'],
  ['opts.send_retries', 'Send retries', 'number', 'Attempts of a send job after the first (backoff 1 s, 2 s, 4 s … 5 min)'],
  ['opts.queue', 'Queue', 'text', 'The job-processing queue its jobs are listed under; empty: the code'],
  ['opts.mode', 'Mode', ['production', 'test'], 'test: scripts call url_test with token_remote_test when set; test jobs are marked'],
  ['opts.recv_timeout', 'Script timeout (s)', 'number', 'Seconds a script may run; empty or 0: 10'],
  ['opts.token_valid_until', 'Token valid until', 'text', 'RFC 3339 (2027-01-31T00:00:00Z); token_local is refused after it'],
  ['opts.record', 'Requests kept for Try and Replay', 'number', '0 to 1000'],
];

function get(doc, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), doc);
}

// Sets `path` in `doc`; an empty value removes the key (the server's default).
function set(doc, path, value) {
  const keys = path.split('.');
  const last = keys.pop();
  let o = doc;
  for (const k of keys) { if (!o[k] || typeof o[k] !== 'object') o[k] = {}; o = o[k]; }
  if (value === undefined || value === '') delete o[last]; else o[last] = value;
}

// Resolves with `true` once the server saved the document (`c`: the channel
// as read, or null for a new one).
export async function settingsDialog(c, scripts) {
  const doc = c ? structuredClone(c) : { code: '', type: 'general', opts: { title: '' } };
  for (const k of ['status', 'state', 'credential', 'next_run']) delete doc[k];
  const error = h('div', { class: 'error', role: 'alert', id: 'settings-error' });
  const area = h('textarea', { class: 'code', rows: 18, id: 'settings-json', 'aria-label': 'Channel document (JSON)' });
  const form = h('div', { class: 'form settings', id: 'settings-form' });
  let jsonShown = false;

  function field([path, label, kind, help, flags]) {
    if (flags && flags.newOnly && c) return null;
    const id = `f-${path.replace(/\./g, '-')}`;
    const v = get(doc, path);
    let input;
    if (kind === 'check') {
      input = h('input', { type: 'checkbox', id });
      input.checked = !!v;
      input.addEventListener('change', () => set(doc, path, input.checked || undefined));
    } else if (Array.isArray(kind) || kind === SCRIPT) {
      const choices = kind === SCRIPT ? ['', ...scripts] : kind;
      input = h('select', { id }, choices.map((o) => h('option', { value: o }, o || '(none)')));
      if (v !== undefined && !choices.includes(v)) append(input, h('option', { value: v }, v));
      input.value = v === undefined ? (kind === SCRIPT ? '' : choices[0]) : v;
      input.addEventListener('change', () => set(doc, path, input.value));
    } else {
      input = h('input', { id, type: kind === 'number' ? 'number' : 'text', value: v === undefined ? '' : String(v) });
      if (kind === 'number') input.min = '0';
      input.addEventListener('input', () => set(doc, path, kind === 'number' && input.value !== '' ? Number(input.value) : input.value));
    }
    const helpId = `${id}-help`;
    input.setAttribute('aria-describedby', helpId);
    return h('div', { class: `field ${kind === 'check' ? 'check' : ''}` },
      h('label', { for: id }, label), input, h('small', { id: helpId, class: 'muted' }, help));
  }
  function renderForm() {
    clear(form);
    append(form, FIELDS.map(field));
  }

  const parts = tabs('Settings', [
    { id: 'settings-form-tab', label: 'Form', render: () => {}, shown: (p) => {
      // Coming back from the JSON view: its edits, when they parse.
      if (jsonShown) {
        try { Object.assign(clearObject(doc), JSON.parse(area.value)); error.textContent = ''; } catch (e) { error.textContent = `The JSON does not parse: ${e.message}`; }
      }
      jsonShown = false;
      renderForm();
      if (!p.contains(form)) append(p, form);
    } },
    { id: 'settings-json-tab', label: 'JSON', render: () => {}, shown: (p) => {
      jsonShown = true;
      area.value = json(doc);
      if (!p.contains(area)) append(p, area);
    } },
  ]);

  async function save() {
    let body = doc;
    if (jsonShown) {
      try { body = JSON.parse(area.value); } catch (e) { error.textContent = `The JSON does not parse: ${e.message}`; return false; }
    }
    try {
      if (c) await api('PUT', `/admin/channels/${encodeURIComponent(c.code)}`, body);
      else await api('POST', '/admin/channels', body);
      return true;
    } catch (e) {
      // Kept open, with the edits: the server's reason, and where.
      error.textContent = `Not saved: ${e.message}`;
      return false;
    }
  }
  await parts.ready;
  const saved = await dialog(c ? `Settings of ${c.code}` : 'Add channel', [parts, error], [
    { label: 'Cancel', value: () => null },
    { label: 'Save', id: 'settings-save', act: save },
  ]);
  return saved === true;
}

function clearObject(o) {
  for (const k of Object.keys(o)) delete o[k];
  return o;
}
