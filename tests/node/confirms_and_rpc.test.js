// amqplib against the broker: publisher confirms, request/reply over direct reply-to, returns.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { unique, connect, cleanup, within, collector } = require('./helpers');

const T = { timeout: 15000 };

test('a confirm channel confirms every publish and waitForConfirms resolves', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createConfirmChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: true });
  const acks = [];
  for (let i = 0; i < 200; i++) {
    ch.sendToQueue(q, Buffer.from(`m${i}`), { persistent: true }, (err) => acks.push(err));
  }
  await within(10000, ch.waitForConfirms(), 'waitForConfirms');
  assert.equal(acks.length, 200);
  assert.ok(acks.every((e) => e === null || e === undefined), 'some publishes were nacked');
  assert.equal((await ch.checkQueue(q)).messageCount, 200);
});

test('a confirm channel nacks a publish that a full reject-publish queue refuses', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createConfirmChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false, arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' } });
  const outcome = (body) =>
    within(5000, new Promise((resolve) => ch.sendToQueue(q, Buffer.from(body), {}, (err) => resolve(err))), 'confirm');
  assert.equal(await outcome('fits'), null);
  const err = await outcome('overflows');
  assert.ok(err, 'expected a nack for the publish the full queue refused');
  assert.equal((await ch.checkQueue(q)).messageCount, 1);
});

test('request/reply over direct reply-to (amq.rabbitmq.reply-to) round trips', T, async (t) => {
  const conn = await connect(t);
  const server = await conn.createChannel();
  const client = await conn.createChannel();
  const rpcQueue = unique('rpc');
  cleanup(t, { queues: [rpcQueue] });
  await server.assertQueue(rpcQueue, { durable: false });
  const seenReplyTo = [];
  await server.consume(rpcQueue, (msg) => {
    seenReplyTo.push(msg.properties.replyTo);
    const n = Number(msg.content.toString());
    server.sendToQueue(msg.properties.replyTo, Buffer.from(String(n * n)), {
      correlationId: msg.properties.correlationId,
    });
    server.ack(msg);
  });
  const replies = collector();
  // the pseudo-queue must be consumed with noAck before publishing with it as reply-to
  await client.consume('amq.rabbitmq.reply-to', (m) => replies.push(m), { noAck: true });
  for (let i = 1; i <= 5; i++) {
    client.sendToQueue(rpcQueue, Buffer.from(String(i)), {
      replyTo: 'amq.rabbitmq.reply-to',
      correlationId: `req-${i}`,
    });
  }
  const got = await replies.waitFor(5);
  const byId = Object.fromEntries(got.map((m) => [m.properties.correlationId, m.content.toString()]));
  assert.deepEqual(byId, { 'req-1': '1', 'req-2': '4', 'req-3': '9', 'req-4': '16', 'req-5': '25' });
  // the broker rewrites reply-to into a routable per-channel name
  for (const r of seenReplyTo) assert.match(r, /^amq\.rabbitmq\.reply-to\../);
});

test('direct reply-to cannot be used as reply-to without consuming it first', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  const closed = new Promise((resolve) => ch.on('error', resolve));
  ch.sendToQueue(q, Buffer.from('x'), { replyTo: 'amq.rabbitmq.reply-to' });
  const err = await within(5000, closed, 'channel error');
  assert.equal(err.code, 406);
});

test('an unroutable mandatory publish comes back as basic.return', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const ex = unique('x');
  cleanup(t, { exchanges: [ex] });
  await ch.assertExchange(ex, 'direct', { durable: false });
  const returned = new Promise((resolve) => ch.on('return', resolve));
  ch.publish(ex, 'nobody-bound', Buffer.from('lost?'), { mandatory: true, messageId: 'ret-1' });
  const msg = await within(5000, returned, 'basic.return');
  assert.equal(msg.fields.replyCode, 312);
  assert.equal(msg.fields.replyText, 'NO_ROUTE');
  assert.equal(msg.fields.exchange, ex);
  assert.equal(msg.fields.routingKey, 'nobody-bound');
  assert.equal(msg.properties.messageId, 'ret-1');
  assert.equal(msg.content.toString(), 'lost?');
});
