"""Helpers shared by the stream tests: publishing many events quickly but surely, and reading
a stream from a given x-stream-offset with several consumers at once."""
import time

import pika

STREAM = {"x-queue-type": "stream"}


def connect(url):
    return pika.BlockingConnection(pika.URLParameters(url))


def declare(ch, name, **extra):
    args = dict(STREAM)
    args.update(extra)
    return ch.queue_declare(name, durable=True, arguments=args)


def publish_confirmed(url, queue, bodies, props=None):
    """Publishes with confirm mode on; returns once every publish is confirmed."""
    c = connect(url)
    ch = c.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b, props)
    c.close()


def fast_publish(url, queue, bodies, props=None):
    """Publishes without waiting for each confirm: the channel goes into confirm mode only for
    its last message, which the broker confirms after everything before it is stored."""
    c = connect(url)
    ch = c.channel()
    bodies = list(bodies)
    for i, b in enumerate(bodies[:-1]):
        ch.basic_publish("", queue, b, props)
        if i % 2000 == 1999:
            c.process_data_events(0)
    ch.confirm_delivery()
    ch.basic_publish("", queue, bodies[-1], props)
    c.close()


class Reader:
    """One stream consumer on its own channel: collects (offset, body, headers)."""

    def __init__(self, conn, queue, args, prefetch=1000, want=None, ack_every=200):
        self.ch = conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        self.got = []
        self.want = want
        self.ack_every = ack_every
        self.unacked = 0
        self.tag = self.ch.basic_consume(queue, self._on, arguments=args)

    def _on(self, ch, m, p, body):
        self.got.append((p.headers["x-stream-offset"], body, dict(p.headers)))
        self.unacked += 1
        if self.unacked >= self.ack_every or (self.want and len(self.got) >= self.want):
            ch.basic_ack(m.delivery_tag, multiple=True)
            self.unacked = 0

    def done(self):
        return self.want is not None and len(self.got) >= self.want

    def offsets(self):
        return [o for o, _, _ in self.got]

    def bodies(self):
        return [b for _, b, _ in self.got]


def drain(conn, readers, timeout=60.0, settle=0.0):
    """Runs the connection until every reader with a `want` has that many, then `settle`
    seconds more (to see that nothing else comes)."""
    deadline = time.monotonic() + timeout
    while not all(r.done() for r in readers if r.want is not None):
        if time.monotonic() > deadline:
            raise AssertionError("timed out: got " + ", ".join(str(len(r.got)) for r in readers))
        conn.process_data_events(0.1)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        conn.process_data_events(0.05)
