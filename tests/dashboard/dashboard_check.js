/* dashboard_check.js — drives Debian's headless Chromium (playwright-core) through ferryd's
 * dashboard and checks what a user sees. Run by test_dashboard.py with
 *   BASE_URL=http://127.0.0.1:PORT/  SHOT_DIR=build/test/screenshots  CHROMIUM=/usr/bin/chromium
 * Prints one "ok - ..." or "not ok - ..." line per check and exits 1 if any check failed
 * (or the script itself broke). The broker's state is set up and checked through the
 * management API with Node's fetch; everything asserted about the page is read from the page.
 *
 * Checks: the login form refuses a wrong password and accepts guest; no console error, page
 * error or failed request in the whole session, and no request leaves the broker's origin;
 * a queue's depth rising on the queues page while messages are published; the queue page's
 * bindings, publish and get forms; a dead letter peeked and redriven by a click; an alert
 * defined in the form, green while its condition does not hold, red once it does. */
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const BASE = (process.env.BASE_URL || 'http://127.0.0.1:15672/').replace(/\/?$/, '/');
const SHOTS = process.env.SHOT_DIR || 'screenshots';
const AUTH = 'Basic ' + Buffer.from('guest:guest').toString('base64');
const results = [];

function check(name, ok, detail = '') {
  results.push({ name, ok: !!ok });
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}${detail ? ' (' + detail + ')' : ''}`);
}

async function api(method, p, body) {
  const r = await fetch(BASE + 'api/' + p, {
    method, headers: { Authorization: AUTH, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const publish = (queue, payload) =>
  api('POST', 'exchanges/%2F/amq.default/publish', { properties: {}, routing_key: queue, payload, payload_encoding: 'string' });

/* Polls fn() until it returns a truthy value (then returns it) or the time is up (null). */
async function until(fn, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { const v = await fn(); if (v) return v; } catch (e) { /* not yet */ }
    await new Promise(r => setTimeout(r, 100));
  }
  return null;
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  const origin = new URL(BASE).origin;
  try {
    /* 1. A wrong password is refused on the login form (its 401 is expected: own context). */
    {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(BASE);
      await page.fill('#login-user', 'guest');
      await page.fill('#login-pass', 'wrong');
      await page.click('#login-form button');
      const err = await until(async () => (await page.textContent('#login-error')).trim());
      check('a wrong password is refused with a message', err && /Login failed/.test(err), err);
      check('the dashboard stays hidden after a refused login', await page.isHidden('#app'));
      await ctx.close();
    }

    const ctx = await browser.newContext({ viewport: { width: 1400, height: 950 } });
    const page = await ctx.newPage();
    const problems = [];
    const foreign = [];
    page.on('console', m => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
    page.on('pageerror', e => problems.push('page error: ' + e.message));
    page.on('requestfailed', r => problems.push('request failed: ' + r.url()));
    page.on('response', r => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.url()}`); });
    page.on('request', r => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });

    /* 2. Log in; the overview shows the broker's numbers. */
    await page.goto(BASE);
    check('the login form is shown first', await page.isVisible('#login-form'));
    await page.fill('#login-user', 'guest');
    await page.fill('#login-pass', 'guest');
    await page.click('#login-form button');
    const cards = await until(() => page.$$eval('#ov-cards .stat', els => els.length ? els.map(e => e.dataset.stat) : null));
    check('the overview shows messages, rates, connections, memory, disk, alarms and alerts',
      cards && ['Messages', 'Publish /s', 'Connections', 'Memory', 'Disk free', 'Alarms', 'Alerts firing'].every(k => cards.includes(k)), String(cards));
    const alarms = await page.textContent('[data-stat="Alarms"] .v');
    check('no alarm is shown on an idle broker', alarms.trim() === 'none', alarms);
    check('credentials are kept in sessionStorage', await page.evaluate(() => !!sessionStorage.getItem('ferry.auth')));
    await page.selectOption('#refresh', '1000');
    await page.waitForTimeout(1200);
    await page.screenshot({ path: path.join(SHOTS, 'overview.png') });

    /* 3. A queue's depth rises on screen while the test publishes. */
    const Q = 'dash-orders';
    await api('PUT', `queues/%2F/${Q}`, { durable: true, arguments: {} });
    await page.goto(BASE + '#/queues');
    const cell = `#q-table tr[data-queue="${Q}"] td.c-messages`;
    const first = await until(async () => (await page.textContent(cell)).trim());
    check('the new queue is listed with depth 0', first === '0', first);
    const seen = [Number(first)];
    for (let round = 1; round <= 4; round++) {
      for (let i = 0; i < 5; i++) await publish(Q, `order ${round}-${i}`);
      const v = await until(async () => { const t = Number((await page.textContent(cell)).trim()); return t >= round * 5 ? t : null; });
      seen.push(v);
    }
    const rising = seen.every((v, i) => v !== null && (i === 0 || v > seen[i - 1]));
    check('the depth on screen rises with each batch published (0, 5, 10, 15, 20)', rising && seen[seen.length - 1] === 20, seen.join(' → '));
    const oldest = (await page.textContent(`#q-table tr[data-queue="${Q}"] td.c-oldest`)).trim();
    check('the queue shows the age of its oldest message', /^\d+(ms|s|m)/.test(oldest), oldest);
    await page.waitForTimeout(2500); /* a few more samples for the chart */
    const legendHasQ = await page.$$eval('#q-legend span', els => els.map(e => e.textContent));
    check('the depth chart plots the deepest queues', legendHasQ.includes(Q), String(legendHasQ));
    await page.screenshot({ path: path.join(SHOTS, 'queues.png') });

    /* 4. The queue page: bindings, publish and get forms. */
    await page.click(`#q-table tr[data-queue="${Q}"] td.c-name a`);
    const bind = await until(async () => (await page.textContent('#qp-bindings tbody')).includes('(AMQP default)'));
    check('the queue page lists the default-exchange binding', bind);
    await page.fill('#qp-publish textarea[name=payload]', 'published from the dashboard');
    await page.click('#qp-publish button[type=submit]');
    const pubNote = await until(async () => (await page.textContent('#qp-publish-note')).trim());
    check('the publish form publishes to the queue', pubNote === 'published (routed)', pubNote);
    const depth = await until(async () => (await api('GET', `queues/%2F/${Q}`)).messages === 21);
    check('the published message is in the queue', depth);
    await page.fill('#qp-get input[name=count]', '2');
    await page.click('#qp-get button[type=submit]');
    const got = await until(async () => page.$$eval('#qp-messages .msg pre', els => els.length ? els.map(e => e.textContent) : null));
    check('the get form shows the first messages (requeued)', got && got.length === 2 && got[0] === 'order 1-0', String(got));
    await page.waitForTimeout(1200);
    await page.screenshot({ path: path.join(SHOTS, 'queue.png'), fullPage: true });

    /* 5. A dead letter, peeked and redriven by a click. */
    const W = 'dash-work', DLQ = 'dash-work.dlq';
    await api('PUT', 'exchanges/%2F/dash-dlx', { type: 'fanout', durable: true });
    await api('PUT', `queues/%2F/${DLQ}`, { durable: true });
    await api('POST', `bindings/%2F/e/dash-dlx/q/${DLQ}`, { routing_key: '' });
    await api('PUT', `queues/%2F/${W}`, { durable: true, arguments: { 'x-dead-letter-exchange': 'dash-dlx' } });
    await publish(W, 'job that failed');
    await api('POST', `queues/%2F/${W}/get`, { count: 1, ackmode: 'reject_requeue_false', encoding: 'auto' });
    check('the rejected message was dead-lettered', await until(async () => (await api('GET', `queues/%2F/${DLQ}`)).messages === 1));
    await page.goto(BASE + '#/dead-letters');
    const row = `#dl-table tr[data-queue="${DLQ}"]`;
    const dlCount = await until(async () => (await page.textContent(`${row} td.c-messages`)).trim() === '1');
    check('the dead-letter queue is listed with 1 message', dlCount);
    const fromQ = await until(async () => (await page.textContent(row)).includes(W) && (await page.textContent(row)).includes('rejected 1'));
    check('the row names the queue it came from and the reason', fromQ);
    await page.click(`${row} button[data-act=peek]`);
    const peek = await until(async () => { const t = await page.textContent('#dl-peek'); return t.includes('job that failed') && t.includes('rejected') ? t : null; });
    check('peek shows the dead letter with its reason and origin', peek && peek.includes(W));
    await page.screenshot({ path: path.join(SHOTS, 'dead-letters.png'), fullPage: true });
    await page.click(`${row} button[data-act=redrive]`);
    const redriveNote = await until(async () => (await page.textContent('#dl-note')).trim());
    check('the redrive click reports one message redriven', redriveNote === `redrove 1 message(s) from ${DLQ}`, redriveNote);
    const back = await until(async () => (await api('GET', `queues/%2F/${W}`)).messages === 1 && (await api('GET', `queues/%2F/${DLQ}`)).messages === 0);
    check('the message is back in its original queue and the dead-letter queue is empty', back);
    const zero = await until(async () => (await page.textContent(`${row} td.c-messages`)).trim() === '0');
    check('the page shows the dead-letter queue empty', zero);

    /* 6. An alert defined in the form: green while it holds not, red once it does. */
    await page.goto(BASE + '#/alerts');
    await page.fill('#al-form input[name=name]', 'dash-backlog');
    await page.fill('#al-form input[name=queue]', `^${Q}$`);
    await page.selectOption('#al-form select[name=metric]', 'messages');
    await page.selectOption('#al-form select[name=op]', '>');
    await page.fill('#al-form input[name=threshold]', '25');
    await page.fill('#al-form input[name=for_seconds]', '0');
    const tSave = Date.now();
    await page.click('#al-form button[type=submit]');
    /* Saving writes alerts.json with fsync: on a CI disk busy flushing other tests' data that
     * has taken seconds, so the wait is long and its length is reported. */
    const saved = await until(async () => (await page.textContent('#al-form-note')).trim(), 30000);
    const saveMs = Date.now() - tSave;
    const badge = 'tr[data-alert="dash-backlog"] .state';
    const okState = await until(async () => (await page.getAttribute(badge, 'class')).includes('state-ok'));
    const green = okState && await page.$eval(badge, e => getComputedStyle(e).backgroundColor);
    check('the new alert is ok (green) while the queue holds 21 of 25', saved === 'alert dash-backlog saved' && okState && green === 'rgb(209, 250, 229)',
      `${green}; form said "${saved}" after ${saveMs} ms`);
    for (let i = 0; i < 10; i++) await publish(Q, `more ${i}`);
    const t0 = Date.now();
    const firing = await until(async () => (await page.getAttribute(badge, 'class')).includes('state-firing'));
    const red = firing && await page.$eval(badge, e => getComputedStyle(e).backgroundColor);
    check('the alert turns red (firing) once the queue holds more than 25', firing && red === 'rgb(220, 38, 38)', `${red}, after ${Date.now() - t0} ms`);
    const text = firing && (await page.textContent(badge)).trim();
    check('the state reads FIRING and the nav shows one firing alert', text === 'FIRING' && (await until(async () => (await page.textContent('#nav-firing')).trim() === '1')), text);
    await page.screenshot({ path: path.join(SHOTS, 'alerts.png'), fullPage: true });
    await page.goto(BASE + '#/');
    const ovAlert = await until(async () => (await page.textContent('[data-stat="Alerts firing"] .v')).trim() === '1');
    check('the overview counts the firing alert', ovAlert);

    /* 7. Log out: back to the login form, credentials gone. */
    await page.click('#logout');
    check('log out shows the login form and forgets the credentials',
      await page.isVisible('#login-form') && await page.evaluate(() => !sessionStorage.getItem('ferry.auth')));

    check('no console error, page error or failed request', problems.length === 0, problems.slice(0, 5).join(' | '));
    check('nothing is loaded from outside the broker', foreign.length === 0, foreign.slice(0, 5).join(' | '));
    await ctx.close();
  } finally {
    await browser.close();
  }
}

main().then(() => {
  const failed = results.filter(r => !r.ok).length;
  console.log(`# ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed || !results.length ? 1 : 0);
}).catch(e => {
  console.log(`not ok - the check script broke: ${e.stack || e}`);
  process.exit(1);
});
