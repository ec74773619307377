// amqplib against the broker: connecting, declaring, publishing, consuming, acks, prefetch, get, nack.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { unique, connect, cleanup, within, sleep, waitForDepth, collector } = require('./helpers');

const T = { timeout: 15000 };

test('connect negotiates frame size and heartbeat and the server advertises RabbitMQ capabilities', T, async (t) => {
  const conn = await connect(t, { heartbeat: 30 });
  assert.equal(conn.connection.heartbeat, 30); // we asked for less than the server's default
  const c = conn.connection;
  assert.ok(c.frameMax >= 4096, `frameMax ${c.frameMax}`);
  const caps = c.serverProperties.capabilities;
  for (const cap of ['publisher_confirms', 'basic.nack', 'consumer_cancel_notify', 'exchange_exchange_bindings',
    'per_consumer_qos', 'direct_reply_to', 'connection.blocked', 'authentication_failure_close']) {
    assert.equal(caps[cap], true, `capability ${cap}`);
  }
});

test('assertQueue creates a queue and reports its depth and consumers', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  const ok = await ch.assertQueue(q, { durable: true });
  assert.deepEqual(ok, { queue: q, messageCount: 0, consumerCount: 0 });
  ch.sendToQueue(q, Buffer.from('one'));
  ch.sendToQueue(q, Buffer.from('two'));
  await waitForDepth(ch, q, 2);
  const again = await ch.assertQueue(q, { durable: true }); // redeclare: same queue, same depth
  assert.deepEqual(again, { queue: q, messageCount: 2, consumerCount: 0 });
});

test('assertQueue with an empty name gets a server-generated exclusive queue', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const ok = await ch.assertQueue('', { exclusive: true });
  assert.match(ok.queue, /^amq\.gen-/);
  ch.sendToQueue(ok.queue, Buffer.from('to myself'));
  const msg = await within(5000, (async () => {
    for (;;) {
      const m = await ch.get(ok.queue, { noAck: true });
      if (m) return m;
      await sleep(20);
    }
  })(), 'get');
  assert.equal(msg.content.toString(), 'to myself');
});

test('assertExchange and bindQueue route by topic pattern, fanout to every bound queue', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const topic = unique('topic');
  const fanout = unique('fanout');
  const [qa, qb] = [unique('qa'), unique('qb')];
  cleanup(t, { queues: [qa, qb], exchanges: [topic, fanout] });
  assert.deepEqual(await ch.assertExchange(topic, 'topic', { durable: false }), { exchange: topic });
  await ch.assertExchange(fanout, 'fanout', { durable: false });
  await ch.checkExchange(topic);
  await ch.assertQueue(qa, { durable: false });
  await ch.assertQueue(qb, { durable: false });
  await ch.bindQueue(qa, topic, 'sensor.*.temp');
  await ch.bindQueue(qb, topic, 'sensor.#');
  await ch.bindQueue(qa, fanout, 'ignored');
  await ch.bindQueue(qb, fanout, '');
  ch.publish(topic, 'sensor.kitchen.temp', Buffer.from('t1'));
  ch.publish(topic, 'sensor.kitchen.humidity', Buffer.from('h1'));
  ch.publish(topic, 'other.kitchen.temp', Buffer.from('x'));
  ch.publish(fanout, 'whatever', Buffer.from('f1'));
  const drain = async (q) => {
    const got = [];
    for (;;) {
      const m = await ch.get(q, { noAck: true });
      if (!m) return got;
      got.push(m.content.toString());
    }
  };
  await waitForDepth(ch, qa, 2);
  await waitForDepth(ch, qb, 3);
  assert.deepEqual(await drain(qa), ['t1', 'f1']);
  assert.deepEqual(await drain(qb), ['t1', 'h1', 'f1']);
});

test('published messages are consumed in order with their properties and headers, and acked', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: true });
  const inbox = collector();
  const { consumerTag } = await ch.consume(q, (m) => inbox.push(m), { noAck: false });
  assert.ok(consumerTag.length > 0);
  for (let i = 0; i < 20; i++) {
    ch.sendToQueue(q, Buffer.from(`msg-${i}`), {
      persistent: true,
      contentType: 'text/plain',
      contentEncoding: 'utf-8',
      correlationId: `c-${i}`,
      messageId: `m-${i}`,
      priority: 3,
      timestamp: 1700000000 + i,
      type: 'ferry.test',
      appId: 'node-test',
      headers: { 'x-seq': i, str: 'ü', nested: { a: [1, 'b', true] }, flag: false },
    });
  }
  const got = await inbox.waitFor(20);
  assert.deepEqual(got.map((m) => m.content.toString()), Array.from({ length: 20 }, (_, i) => `msg-${i}`));
  const m = got[7];
  assert.equal(m.fields.routingKey, q);
  assert.equal(m.fields.exchange, '');
  assert.equal(m.fields.redelivered, false);
  assert.equal(m.fields.consumerTag, consumerTag);
  assert.equal(m.properties.deliveryMode, 2);
  assert.equal(m.properties.contentType, 'text/plain');
  assert.equal(m.properties.contentEncoding, 'utf-8');
  assert.equal(m.properties.correlationId, 'c-7');
  assert.equal(m.properties.messageId, 'm-7');
  assert.equal(m.properties.priority, 3);
  assert.equal(m.properties.timestamp, 1700000007);
  assert.equal(m.properties.type, 'ferry.test');
  assert.equal(m.properties.appId, 'node-test');
  assert.deepEqual(m.properties.headers, { 'x-seq': 7, str: 'ü', nested: { a: [1, 'b', true] }, flag: false });
  for (const msg of got) ch.ack(msg);
  await ch.cancel(consumerTag);
  const ok = await ch.checkQueue(q);
  assert.deepEqual([ok.messageCount, ok.consumerCount], [0, 0]);
});

test('a large message spanning many frames arrives intact', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  const body = Buffer.alloc(3 * 1024 * 1024 + 17);
  for (let i = 0; i < body.length; i++) body[i] = (i * 31 + 7) & 0xff;
  ch.sendToQueue(q, body);
  const inbox = collector();
  await ch.consume(q, (m) => inbox.push(m), { noAck: true });
  const [m] = await inbox.waitFor(1, 10000);
  assert.equal(m.content.length, body.length);
  assert.ok(m.content.equals(body), 'body differs');
});

test('prefetch limits unacked deliveries per consumer', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  await ch.prefetch(2);
  for (let i = 0; i < 6; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  const inbox = collector();
  await ch.consume(q, (m) => inbox.push(m), { noAck: false });
  await inbox.waitFor(2);
  await sleep(500); // the broker must hold back the rest while two are unacked
  assert.deepEqual(inbox.messages.map((m) => m.content.toString()), ['0', '1']);
  ch.ack(inbox.messages[0]);
  await inbox.waitFor(3);
  await sleep(300);
  assert.equal(inbox.messages.length, 3);
  ch.ack(inbox.messages[2], true); // multiple: acks deliveries 2 and 3
  await inbox.waitFor(5);
  await sleep(300);
  assert.deepEqual(inbox.messages.map((m) => m.content.toString()), ['0', '1', '2', '3', '4']);
  ch.ackAll();
  await inbox.waitFor(6);
});

test('get returns false on an empty queue and a message with the remaining count otherwise', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  assert.equal(await ch.get(q), false);
  for (const b of ['a', 'b', 'c']) ch.sendToQueue(q, Buffer.from(b));
  await waitForDepth(ch, q, 3);
  const m = await ch.get(q, { noAck: false });
  assert.equal(m.content.toString(), 'a');
  assert.equal(m.fields.messageCount, 2);
  assert.equal(m.fields.redelivered, false);
  ch.ack(m);
  const m2 = await ch.get(q, { noAck: true });
  assert.equal(m2.content.toString(), 'b');
  assert.equal(m2.fields.messageCount, 1);
  assert.equal((await ch.checkQueue(q)).messageCount, 1);
});

test('nack with requeue redelivers with the redelivered flag; nack without requeue drops', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  ch.sendToQueue(q, Buffer.from('keep'));
  ch.sendToQueue(q, Buffer.from('drop'));
  await waitForDepth(ch, q, 2);
  const keep = await ch.get(q);
  const drop = await ch.get(q);
  ch.nack(drop, false, false);
  ch.nack(keep, false, true);
  const again = await within(5000, (async () => {
    for (;;) {
      const m = await ch.get(q);
      if (m) return m;
      await sleep(20);
    }
  })(), 'requeued message');
  assert.equal(again.content.toString(), 'keep');
  assert.equal(again.fields.redelivered, true);
  ch.ack(again);
  assert.equal(await ch.get(q), false);
});

test('nack with allUpTo requeues every earlier unacked delivery', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  for (const b of ['1', '2', '3']) ch.sendToQueue(q, Buffer.from(b));
  const inbox = collector();
  const { consumerTag } = await ch.consume(q, (m) => inbox.push(m), { noAck: false });
  await inbox.waitFor(3);
  await ch.cancel(consumerTag);
  ch.nack(inbox.messages[2], true, true); // all three back to the queue, in their original order
  await waitForDepth(ch, q, 3);
  const order = [];
  for (let i = 0; i < 3; i++) {
    const m = await ch.get(q, { noAck: true });
    assert.equal(m.fields.redelivered, true);
    order.push(m.content.toString());
  }
  assert.deepEqual(order, ['1', '2', '3']);
});

test('closing a channel returns its unacked messages to the queue', T, async (t) => {
  const conn = await connect(t);
  const q = unique('q');
  cleanup(t, { queues: [q] });
  const ch1 = await conn.createChannel();
  await ch1.assertQueue(q, { durable: false });
  ch1.sendToQueue(q, Buffer.from('unfinished'));
  const m = await within(5000, (async () => {
    for (;;) {
      const r = await ch1.get(q);
      if (r) return r;
      await sleep(20);
    }
  })(), 'get');
  assert.equal(m.content.toString(), 'unfinished');
  await ch1.close();
  const ch2 = await conn.createChannel();
  const back = await ch2.get(q, { noAck: true });
  assert.ok(back, 'message did not return to the queue when its channel closed');
  assert.equal(back.content.toString(), 'unfinished');
  assert.equal(back.fields.redelivered, true);
});
