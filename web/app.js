// The luagent dashboard: agents, running one with its output streamed, the execution history and
// one execution's events, charts. Plain ES modules, no build step; views route on the URL
// fragment (#/agents/NAME, #/executions/ID, #/stats). Agent data is only ever shown as text.
import {api, ApiError, clearKey, executeStream, getKey, setKey} from './api.js';
import {countChart, latencyChart} from './charts.js';
import {buildForm} from './form.js';
import {fmtMs, fmtTime, h, json, mount} from './dom.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null; // AbortController of the view on screen

function errorBox(err) {
  const msg = err instanceof ApiError ? `${err.status} ${err.code}: ${err.message}` : String(err.message || err);
  return h('div', {class: 'error', role: 'alert'}, msg,
    err && err.details ? h('ul', null, err.details.map((d) => h('li', null, `${d.path || '/'}: ${d.message}`))) : null);
}

function statusBadge(st) { return h('span', {class: `badge ${st}`}, st); }

// ---- login ----

function loginView(message) {
  nav.hidden = true;
  const key = h('input', {type: 'password', id: 'api-key', name: 'key', autocomplete: 'off', placeholder: 'lg_…'});
  const out = h('div');
  const form = h('form', {class: 'card login', onsubmit: async (ev) => {
    ev.preventDefault();
    setKey(key.value.trim());
    try {
      await api('/api/v1/agents');
      route();
    } catch (err) {
      clearKey();
      mount(out, errorBox(err));
    }
  }},
  h('h1', null, 'Sign in'),
  h('p', {class: 'muted'}, 'Enter an API key (viewer to browse, operator to run agents). It stays in this tab only.'),
  h('label', {for: 'api-key'}, 'API key'), key,
  h('button', {type: 'submit'}, 'Continue'), out);
  mount(main, form);
  if (message) mount(out, h('div', {class: 'error'}, message));
  key.focus();
}

window.addEventListener('luagent:unauthenticated', () => {
  if (getKey() !== null) { clearKey(); loginView('The key was not accepted (unknown, revoked or expired).'); }
});

document.getElementById('logout').addEventListener('click', () => { clearKey(); loginView(); });

// ---- agents ----

async function agentsView(name, signal) {
  const list = h('ul', {class: 'agents', id: 'agent-list'});
  const detail = h('section', {class: 'detail', id: 'agent-detail'});
  mount(main, h('div', {class: 'split'}, h('section', {class: 'card'}, h('h2', null, 'Agents'), list), detail));
  const {items} = await api('/api/v1/agents', {signal});
  items.sort((a, b) => a.name.localeCompare(b.name));
  for (const a of items) {
    list.appendChild(h('li', {class: a.name === name ? 'active' : ''},
      h('a', {href: `#/agents/${encodeURIComponent(a.name)}`, class: 'agent-link', dataset: {agent: a.name}}, a.name),
      a.error ? h('span', {class: 'badge failed'}, 'load error') : null,
      h('div', {class: 'muted small'}, a.description || '')));
  }
  if (items.length === 0) list.appendChild(h('li', {class: 'muted'}, 'No agents loaded.'));
  if (!name) {
    mount(detail, h('div', {class: 'card muted'}, 'Pick an agent to see its schema and run it.'));
    return;
  }
  const a = await api(`/api/v1/agents/${encodeURIComponent(name)}`, {signal});
  renderAgent(detail, a);
}

function renderAgent(detail, a) {
  const meta = h('dl', {class: 'meta'},
    h('dt', null, 'Version'), h('dd', {class: 'mono'}, a.version || '–'),
    h('dt', null, 'Timeout'), h('dd', null, a.timeout_ms > 0 ? fmtMs(a.timeout_ms) : 'server default'),
    h('dt', null, 'File'), h('dd', {class: 'mono'}, a.file || '–'),
    h('dt', null, 'Updated'), h('dd', null, a.updated_at_ms ? new Date(a.updated_at_ms).toLocaleString() : '–'));
  const err = a.error ? h('div', {class: 'error', id: 'load-error'}, `Load error: ${a.error}`) : null;
  const schema = h('details', null, h('summary', null, 'Input schema'),
    h('pre', {class: 'mono', id: 'input-schema'}, a.input ? json(a.input) : '(none: any task)'));
  const form = buildForm(a.input || {});
  const stream = h('input', {type: 'checkbox', id: 'stream', checked: true});
  const runBtn = h('button', {type: 'submit', id: 'run'}, 'Run');
  const output = h('div', {class: 'run-output', id: 'run-output'});
  const runForm = h('form', {id: 'run-form', onsubmit: (ev) => { ev.preventDefault(); run(a.name, form, stream.checked, runBtn, output); }},
    form.element,
    h('label', {class: 'check small', for: 'stream'}, stream, ' Stream output'),
    h('div', null, runBtn));
  mount(detail, h('div', {class: 'card'},
    h('h2', {id: 'agent-name'}, a.name),
    h('p', {id: 'agent-description'}, a.description || ''), err, meta, schema,
    a.loaded === false ? null : h('h3', null, 'Run'), a.loaded === false ? null : runForm, output));
}

async function run(name, form, streamed, btn, output) {
  let task;
  try { task = form.read(); } catch (e) { mount(output, errorBox(e)); return; }
  const tokens = h('pre', {class: 'tokens', id: 'tokens', 'aria-live': 'polite'});
  const emits = h('ol', {class: 'emits', id: 'emits'});
  const result = h('div', {id: 'result'});
  mount(output, h('h4', null, 'Output'), tokens, emits, result);
  btn.disabled = true;
  const showResult = (r) => mount(result, h('div', {class: 'result-head'}, statusBadge(r.status || 'succeeded'),
    ' ', fmtMs(r.duration_ms), ' · ',
    h('a', {href: `#/executions/${r.execution_id}`, id: 'result-execution'}, 'execution ', h('span', {class: 'mono'}, r.execution_id))),
    h('pre', {class: 'mono', id: 'result-json'}, json(r.result)));
  try {
    if (!streamed) {
      showResult(await api(`/api/v1/agents/${encodeURIComponent(name)}/execute`, {method: 'POST', body: {task}}));
      return;
    }
    await executeStream(name, {task}, ({event, data}) => {
      if (event === 'token') tokens.appendChild(document.createTextNode(data && typeof data.text === 'string' ? data.text : ''));
      else if (event === 'emit') emits.appendChild(h('li', {class: 'mono'}, typeof data === 'string' ? data : JSON.stringify(data)));
      else if (event === 'result') showResult(data);
      else if (event === 'error') mount(result, errorBox(new ApiError(0, data)), data.error && data.error.execution_id
        ? h('a', {href: `#/executions/${data.error.execution_id}`}, 'See the execution') : null);
    });
  } catch (e) {
    mount(result, errorBox(e));
  } finally {
    btn.disabled = false;
  }
}

// ---- history ----

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}

async function historyView(signal) {
  const f = Object.fromEntries(new URLSearchParams(location.hash.split('?')[1] || ''));
  const agent = h('input', {name: 'agent', id: 'filter-agent', value: f.agent || '', placeholder: 'any'});
  const status = h('select', {name: 'status', id: 'filter-status'},
    ['', 'queued', 'running', 'succeeded', 'failed'].map((v) => h('option', {value: v}, v || 'any')));
  status.value = f.status || '';
  const since = h('input', {name: 'since', id: 'filter-since', type: 'datetime-local'});
  if (f.since) since.value = f.since;
  const rows = h('tbody', {id: 'history-rows'});
  const more = h('button', {type: 'button', id: 'more', hidden: true}, 'Older');
  const out = h('div');
  const filters = h('form', {class: 'filters', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/executions${qs({agent: agent.value.trim(), status: status.value, since: since.value})}`;
  }},
  h('label', null, 'Agent ', agent), h('label', null, 'Status ', status), h('label', null, 'Since ', since),
  h('button', {type: 'submit'}, 'Filter'));
  mount(main, h('section', {class: 'card'}, h('h2', null, 'Executions'), filters, out,
    h('div', {class: 'scroll'}, h('table', {class: 'history'},
      h('thead', null, h('tr', null, ['Created', 'Agent', 'Status', 'Duration', 'Id'].map((c) => h('th', null, c)))), rows)),
    more));
  const base = {agent: f.agent, status: f.status, since: f.since ? new Date(f.since).toISOString() : '', limit: '25'};
  const page = async (cursor) => {
    const r = await api(`/api/v1/executions${qs({...base, cursor})}`, {signal});
    for (const e of r.items) {
      rows.appendChild(h('tr', null,
        h('td', null, fmtTime(e.created_at)), h('td', null, e.agent), h('td', null, statusBadge(e.status)),
        h('td', null, fmtMs(e.duration_ms)),
        h('td', null, h('a', {href: `#/executions/${e.execution_id}`, class: 'mono exec-link'}, e.execution_id.slice(0, 13) + '…'))));
    }
    if (rows.childElementCount === 0) rows.appendChild(h('tr', null, h('td', {colspan: 5, class: 'muted'}, 'No executions match.')));
    more.hidden = !r.next_cursor;
    more.onclick = () => page(r.next_cursor).catch((e) => mount(out, errorBox(e)));
  };
  await page('');
}

function eventBody(ev) {
  const d = ev.data || {};
  switch (ev.type) {
  case 'ai_call':
    return [h('span', {class: 'mono'}, `${d.provider}/${d.model}`), ` · ${d.input_tokens} in / ${d.output_tokens} out tokens · ${fmtMs(d.duration_ms)}`,
      d.retries ? ` · ${d.retries} retries` : '', d.error ? h('div', {class: 'error'}, d.error) : null];
  case 'http_call':
    return [h('span', {class: 'mono'}, `${d.method || ''} ${d.url || ''}`), ` → ${d.status !== undefined ? d.status : 'failed'} · ${fmtMs(d.duration_ms)}`,
      d.error ? h('div', {class: 'error'}, d.error) : null];
  case 'log':
    return [h('span', {class: `badge ${d.level}`}, d.level), ' ', d.message, d.fields ? h('pre', {class: 'mono'}, json(d.fields)) : null];
  default:
    return h('pre', {class: 'mono'}, json(d));
  }
}

async function executionView(id, signal) {
  const e = await api(`/api/v1/executions/${encodeURIComponent(id)}`, {signal});
  const events = h('ol', {class: 'events', id: 'events'}, (e.events || []).map((ev) =>
    h('li', {class: `event ${ev.type}`, dataset: {type: ev.type}},
      h('div', {class: 'event-head'}, h('strong', null, ev.type), ' ', h('span', {class: 'muted small'}, fmtTime(ev.at))),
      eventBody(ev))));
  mount(main, h('section', {class: 'card', id: 'execution'},
    h('h2', null, 'Execution ', h('span', {class: 'mono small'}, e.execution_id)),
    h('dl', {class: 'meta'},
      h('dt', null, 'Agent'), h('dd', null, h('a', {href: `#/agents/${encodeURIComponent(e.agent)}`}, e.agent)),
      h('dt', null, 'Status'), h('dd', {id: 'execution-status'}, statusBadge(e.status)),
      h('dt', null, 'Version'), h('dd', {class: 'mono'}, e.version || '–'),
      h('dt', null, 'Mode'), h('dd', null, e.mode || '–'),
      h('dt', null, 'Duration'), h('dd', null, fmtMs(e.duration_ms)),
      h('dt', null, 'Created'), h('dd', null, fmtTime(e.created_at)),
      h('dt', null, 'User'), h('dd', {class: 'mono'}, e.user ? `${e.user.id || ''} (${e.user.role || ''})` : '–')),
    e.usage && Object.keys(e.usage).length ? h('details', null, h('summary', null, 'Usage'), h('pre', {class: 'mono'}, json(e.usage))) : null,
    h('h3', null, 'Task'), h('pre', {class: 'mono'}, json(e.task)),
    e.error ? [h('h3', null, 'Error'), h('pre', {class: 'mono error'}, json(e.error))] : [h('h3', null, 'Result'), h('pre', {class: 'mono', id: 'execution-result'}, json(e.result))],
    h('h3', null, `Events (${(e.events || []).length})`), events));
}

// ---- charts ----

async function statsView(signal) {
  const w = new URLSearchParams(location.hash.split('?')[1] || '').get('window') || '1h';
  const pick = h('select', {id: 'stats-window', onchange: () => { location.hash = `#/stats?window=${pick.value}`; }},
    ['15m', '1h', '6h', '24h', '7d'].map((v) => h('option', {value: v}, v)));
  pick.value = w;
  const box = h('div', {class: 'charts', id: 'charts'});
  mount(main, h('section', {class: 'card'}, h('h2', null, 'Charts ', pick), box));
  const st = await api(`/api/v1/stats?window=${encodeURIComponent(w)}`, {signal});
  const t = st.total;
  mount(box,
    h('p', {class: 'muted', id: 'stats-summary'}, `${t.count} executions (${t.failed} failed) · p50 ${fmtMs(t.p50_ms)} · p95 ${fmtMs(t.p95_ms)} · p99 ${fmtMs(t.p99_ms)} · from ${st.source}`),
    h('figure', null, h('figcaption', null, 'Executions ', h('span', {class: 'key ok'}, 'succeeded'), ' ', h('span', {class: 'key bad'}, 'failed')), countChart(st)),
    h('figure', null, h('figcaption', null, 'Latency ', h('span', {class: 'key p50'}, 'p50'), ' ', h('span', {class: 'key p95'}, 'p95')), latencyChart(st)),
    h('div', {class: 'scroll'}, h('table', {class: 'history', id: 'stats-agents'},
      h('thead', null, h('tr', null, ['Agent', 'Runs', 'Failed', 'p50', 'p95', 'p99'].map((c) => h('th', null, c)))),
      h('tbody', null, st.agents.map((a) => h('tr', null, h('td', null, a.agent), h('td', null, String(a.count)),
        h('td', null, String(a.failed)), h('td', null, fmtMs(a.p50_ms)), h('td', null, fmtMs(a.p95_ms)), h('td', null, fmtMs(a.p99_ms)))))))); 
}

// ---- routing ----

async function route() {
  if (getKey() === null) { loginView(); return; }
  nav.hidden = false;
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  const [path] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const view = parts[0] || 'agents';
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.view === view);
  try {
    if (view === 'executions' && parts[1]) await executionView(parts[1], signal);
    else if (view === 'executions') await historyView(signal);
    else if (view === 'stats') await statsView(signal);
    else await agentsView(parts[1], signal);
  } catch (err) {
    if (err.name === 'AbortError') return;
    if (err instanceof ApiError && err.status === 401) return; // back at the sign-in form
    main.appendChild(errorBox(err));
  }
}

window.addEventListener('hashchange', route);
route();
