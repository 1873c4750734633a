// The Switchyard console: sign-in, the navigation, and the pages.
import { h, append, clear, toast } from './dom.js';
import { api, setCsrf } from './api.js';
import { channelsPage } from './channels.js';
import { scriptsPage } from './scripts.js';
import { jobsPage } from './jobs.js';
import { livePage } from './live.js';
import { overviewPage } from './overview.js';
import { auditPage } from './audit.js';

const pages = {
  channels: ['Channels', channelsPage],
  scripts: ['Scripts', scriptsPage],
  jobs: ['Jobs', jobsPage],
  live: ['Live', livePage],
  overview: ['Overview', overviewPage],
  audit: ['Audit', auditPage],
};

// Script errors and CSP violations, counted for the browser tests (and a look in devtools).
window.switchyardErrors = [];
window.addEventListener('error', (e) => window.switchyardErrors.push(String(e.message)));
document.addEventListener('securitypolicyviolation', (e) =>
  window.switchyardErrors.push(`CSP: ${e.violatedDirective} ${e.blockedURI}`));

const root = document.getElementById('app');
let session = null;
let leave = null;

function signInForm(message) {
  clear(root);
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, message || '');
  const form = h('form', { class: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const s = await api('POST', '/console/session', { token: input.value });
      input.value = '';
      start(s);
    } catch (err) {
      error.textContent = err.status === 429 ? 'Too many attempts: wait a little.' : 'Sign-in refused: not an admin token or a JWT with role admin or viewer.';
    }
  } },
  h('h1', null, 'Switchyard'),
  h('label', { for: 'token' }, 'Admin token or IAM JWT'),
  input,
  h('button', { type: 'submit', id: 'signin' }, 'Sign in'),
  error);
  append(root, form);
  input.focus();
}

function start(s) {
  session = s;
  setCsrf(s.csrf);
  document.body.dataset.role = s.role;
  if (!location.hash) location.hash = '#/channels';
  route();
}

async function signOut() {
  try { await api('DELETE', '/console/session'); } catch { /* gone anyway */ }
  session = null;
  setCsrf(null);
  signInForm('Signed out.');
}

function layout(current) {
  clear(root);
  const nav = h('nav', { 'aria-label': 'Pages' },
    h('span', { class: 'brand' }, 'Switchyard'),
    Object.entries(pages).map(([key, [label]]) =>
      h('a', { href: `#/${key}`, 'aria-current': key === current ? 'page' : null }, label)),
    h('span', { class: 'who' }, `${session.user} · ${session.role}`),
    h('button', { type: 'button', id: 'signout', onclick: signOut }, 'Sign out'));
  const main = h('main', { id: 'main', tabindex: '-1' });
  append(root, [h('header', null, nav), main]);
  return main;
}

async function route() {
  if (!session) return;
  if (leave) { leave(); leave = null; }
  // `#/page/arg…?filters`: the filters (`#/jobs?queue=erp&state=failed`) in ctx.query.
  const [path, search] = (location.hash || '#/channels').split('?');
  const [, name, ...rest] = path.split('/');
  const key = pages[name] ? name : 'channels';
  const main = layout(key);
  const ctx = { session, admin: session.role === 'admin', args: rest.map(decodeURIComponent), query: new URLSearchParams(search || '') };
  try {
    leave = (await pages[key][1](main, ctx)) || null;
    // For examples/console_bench.rs: when this page had its data on screen.
    performance.mark(`ready:${key}`);
  } catch (err) {
    if (err.status === 401) return signInForm('Your session ended: sign in again.');
    append(main, h('p', { class: 'error' }, `Could not load: ${err.message}`));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason && e.reason.status === 401) signInForm('Your session ended: sign in again.');
  else if (e.reason && e.reason.message) toast(e.reason.message, 'bad');
});

api('GET', '/console/session').then(start, () => signInForm());
