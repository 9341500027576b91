// The REST API from the browser: the key in sessionStorage (sent as a bearer token), JSON errors
// as ApiError, and streamed executions read as Server-Sent Events from a fetch body (EventSource
// cannot send an Authorization header).

const KEY = 'luagent.key';

export function getKey() { return sessionStorage.getItem(KEY); }
export function setKey(k) { sessionStorage.setItem(KEY, k); }
export function clearKey() { sessionStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'http_error';
    this.requestId = e.request_id || null;
    this.details = e.details || null;
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  const k = getKey();
  if (k) h.set('Authorization', `Bearer ${k}`);
  return h;
}

async function fail(res) {
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  const err = new ApiError(res.status, body);
  if (res.status === 401) window.dispatchEvent(new CustomEvent('luagent:unauthenticated', {detail: err}));
  throw err;
}

/** GET (or another method) a JSON route: the decoded body, or throws ApiError. */
export async function api(path, {method = 'GET', body, signal} = {}) {
  const init = {method, headers: headers({Accept: 'application/json'}), signal};
  if (body !== undefined) {
    init.headers.set('Content-Type', 'application/json');
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) await fail(res);
  return res.json();
}

/** Split a text/event-stream body into {event, data} (data decoded from JSON when it is JSON). */
export async function* readSSE(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += value;
    for (;;) {
      const m = /\r?\n\r?\n/.exec(buf);
      if (!m) break;
      const block = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      const ev = parseBlock(block);
      if (ev) yield ev;
    }
  }
  const last = parseBlock(buf);
  if (last) yield last;
}

function parseBlock(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join('\n');
  try { return {event, data: JSON.parse(text)}; } catch (_) { return {event, data: text}; }
}

/** Run an agent streamed: onEvent({event, data}) for each token, emit, result or error event.
 *  Resolves when the stream ends; an HTTP error before the stream (401, 422...) throws ApiError. */
export async function executeStream(agent, body, onEvent, signal) {
  const res = await fetch(`/api/v1/agents/${encodeURIComponent(agent)}/execute`, {
    method: 'POST',
    headers: headers({'Content-Type': 'application/json', Accept: 'text/event-stream'}),
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok) await fail(res);
  const type = res.headers.get('content-type') || '';
  if (!type.startsWith('text/event-stream')) { // answered without streaming (a cached result)
    onEvent({event: 'result', data: await res.json()});
    return;
  }
  for await (const ev of readSSE(res.body)) onEvent(ev);
}
