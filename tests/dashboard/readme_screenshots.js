/* readme_screenshots.js — makes the README's dashboard screenshots (docs/screenshots/): a few
 * minutes of traffic with a changing backlog, so the charts have something to show. Not a test
 * (test_dashboard.py is); run by hand against a ferryd with --http-port:
 *   BASE_URL=http://127.0.0.1:15672/ SHOT_DIR=docs/screenshots SECONDS=180 node tests/dashboard/readme_screenshots.js */
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const BASE = (process.env.BASE_URL || 'http://127.0.0.1:15672/').replace(/\/?$/, '/');
const SHOTS = process.env.SHOT_DIR || 'docs/screenshots';
const SECONDS = Number(process.env.SECONDS || 180);
const AUTH = 'Basic ' + Buffer.from('guest:guest').toString('base64');
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function api(method, p, body) {
  const r = await fetch(BASE + 'api/' + p, { method, headers: { Authorization: AUTH, 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const t = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${t}`);
  return t ? JSON.parse(t) : null;
}
const publish = (q, payload, headers) => api('POST', 'exchanges/%2F/amq.default/publish', { properties: { delivery_mode: 2, content_type: 'application/json', headers: headers || {} }, routing_key: q, payload, payload_encoding: 'string' });
const take = (q, n, ackmode = 'ack_requeue_false') => api('POST', `queues/%2F/${q}/get`, { count: n, ackmode, encoding: 'auto' });

(async () => {
  await api('PUT', 'exchanges/%2F/orders.dlx', { type: 'fanout', durable: true });
  await api('PUT', 'queues/%2F/orders.dead', { durable: true });
  await api('POST', 'bindings/%2F/e/orders.dlx/q/orders.dead', { routing_key: '' });
  for (const q of ['orders', 'emails', 'payments', 'thumbnails'])
    await api('PUT', `queues/%2F/${q}`, { durable: true, arguments: q === 'orders' ? { 'x-dead-letter-exchange': 'orders.dlx' } : {} });
  await api('PUT', 'ferry/alerts/orders-backlog', { vhost: '/', queue: '^orders$', metric: 'messages', op: '>', threshold: 150, for_seconds: 10 });
  await api('PUT', 'ferry/alerts/payments-stuck', { vhost: '/', queue: '^payments$', metric: 'oldest_message_age_seconds', op: '>', threshold: 600, for_seconds: 30 });
  await api('PUT', 'ferry/alerts/emails-no-consumer', { vhost: '/', queue: '^emails$', metric: 'consumers', op: '<', threshold: 1, for_seconds: 60 });

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(BASE);
  await page.fill('#login-user', 'guest');
  await page.fill('#login-pass', 'guest');
  await page.click('#login-form button');
  await page.waitForSelector('#ov-cards .stat');
  await page.selectOption('#refresh', '1000');
  await page.goto(BASE + '#/queues');
  const start = Date.now();
  for (let s = 0; (Date.now() - start) / 1000 < SECONDS; s++) {
    const phase = (Date.now() - start) / 1000 / SECONDS;
    const burst = Math.round(6 + 5 * Math.sin(phase * 2 * Math.PI * 2));
    for (let i = 0; i < burst; i++) await publish('orders', JSON.stringify({ order: s * 100 + i, total: 19.9 }), { tenant: 'acme' });
    for (let i = 0; i < 3; i++) await publish('emails', JSON.stringify({ to: `user${s}@example.com` }));
    if (s % 2 === 0) await publish('payments', JSON.stringify({ payment: s }));
    if (s % 3 === 0) await publish('thumbnails', JSON.stringify({ image: `img-${s}.png` }));
    if (phase > 0.5) await take('orders', 8);
    if (phase > 0.3) await take('emails', 3);
    if (s % 15 === 5) await take('orders', 2, 'reject_requeue_false');
    await sleep(1000);
  }
  await page.screenshot({ path: path.join(SHOTS, 'queues.png') });
  await page.goto(BASE + '#/');
  await sleep(1500);
  await page.screenshot({ path: path.join(SHOTS, 'overview.png'), fullPage: true });
  await page.goto(BASE + '#/queue/%2F/orders');
  await sleep(1500);
  await page.fill('#qp-get input[name=count]', '2');
  await page.click('#qp-get button[type=submit]');
  await sleep(1000);
  await page.screenshot({ path: path.join(SHOTS, 'queue.png'), fullPage: true });
  await page.goto(BASE + '#/dead-letters');
  await sleep(1500);
  await page.click('#dl-table tr[data-queue="orders.dead"] button[data-act=peek]');
  await sleep(1000);
  await page.screenshot({ path: path.join(SHOTS, 'dead-letters.png'), fullPage: true });
  await page.goto(BASE + '#/alerts');
  await sleep(1500);
  await page.screenshot({ path: path.join(SHOTS, 'alerts.png'), fullPage: true });
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
