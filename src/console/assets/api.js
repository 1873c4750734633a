// Every action of the console is an admin API call, made with the session
// cookie; a change carries the session's CSRF token.

let csrf = null;

export function setCsrf(token) { csrf = token; }

export async function api(method, path, body, asText) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (csrf && method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    if (asText) {
      opts.body = body;
      opts.headers['Content-Type'] = 'text/plain; charset=utf-8';
    } else {
      opts.body = JSON.stringify(body);
      opts.headers['Content-Type'] = 'application/json';
    }
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* text */ }
  if (!r.ok) {
    const message = (data && data.message) || (data && data.error) || `${r.status} ${r.statusText}`;
    const e = new Error(message);
    e.status = r.status;
    e.data = data;
    throw e;
  }
  return data;
}

// The live activity stream (GET /admin/stream): calls `on(message)` for each.
let source = null;
const listeners = new Set();

export function listen(on) {
  listeners.add(on);
  if (!source) {
    source = new EventSource('/admin/stream');
    source.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      for (const l of listeners) l(msg);
    };
  }
  return () => listeners.delete(on);
}
