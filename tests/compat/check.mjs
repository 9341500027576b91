// Drives luagent's OpenAI-compatible face with the official openai SDK: agents as models, a real
// luagent API key as the SDK's apiKey. Ends with "N passed, N failed"; exit status 1 on any failure.
//
//   LUAGENT_URL=http://127.0.0.1:PORT LUAGENT_KEY=lg_... node check.mjs     (run.sh starts a server and does this)
//
// The server serves the repository's sample agents with the offline mock provider, so answers are
// deterministic: the `ai` agent answers "mock: <last user message>".
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const URL_ = (process.env.LUAGENT_URL || '').replace(/\/$/, '');
const KEY = process.env.LUAGENT_KEY || '';
if (!URL_ || !KEY) {
  console.error('LUAGENT_URL and LUAGENT_KEY must be set');
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
async function expectThrow(fn) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error, got none');
}

// openai@4 on Node 18: node-fetch 2 with keep-alive raises a false "Premature close" on chunked
// bodies read with for-await (tests/sdk/check.mjs says more); Node 18's global fetch avoids it.
const nodeMajor = Number(process.versions.node.split('.')[0]);
const transport = nodeMajor < 20 ? { fetch: globalThis.fetch } : {};
console.log(`# node ${process.versions.node}; openai transport: ${nodeMajor < 20 ? 'global fetch (undici)' : 'SDK default (node-fetch)'}`);
const client = new OpenAI({ apiKey: KEY, baseURL: `${URL_}/v1`, timeout: 15000, maxRetries: 0, ...transport });

async function streamed(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const out = { text: '', deltas: 0, roles: [], finish: null, usage: null, ids: new Set(), objects: new Set() };
  for await (const chunk of stream) {
    out.ids.add(chunk.id);
    out.objects.add(chunk.object);
    if (chunk.usage) out.usage = chunk.usage;
    if (!chunk.choices.length) continue;
    const c = chunk.choices[0];
    if (c.delta.role) out.roles.push(c.delta.role);
    if (c.delta.content) {
      out.text += c.delta.content;
      out.deltas++;
    }
    if (c.finish_reason) out.finish = c.finish_reason;
  }
  return out;
}

const question = [{ role: 'system', content: 'answer briefly' }, { role: 'user', content: 'hello from the official sdk' }];

await check('models.list: the agents as models', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    assert.equal(m.owned_by, 'luagent');
    assert.equal(typeof m.created, 'number');
    ids.push(m.id);
  }
  for (const name of ['ai', 'summarize', 'hello']) assert.ok(ids.includes(name), `${name} not in ${ids}`);
  const one = await client.models.retrieve('summarize');
  assert.equal(one.id, 'summarize');
});

let answer;
await check('chat.completions.create (not streamed)', async () => {
  answer = await client.chat.completions.create({ model: 'ai', messages: question, temperature: 0 });
  assert.equal(answer.object, 'chat.completion');
  assert.match(answer.id, /^chatcmpl-[0-9a-f-]{36}$/);
  assert.equal(answer.model, 'ai');
  assert.equal(answer.choices.length, 1);
  assert.equal(answer.choices[0].message.role, 'assistant');
  assert.equal(answer.choices[0].message.content, 'mock: hello from the official sdk');
  assert.equal(answer.choices[0].finish_reason, 'stop');
  // the mock counts words: 2 + 5 in, 6 out
  assert.deepEqual([answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens], [7, 6, 13]);
});

await check('chat.completions.create (streamed): the chunks reassemble the same answer', async () => {
  const s = await streamed({ model: 'ai', messages: question });
  assert.equal(s.text, answer.choices[0].message.content);
  assert.ok(s.deltas >= 5, `only ${s.deltas} content deltas`);
  assert.deepEqual(s.roles, ['assistant']);
  assert.equal(s.finish, 'stop');
  assert.equal(s.usage, null);
  assert.equal(s.ids.size, 1);
  assert.match([...s.ids][0], /^chatcmpl-/);
  assert.deepEqual([...s.objects], ['chat.completion.chunk']);
});

await check('streamed with stream_options.include_usage: the usage chunk', async () => {
  const s = await streamed({ model: 'ai', messages: question, stream_options: { include_usage: true } });
  assert.equal(s.text, answer.choices[0].message.content);
  assert.deepEqual(s.usage, answer.usage);
});

await check('the summarize sample agent: streamed and not, the same summary', async () => {
  const messages = [{ role: 'user', content: 'Luagent hosts agents written in Lua behind a C server.' }];
  const r = await client.chat.completions.create({ model: 'summarize', messages });
  const s = await streamed({ model: 'summarize', messages });
  assert.ok(r.choices[0].message.content.includes('Luagent hosts agents'), r.choices[0].message.content);
  assert.equal(s.text, r.choices[0].message.content);
});

await check('an unknown model: NotFoundError with our message', async () => {
  const e = await expectThrow(() => client.chat.completions.create({ model: 'no-such-agent', messages: question }));
  assert.ok(e instanceof OpenAI.NotFoundError, `${e && e.constructor && e.constructor.name}: ${e}`);
  assert.equal(e.status, 404);
  assert.equal(e.code, 'model_not_found');
  assert.equal(e.type, 'invalid_request_error');
  assert.match(e.message, /The model 'no-such-agent' does not exist/);
  assert.ok(e.error.request_id, 'request_id in the error object');
  const m = await expectThrow(() => client.models.retrieve('no-such-agent'));
  assert.ok(m instanceof OpenAI.NotFoundError);
});

await check('a bad request: BadRequestError', async () => {
  const e = await expectThrow(() => client.chat.completions.create({ model: 'ai', messages: [] }));
  assert.ok(e instanceof OpenAI.BadRequestError, `${e}`);
  assert.equal(e.code, 'invalid_request');
  assert.match(e.message, /"messages" must not be empty/);
});

await check('a wrong API key: AuthenticationError', async () => {
  const bad = new OpenAI({ apiKey: 'lg_' + 'x'.repeat(43), baseURL: `${URL_}/v1`, maxRetries: 0, ...transport });
  const e = await expectThrow(() => bad.models.list());
  assert.ok(e instanceof OpenAI.AuthenticationError, `${e}`);
  assert.equal(e.type, 'authentication_error');
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
