// node amqplib over amqps:// (tests/tls/test_tls_clients.py): connects with the test CA,
// declares a queue, publishes, consumes the message back, and prints what it saw as JSON.
'use strict';
const amqp = require('amqplib');
const fs = require('node:fs');

async function main() {
  const url = process.env.AMQPS_URL;
  const opts = { ca: [fs.readFileSync(process.env.CA_FILE)], servername: 'localhost', timeout: 5000 };
  const conn = await amqp.connect(url, opts);
  const stream = conn.connection.stream;
  const cert = stream.getPeerCertificate();
  const ch = await conn.createChannel();
  const q = (await ch.assertQueue('', { exclusive: true })).queue;
  const body = Buffer.alloc(200000, 'n'); // larger than one TLS record
  ch.sendToQueue(q, body);
  const got = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within 5 s')), 5000);
    ch.consume(q, (m) => { clearTimeout(timer); resolve(m); }, { noAck: true });
  });
  await conn.close();
  console.log(JSON.stringify({
    encrypted: stream.encrypted === true,
    authorized: stream.authorized,
    protocol: stream.getProtocol(),
    serial: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    length: got.content.length,
    same: got.content.equals(body),
  }));
}

main().catch((e) => { console.error(e && e.stack ? e.stack : String(e)); process.exit(1); });
