// amqplib against the broker: closing a connection while publishes are still being written.
// The client's connection.close can reach the broker ahead of publishes amqplib still has
// buffered; the broker must keep reading after its close-ok (not reset the socket), so the
// close completes (issue 8 item 8).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const { unique, cleanup, within } = require('./helpers');

test('close() completes while publishes are still in flight', { timeout: 60000 }, async (t) => {
  const q = unique('close-inflight');
  cleanup(t, { queues: [q] });
  for (let attempt = 0; attempt < 3; attempt++) {
    const conn = await amqp.connect(process.env.AMQP_URL, { timeout: 5000 });
    const errors = [];
    conn.on('error', (e) => errors.push(e));
    const ch = await conn.createChannel();
    await ch.assertQueue(q, { durable: false });
    const body = Buffer.alloc(16 * 1024, 7);
    for (let i = 0; i < 2000; i++) ch.sendToQueue(q, body); // 32 MB, written as the socket drains
    await within(20000, conn.close(), `attempt ${attempt}: connection close`);
    assert.deepEqual(errors.map(String), [], `attempt ${attempt}: connection errors`);
  }
});
