// Proves that tests/fakes/providers.py speaks what the official SDKs accept: each SDK against the fake,
// non-streaming, streaming, one tool round each, and the error shapes. Exits non-zero on any mismatch.
//
//   FAKE_URL=http://127.0.0.1:PORT node check.mjs        (run.sh starts a fake and does this)
//
// Versions are pinned in package.json to ones whose engines accept Node 18 (Debian 12's nodejs).
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';

const FAKE_URL = (process.env.FAKE_URL || '').replace(/\/$/, '');
if (!FAKE_URL) {
  console.error('FAKE_URL is not set (e.g. http://127.0.0.1:8089)');
  process.exit(2);
}

let passed = 0;
let failed = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 4).join('\n    ') : e}`);
  }
}

async function fakeLog() {
  const r = await fetch(`${FAKE_URL}/_log`);
  return r.json();
}
async function lastRequest(pred) {
  const log = await fakeLog();
  const hits = log.filter(pred);
  assert.ok(hits.length, 'request not found in /_log');
  return hits[hits.length - 1];
}
async function expectThrow(promiseFn, check) {
  let err;
  try {
    await promiseFn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'expected an error, got none');
  check(err);
}
const run = `r${process.pid}`; // unique suffix: "once" counters are per model name
await fetch(`${FAKE_URL}/_reset`, { method: 'POST' });

// ---------------------------------------------------------------------------------------------- OpenAI
// openai@4 sends through node-fetch 2 with a keep-alive agent by default. On Node 18 that pair raises a
// false "Premature close" at the end of every chunked body that is read with for-await over plain HTTP
// keep-alive: reproduced against a bare node:http server too, so it is the client stack, not the fake
// (node-fetch's chunked-ending check counts the reused socket's 'data' listeners). Node 18 has a global
// fetch (undici), which openai@4 accepts as `fetch`: use it there; Node >= 20 keeps the SDK's default.
const nodeMajor = Number(process.versions.node.split('.')[0]);
const openaiTransport = nodeMajor < 20 ? { fetch: globalThis.fetch } : {};
console.log(`# node ${process.versions.node}; openai transport: ${nodeMajor < 20 ? 'global fetch (undici)' : 'SDK default (node-fetch)'}`);
const openai = new OpenAI({ apiKey: 'sk-test-openai', baseURL: `${FAKE_URL}/v1`, timeout: 10000, ...openaiTransport });
const oaiTools = [{ type: 'function', function: { name: 'search', description: 'search the web',
  parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } } }];

await check('openai: chat.completions.create (JSON)', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-test',
    messages: [{ role: 'system', content: 'terse' }, { role: 'user', content: 'hello sdk world' }] });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, 'echo: hello sdk world');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.deepEqual([r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens], [4, 4, 8]);
  const req = await lastRequest((e) => e.provider === 'openai');
  assert.equal(req.headers.authorization, 'Bearer sk-test-openai');
});

await check('openai: stream with include_usage', async () => {
  const stream = await openai.chat.completions.create({ model: 'gpt-test', stream: true,
    stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'one two three four' }] });
  let text = '';
  let deltas = 0;
  let usage = null;
  let finish = null;
  for await (const c of stream) {
    if (c.choices.length) {
      if (c.choices[0].delta.content) { text += c.choices[0].delta.content; deltas++; }
      if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    }
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, 'echo: one two three four');
  assert.ok(deltas >= 5, `only ${deltas} deltas`);
  assert.equal(finish, 'stop');
  assert.deepEqual([usage.prompt_tokens, usage.completion_tokens], [4, 5]);
  const req = await lastRequest((e) => e.provider === 'openai');
  assert.equal(req.body.stream_options.include_usage, true);
});

await check('openai: streamed tool call (beta stream helper) then tool result', async () => {
  const messages = [{ role: 'user', content: 'weather in Paris' }];
  const s = openai.beta.chat.completions.stream({ model: 'gpt-test', messages, tools: oaiTools });
  const done = await s.finalChatCompletion();
  const msg = done.choices[0].message;
  assert.equal(done.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].function.name, 'search');
  assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { query: 'weather in Paris' });
  messages.push(msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'sunny, 21C' });
  const r = await openai.chat.completions.create({ model: 'gpt-test', messages, tools: oaiTools });
  assert.equal(r.choices[0].message.content, 'final: sunny, 21C');
});

await check('openai: non-streaming tool call', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-test', tools: oaiTools,
    messages: [{ role: 'user', content: 'find cats' }] });
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.deepEqual(JSON.parse(call.function.arguments), { query: 'find cats' });
});

await check('openai: 429 then ok is retried by the SDK (retry-after-ms)', async () => {
  const t0 = Date.now();
  const r = await openai.chat.completions.create({ model: `fake-429-then-ok-${run}`,
    messages: [{ role: 'user', content: 'x' }] });
  assert.equal(r.choices[0].message.content, 'echo: x');
  assert.ok(Date.now() - t0 < 900, 'should have waited retry-after-ms (50 ms), not retry-after (1 s)');
  const n = (await fakeLog()).filter((e) => e.model === `fake-429-then-ok-${run}`).length;
  assert.equal(n, 2);
});

await check('openai: 500 error shape', async () => {
  await expectThrow(() => openai.chat.completions.create({ model: 'fake-500', messages: [] }, { maxRetries: 0 }),
    (e) => {
      assert.ok(e instanceof OpenAI.InternalServerError, e.constructor.name);
      assert.equal(e.status, 500);
      assert.equal(e.type, 'server_error');
    });
});

await check('openai: error chunk after 200 throws in the stream', async () => {
  const stream = await openai.chat.completions.create({ model: 'fake-stream-error', stream: true,
    messages: [{ role: 'user', content: 'a b c d' }] }, { maxRetries: 0 });
  let text = '';
  await expectThrow(async () => {
    for await (const c of stream) text += c.choices[0]?.delta?.content || '';
  }, (e) => {
    assert.ok(e instanceof OpenAI.APIError, e.constructor.name);
    assert.match(e.message, /overloaded/);
  });
  assert.equal(text, 'echo: a');
});

await check('openai: 401 shape when no key reaches the server', async () => {
  await expectThrow(() => openai.chat.completions.create({ model: 'gpt-test', messages: [] },
    { maxRetries: 0, headers: { Authorization: null } }), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
    assert.equal(e.status, 401);
  });
});

// ------------------------------------------------------------------------------------------- Anthropic
const anthropic = new Anthropic({ apiKey: 'sk-ant-test', baseURL: FAKE_URL, timeout: 10000 });
const antTools = [{ name: 'search', description: 'search the web',
  input_schema: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } }];

await check('anthropic: messages.create (JSON)', async () => {
  const m = await anthropic.messages.create({ model: 'claude-test', max_tokens: 100, system: 'be terse',
    messages: [{ role: 'user', content: 'hello sdk' }] });
  assert.equal(m.type, 'message');
  assert.deepEqual(m.content, [{ type: 'text', text: 'echo: hello sdk' }]);
  assert.equal(m.stop_reason, 'end_turn');
  assert.deepEqual([m.usage.input_tokens, m.usage.output_tokens], [4, 3]);
  const req = await lastRequest((e) => e.provider === 'anthropic');
  assert.equal(req.headers['x-api-key'], 'sk-ant-test');
  assert.match(req.headers['anthropic-version'], /^\d{4}-\d{2}-\d{2}$/);
});

await check('anthropic: messages.stream text events and finalMessage', async () => {
  const s = anthropic.messages.stream({ model: 'claude-test', max_tokens: 100,
    messages: [{ role: 'user', content: 'alpha beta gamma' }] });
  const pieces = [];
  s.on('text', (t) => pieces.push(t));
  const m = await s.finalMessage();
  assert.equal(pieces.join(''), 'echo: alpha beta gamma');
  assert.ok(pieces.length >= 4, `only ${pieces.length} text events`);
  assert.equal(m.content[0].text, 'echo: alpha beta gamma');
  assert.equal(m.stop_reason, 'end_turn');
  assert.deepEqual([m.usage.input_tokens, m.usage.output_tokens], [3, 4]);
});

await check('anthropic: raw stream event sequence', async () => {
  const stream = await anthropic.messages.create({ model: 'claude-test', max_tokens: 10, stream: true,
    messages: [{ role: 'user', content: 'hi' }] });
  const types = [];
  for await (const ev of stream) types.push(ev.type);
  assert.equal(types[0], 'message_start');
  assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
  assert.ok(types.includes('content_block_delta'));
});

await check('anthropic: streamed tool_use (input_json_delta) then tool_result', async () => {
  const messages = [{ role: 'user', content: 'find dogs' }];
  const s = anthropic.messages.stream({ model: 'claude-test', max_tokens: 100, tools: antTools, messages });
  const m = await s.finalMessage();
  assert.equal(m.stop_reason, 'tool_use');
  const tu = m.content.find((b) => b.type === 'tool_use');
  assert.equal(tu.name, 'search');
  assert.deepEqual(tu.input, { query: 'find dogs' });
  messages.push({ role: 'assistant', content: m.content },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: 'two dogs' }] });
  const r = await anthropic.messages.create({ model: 'claude-test', max_tokens: 100, tools: antTools, messages });
  assert.deepEqual(r.content, [{ type: 'text', text: 'final: two dogs' }]);
});

await check('anthropic: non-streaming tool_use', async () => {
  const m = await anthropic.messages.create({ model: 'claude-test', max_tokens: 100, tools: antTools,
    messages: [{ role: 'user', content: 'q' }] });
  assert.equal(m.content[0].type, 'tool_use');
  assert.deepEqual(m.content[0].input, { query: 'q' });
});

await check('anthropic: 529 overloaded_error shape', async () => {
  await expectThrow(() => anthropic.messages.create({ model: 'fake-529', max_tokens: 5,
    messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 }), (e) => {
    assert.equal(e.status, 529);
    assert.equal(e.error.type, 'error');
    assert.equal(e.error.error.type, 'overloaded_error');
  });
});

await check('anthropic: 429 then ok is retried by the SDK (retry-after: 1)', async () => {
  const m = await anthropic.messages.create({ model: `fake-429-then-ok-${run}-a`, max_tokens: 5,
    messages: [{ role: 'user', content: 'y' }] });
  assert.equal(m.content[0].text, 'echo: y');
});

await check('anthropic: event: error after 200 throws in the stream', async () => {
  const s = anthropic.messages.stream({ model: 'fake-stream-error', max_tokens: 10,
    messages: [{ role: 'user', content: 'a b c' }] }, { maxRetries: 0 });
  await expectThrow(() => s.finalMessage(), (e) => {
    assert.match(String(e.message), /overloaded/i);
  });
});

// ---------------------------------------------------------------------------------------------- Gemini
const genai = new GoogleGenAI({ apiKey: 'AIza-test', httpOptions: { baseUrl: FAKE_URL } });
const gemTools = [{ functionDeclarations: [{ name: 'search', description: 'search the web',
  parameters: { type: 'OBJECT', properties: { query: { type: 'STRING' } }, required: ['query'] } }] }];

await check('gemini: models.generateContent (JSON)', async () => {
  const r = await genai.models.generateContent({ model: 'gemini-test', contents: 'hello sdk',
    config: { systemInstruction: 'be brief' } });
  assert.equal(r.text, 'echo: hello sdk');
  assert.equal(r.candidates[0].finishReason, 'STOP');
  assert.deepEqual([r.usageMetadata.promptTokenCount, r.usageMetadata.candidatesTokenCount,
    r.usageMetadata.totalTokenCount], [4, 3, 7]);
  const req = await lastRequest((e) => e.provider === 'gemini');
  assert.equal(req.headers['x-goog-api-key'], 'AIza-test');
  assert.match(req.path, /^\/v1beta\/models\/gemini-test:generateContent/);
});

await check('gemini: generateContentStream (SSE, CRLF)', async () => {
  const stream = await genai.models.generateContentStream({ model: 'gemini-test', contents: 'w1 w2 w3' });
  let text = '';
  let chunks = 0;
  let last;
  for await (const c of stream) { text += c.text || ''; chunks++; last = c; }
  assert.equal(text, 'echo: w1 w2 w3');
  assert.ok(chunks >= 4, `only ${chunks} chunks`);
  assert.equal(last.candidates[0].finishReason, 'STOP');
  assert.equal(last.usageMetadata.candidatesTokenCount, 4);
  const req = await lastRequest((e) => e.provider === 'gemini');
  assert.match(req.path, /:streamGenerateContent\?alt=sse$/);
});

await check('gemini: functionCall (JSON and stream), replay, functionResponse', async () => {
  const user = { role: 'user', parts: [{ text: 'find owls' }] };
  const r = await genai.models.generateContent({ model: 'gemini-test', contents: [user],
    config: { tools: gemTools } });
  assert.deepEqual(r.functionCalls, [{ name: 'search', args: { query: 'find owls' } }]);
  const s = await genai.models.generateContentStream({ model: 'gemini-test', contents: [user],
    config: { tools: gemTools } });
  let calls = [];
  for await (const c of s) calls = calls.concat(c.functionCalls || []);
  assert.deepEqual(calls, [{ name: 'search', args: { query: 'find owls' } }]);
  // @google/genai 1.0.0 (the last release whose engines accept Node 18) has no thoughtSignature field:
  // it drops the signature the fake sent, so replaying the model turn is refused with 400, exactly as
  // the real API refuses it for Gemini 3 models. Check both halves: the SDK's error, and that the
  // request it sent really lacked the signature.
  const funcResp = { role: 'user', parts: [{ functionResponse: { name: 'search', response: { result: 'one owl' } } }] };
  await expectThrow(() => genai.models.generateContent({ model: 'gemini-test',
    contents: [user, r.candidates[0].content, funcResp], config: { tools: gemTools } }), (e) => {
    assert.equal(e.name, 'ClientError');
    assert.match(e.message, /400/);
    assert.match(e.message, /thought_signature/);
  });
  const sent = await lastRequest((e) => e.provider === 'gemini');
  assert.equal(sent.status, 400);
  assert.ok(sent.body.contents[1].parts[0].functionCall, 'model turn was replayed');
  assert.equal(sent.body.contents[1].parts[0].thoughtSignature, undefined);
  // The functionResponse half, with no model turn to sign: the SDK's serialisation is what the fake reads.
  const f = await genai.models.generateContent({ model: 'gemini-test', contents: [user, funcResp],
    config: { tools: gemTools } });
  assert.equal(f.text, 'final: one owl');
});

await check('gemini: 429 RetryInfo and 500 error shapes', async () => {
  await expectThrow(() => genai.models.generateContent({ model: 'fake-429', contents: 'x' }), (e) => {
    assert.equal(e.name, 'ClientError');
    assert.match(e.message, /RESOURCE_EXHAUSTED/);
    const body = JSON.parse(e.message.slice(e.message.indexOf('{')));
    const ri = body.error.details.find((d) => d['@type'].endsWith('google.rpc.RetryInfo'));
    assert.equal(ri.retryDelay, '1s');
  });
  await expectThrow(() => genai.models.generateContent({ model: 'fake-500', contents: 'x' }), (e) => {
    assert.equal(e.name, 'ServerError');
    assert.match(e.message, /INTERNAL/);
  });
});

await check('gemini: raw JSON error after 200 throws in the stream', async () => {
  const stream = await genai.models.generateContentStream({ model: 'fake-stream-error-raw', contents: 'a b c' });
  let text = '';
  await expectThrow(async () => {
    for await (const c of stream) text += c.text || '';
  }, (e) => {
    assert.equal(e.name, 'ServerError');
    assert.match(e.message, /UNAVAILABLE/);
  });
  assert.equal(text, 'echo: a');
});

await check('gemini: "data:" error after 200 never passes for a complete answer', async () => {
  // @google/genai 1.0.0 does not raise on this form: it yields a chunk with no candidates. What matters
  // to a client is that the text is partial and no chunk said finishReason.
  const stream = await genai.models.generateContentStream({ model: 'fake-stream-error', contents: 'a b c' });
  let text = '';
  let finish = null;
  try {
    for await (const c of stream) {
      text += c.text || '';
      finish = c.candidates?.[0]?.finishReason || finish;
    }
  } catch (e) { /* a newer SDK may raise here */ }
  assert.equal(text, 'echo: a');
  assert.equal(finish, null);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
