// Shared helpers for the amqplib tests: the broker URL, unique names, bounded waits.
'use strict';
const amqp = require('amqplib');
const crypto = require('node:crypto');

const URL = process.env.AMQP_URL;
if (!URL) {
  throw new Error('AMQP_URL is not set (e.g. AMQP_URL=amqp://guest:guest@127.0.0.1:5672/)');
}

// A queue or exchange name that no other test or test run uses.
function unique(what) {
  return `ferry.test.node.${what}.${crypto.randomUUID()}`;
}

// Connect with a bounded handshake; `t.after` closes the connection whatever the outcome.
// `query` adds URL parameters (e.g. { heartbeat: 30, frameMax: 8192 }).
async function connect(t, query = {}) {
  const url = new globalThis.URL(URL);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, String(v));
  const conn = await amqp.connect(url.toString(), { timeout: 5000 });
  conn.on('error', () => {}); // a test that expects an error asserts it explicitly
  t.after(async () => {
    try {
      await conn.close();
    } catch (_) {
      // already closed
    }
  });
  return conn;
}

// Deletes `queues` (and `exchanges`) when the test ends, on a connection of its own: the
// test's connection may be closed (or broken, on purpose) by then.
function cleanup(t, { queues = [], exchanges = [] }) {
  t.after(async () => {
    const conn = await amqp.connect(URL, { timeout: 5000 });
    conn.on('error', () => {});
    try {
      for (const [kind, names] of [['queue', queues], ['exchange', exchanges]]) {
        for (const name of names) {
          const ch = await conn.createChannel();
          ch.on('error', () => {});
          if (kind === 'queue') await ch.deleteQueue(name);
          else await ch.deleteExchange(name);
          await ch.close();
        }
      }
    } finally {
      await conn.close();
    }
  });
}

// Resolves with the value of `promise`, or rejects after `ms` milliseconds.
function within(ms, promise, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls checkQueue until the queue holds `n` ready messages (bounded). Publishing is
// asynchronous in AMQP, so a test that counts must wait for the broker to catch up.
async function waitForDepth(ch, queue, n, ms = 5000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = (await ch.checkQueue(queue)).messageCount;
    if (last === n) return;
    if (Date.now() > deadline) throw new Error(`queue ${queue} holds ${last} messages, expected ${n}`);
    await sleep(20);
  }
}

// Collects deliveries; `waitFor(n)` resolves once n have arrived (bounded).
function collector() {
  const messages = [];
  const waiters = [];
  return {
    messages,
    push(msg) {
      messages.push(msg);
      for (const w of waiters.slice()) {
        if (messages.length >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(messages);
        }
      }
    },
    waitFor(n, ms = 5000) {
      if (messages.length >= n) return Promise.resolve(messages);
      return within(ms, new Promise((resolve) => waiters.push({ n, resolve })), `receiving ${n} messages`);
    },
  };
}

module.exports = { amqp, URL, unique, connect, cleanup, within, sleep, waitForDepth, collector };
