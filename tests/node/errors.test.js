// amqplib against the broker: channel errors close the channel with the spec's reply code and
// leave the connection (and its other channels) working.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { unique, connect, cleanup, within, collector } = require('./helpers');

const T = { timeout: 15000 };

test('checkQueue on a missing queue fails with 404 and closes only that channel', T, async (t) => {
  const conn = await connect(t);
  let connectionClosed = false;
  conn.on('close', () => {
    connectionClosed = true;
  });
  const bystander = await conn.createChannel();
  const ch = await conn.createChannel();
  const channelClosed = new Promise((resolve) => ch.on('close', resolve));
  ch.on('error', () => {});
  await assert.rejects(ch.checkQueue(unique('missing')), (err) => {
    assert.equal(err.code, 404);
    assert.match(err.message, /NOT_FOUND/);
    return true;
  });
  await within(5000, channelClosed, 'channel close');
  await assert.rejects(ch.checkQueue('whatever'), /closed/i);
  // the connection and the other channel still work, and new channels can be opened
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await bystander.assertQueue(q, { durable: false });
  const fresh = await conn.createChannel();
  assert.equal((await fresh.checkQueue(q)).messageCount, 0);
  assert.equal(connectionClosed, false);
});

test('publishing to a missing exchange closes the channel with 404', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const failed = new Promise((resolve) => ch.on('error', resolve));
  ch.publish(unique('no-such-exchange'), 'rk', Buffer.from('x'));
  const err = await within(5000, failed, 'channel error');
  assert.equal(err.code, 404);
  const other = await conn.createChannel();
  await other.assertQueue('', { exclusive: true });
});

test('redeclaring a queue with different arguments fails with 406 PRECONDITION_FAILED', T, async (t) => {
  const conn = await connect(t);
  const q = unique('q');
  cleanup(t, { queues: [q] });
  const ch = await conn.createChannel();
  await ch.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': 60000 } });
  await ch.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': 60000 } }); // same: fine
  const ch2 = await conn.createChannel();
  ch2.on('error', () => {});
  await assert.rejects(ch2.assertQueue(q, { durable: true }), (err) => err.code === 406);
  const ch3 = await conn.createChannel();
  ch3.on('error', () => {});
  await assert.rejects(ch3.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': 1000 } }),
    (err) => err.code === 406);
});

test('an exclusive queue cannot be used from another connection (405 RESOURCE_LOCKED)', T, async (t) => {
  const owner = await connect(t);
  const other = await connect(t);
  const och = await owner.createChannel();
  const { queue } = await och.assertQueue('', { exclusive: true });
  const ch = await other.createChannel();
  ch.on('error', () => {});
  await assert.rejects(ch.consume(queue, () => {}), (err) => err.code === 405);
});

test('acking an unknown delivery tag closes the channel with 406', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const failed = new Promise((resolve) => ch.on('error', resolve));
  ch.ack({ fields: { deliveryTag: 999 } });
  const err = await within(5000, failed, 'channel error');
  assert.equal(err.code, 406);
});

test('deleting a consumed queue sends the consumer a cancel (consumer_cancel_notify)', T, async (t) => {
  const conn = await connect(t);
  const ch = await conn.createChannel();
  const q = unique('q');
  cleanup(t, { queues: [q] });
  await ch.assertQueue(q, { durable: false });
  const inbox = collector();
  await ch.consume(q, (m) => inbox.push(m));
  const admin = await conn.createChannel();
  await admin.deleteQueue(q);
  const [m] = await inbox.waitFor(1);
  assert.equal(m, null, 'amqplib delivers null to the consumer on basic.cancel from the broker');
  // the channel stays open
  await ch.assertQueue('', { exclusive: true });
});
