// The dashboard in a real browser: playwright-core drives Debian's chromium (headless) against a
// running luagent with authentication on (run.sh starts it). Each check prints "ok" or "not ok";
// the last line is "N passed, N failed". Screenshots go to artifacts/. Exit 77 when chromium cannot
// start (skipped), 1 on failures.
//
//   BASE_URL=http://127.0.0.1:PORT API_KEY=lg_... node dashboard.mjs
import {mkdirSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

const BASE = process.env.BASE_URL;
const KEY = process.env.API_KEY;
const ART = join(dirname(fileURLToPath(import.meta.url)), 'artifacts');
mkdirSync(ART, {recursive: true});

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
} catch (e) {
  console.log(`tests/browser: SKIPPED: chromium cannot start: ${String(e.message).split('\n')[0]}`);
  process.exit(77);
}

let passed = 0, failed = 0;
const pageErrors = [];
const context = await browser.newContext({viewport: {width: 1200, height: 900}});
const page = await context.newPage();
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.setDefaultTimeout(5000);

function assert(cond, msg) { if (!cond) throw new Error(msg); }

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok ${passed + failed} - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok ${passed + failed} - ${name}\n#   ${String(e.stack || e).split('\n').slice(0, 4).join('\n#   ')}`);
    await page.screenshot({path: join(ART, `failed-${passed + failed}.png`), fullPage: true}).catch(() => {});
  }
}

async function runAgent(name, fill) {
  await page.goto(`${BASE}/#/agents/${name}`);
  await page.waitForSelector('#run-form');
  if (fill) await fill();
  await page.click('#run');
}

await check('sign-in: a wrong key is refused, the right one shows the agents', async () => {
  await page.goto(`${BASE}/`);
  await page.fill('#api-key', 'lg_wrong');
  await page.click('button[type=submit]');
  await page.waitForSelector('.error');
  assert(/401|not accepted|not a valid/.test(await page.textContent('main')), 'no error for a wrong key');
  await page.screenshot({path: join(ART, 'login.png')});
  await page.fill('#api-key', KEY);
  await page.click('button[type=submit]');
  await page.waitForSelector('#agent-list a[data-agent=summarize]');
  const names = await page.$$eval('#agent-list a.agent-link', (as) => as.map((a) => a.textContent));
  for (const n of ['broken', 'kinds', 'story', 'summarize', 'xss']) assert(names.includes(n), `agent ${n} missing: ${names}`);
  const stored = await page.evaluate(() => sessionStorage.getItem('luagent.key'));
  assert(stored === KEY, 'the key is not in sessionStorage');
  await page.screenshot({path: join(ART, 'agents.png')});
});

await check('an agent shows its version, description and input schema; a broken one its load error', async () => {
  await page.goto(`${BASE}/#/agents/summarize`);
  await page.waitForSelector('#agent-name');
  assert((await page.textContent('#agent-description')).includes('Summarize'), 'description');
  assert(/"maxLength": 20000/.test(await page.textContent('#input-schema')), 'schema');
  assert(await page.$('textarea[name=text]'), 'no textarea for the long string "text"');
  await page.goto(`${BASE}/#/agents/broken`);
  await page.waitForSelector('#load-error');
  assert(/broken\.lua/.test(await page.textContent('#load-error')), 'load error text');
});

await check('summarize runs streamed: tokens arrive, then the result', async () => {
  await runAgent('summarize', () => page.fill('textarea[name=text]', 'The quick brown fox jumps over the lazy dog'));
  await page.waitForSelector('#result-json');
  const tokens = await page.$eval('#tokens', (el) => ({n: el.childNodes.length, text: el.textContent}));
  const result = JSON.parse(await page.textContent('#result-json'));
  assert(tokens.n > 3, `only ${tokens.n} token events`);
  assert(result.summary === tokens.text, `tokens "${tokens.text}" differ from the summary "${result.summary}"`);
  assert(result.summary.includes('quick brown fox'), 'summary');
  await page.screenshot({path: join(ART, 'run-summarize.png'), fullPage: true});
});

let storyExecution;
await check('a streamed run shows its output growing in steps before the result', async () => {
  await page.goto(`${BASE}/#/agents/story`);
  await page.waitForSelector('#run-form');
  await page.evaluate(() => {
    window.__steps = [];
    const out = document.getElementById('run-output');
    new MutationObserver(() => {
      const t = document.getElementById('tokens');
      window.__steps.push({at: performance.now(), len: t ? t.textContent.length : 0,
        result: !!document.getElementById('result-json')});
    }).observe(out, {childList: true, subtree: true, characterData: true});
  });
  await page.click('#run');
  await page.waitForSelector('#result-json', {timeout: 10000});
  const steps = await page.evaluate(() => window.__steps);
  const before = steps.filter((s) => !s.result && s.len > 0);
  const lengths = [...new Set(before.map((s) => s.len))];
  assert(lengths.length >= 2, `the output grew in ${lengths.length} step(s) before the result`);
  const spread = before[before.length - 1].at - before[0].at;
  assert(spread >= 200, `all tokens within ${spread.toFixed(0)} ms: not live`);
  const emits = await page.$$eval('#emits li', (lis) => lis.length);
  assert(emits === 3, `${emits} emit events shown`);
  storyExecution = (await page.textContent('#result-execution .mono')).trim();
  console.log(`#   story: ${lengths.length} distinct lengths over ${spread.toFixed(0)} ms before the result`);
});

await check('history lists the run; its detail shows the AI calls, logs and emits', async () => {
  await page.goto(`${BASE}/#/executions`);
  await page.waitForSelector('#history-rows tr');
  assert((await page.textContent('#history-rows')).includes('story'), 'story not in the history');
  await page.fill('#filter-agent', 'summarize');
  await page.click('.filters button[type=submit]');
  await page.waitForFunction(() => location.hash.includes('agent=summarize'));
  await page.waitForSelector('#history-rows a.exec-link');
  const agents = await page.$$eval('#history-rows tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent));
  assert(agents.length > 0 && agents.every((a) => a === 'summarize'), `filter: ${agents}`);
  await page.goto(`${BASE}/#/executions/${storyExecution}`);
  await page.waitForSelector('#events li');
  const types = await page.$$eval('#events li', (lis) => lis.map((l) => l.dataset.type));
  assert(types.filter((t) => t === 'ai_call').length === 3, `events: ${types}`);
  assert(types.includes('log') && types.includes('emit'), `events: ${types}`);
  const ai = await page.textContent('#events li[data-type=ai_call]');
  assert(/mock\/mock-1/.test(ai) && /tokens/.test(ai), `ai_call shows ${ai}`);
  await page.screenshot({path: join(ART, 'execution.png'), fullPage: true});
});

await check('the charts render from /api/v1/stats', async () => {
  await page.goto(`${BASE}/#/stats?window=15m`);
  await page.waitForSelector('svg.chart');
  assert((await page.$$('svg.chart')).length === 2, 'two charts');
  assert((await page.$$('svg.chart rect.ok')).length >= 1, 'no bars');
  const d = await page.getAttribute('svg.chart path.line.p50', 'd');
  assert(d && d.startsWith('M'), 'no p50 line');
  const rows = await page.$$eval('#stats-agents tbody tr td:first-child', (tds) => tds.map((t) => t.textContent));
  for (const n of ['story', 'summarize']) assert(rows.includes(n), `stats table: ${rows}`);
  assert(/executions/.test(await page.textContent('#stats-summary')), 'summary');
  await page.screenshot({path: join(ART, 'charts.png'), fullPage: true});
});

await check('the form builds every field kind and sends typed values', async () => {
  await runAgent('kinds', async () => {
    await page.fill('input[name=title]', 'Plan');
    await page.fill('input[name=count]', '3');
    await page.fill('input[name=ratio]', '0.5');
    await page.check('input[name=urgent]');
    await page.selectOption('select[name=color]', {label: '"blue"'});
    await page.fill('textarea[name=tags]', '["a", "b"]');
    await page.fill('textarea[name=meta]', '{"k": null}');
    await page.uncheck('#stream');
  });
  await page.waitForSelector('#result-json');
  const r = JSON.parse(await page.textContent('#result-json'));
  const want = {title: 'Plan', count: 3, ratio: 0.5, urgent: true, color: 'blue', tags: ['a', 'b'], meta: {k: null}};
  assert(JSON.stringify(r.echo, Object.keys(want).sort()) === JSON.stringify(want, Object.keys(want).sort()), JSON.stringify(r.echo));
  // a task that fails the schema: the 422 details are shown
  await page.check('#raw-toggle');
  await page.fill('textarea[name=__raw]', '{"title": "x", "count": 0}');
  await page.click('#run');
  await page.waitForSelector('#result .error');
  assert(/422.*validation_failed/.test(await page.textContent('#result .error')), 'no 422');
  assert(/\/count/.test(await page.textContent('#result .error')), 'no detail for /count');
});

await check('agent output with markup is shown as text, never run', async () => {
  await runAgent('xss');
  await page.waitForSelector('#result-json');
  const html = await page.$eval('#run-output', (el) => ({imgs: el.querySelectorAll('img, script, b').length, text: el.textContent}));
  assert(html.imgs === 0, `${html.imgs} elements made from agent output`);
  assert(html.text.includes('<img src=x onerror='), 'the markup is not shown as text');
  await page.goto(`${BASE}/#/agents`);
  await page.waitForSelector('#agent-list');
  assert((await page.$$('#agent-list img')).length === 0, 'the description became markup');
  await page.waitForTimeout(100);
  assert(await page.evaluate(() => window.__xss === undefined), 'an injected handler ran');
  await page.screenshot({path: join(ART, 'xss.png'), fullPage: true});
});

await check('usable at phone width (375 px): no sideways scrolling, controls reachable', async () => {
  await page.setViewportSize({width: 375, height: 740});
  for (const view of ['#/agents/kinds', '#/executions', `#/executions/${storyExecution}`, '#/stats']) {
    await page.goto(`${BASE}/${view}`);
    await page.waitForSelector('main .card');
    await page.waitForTimeout(100);
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    assert(w <= 375, `${view}: the page is ${w} px wide`);
  }
  await page.goto(`${BASE}/#/agents/kinds`);
  await page.waitForSelector('#run');
  const box = await page.locator('#run').boundingBox();
  assert(box && box.x >= 0 && box.x + box.width <= 375, 'the Run button is off screen');
  await page.screenshot({path: join(ART, 'phone.png'), fullPage: true});
});

await check('logging out forgets the key', async () => {
  await page.setViewportSize({width: 1200, height: 900});
  await page.goto(`${BASE}/#/agents`);
  await page.click('#logout');
  await page.waitForSelector('#api-key');
  assert(await page.evaluate(() => sessionStorage.getItem('luagent.key')) === null, 'key kept');
});

await check('no script errors on any page', async () => {
  assert(pageErrors.length === 0, pageErrors.join('; '));
});

await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
