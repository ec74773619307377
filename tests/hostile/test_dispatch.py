"""Delivery when every ready message expires on the way (issue 8, item 2).

queue_dispatch saw ready messages and a consumer with credit, then popped: but the pop
expires the head first (a message expires when it reaches the head past its time), and if
every ready message had expired since the TTL timer last ran, the pop found nothing.
queue_dispatch ignored that and delivered an uninitialised entry.

To make that window certain rather than lucky, one write carries: messages with a 1 ms
expiration, then a few milliseconds of other work (publishes to another queue), then
basic.consume. The broker reads it all in one batch, its TTL timer cannot run inside the
batch, so at dispatch the TTL queue still counts its messages while every one has expired."""
import pytest

import pipeline as p
from hostile_lib import still_serves


def test_consume_when_every_ready_message_expired_within_the_batch(ferryd):
    c = p.open_conn(ferryd)
    c.send(p.queue_declare("filler", arguments={"x-max-length": 10}))
    filler = b"".join(p.publish("", "filler", b"x" * 64) for _ in range(1500))
    for i in range(8):
        q = f"ttl-{i}"
        data = p.queue_declare(q)
        data += b"".join(p.publish("", q, b"short-lived", expiration="1") for _ in range(20))
        data += filler  # a few ms of work in the same batch: the 1 ms expirations pass
        data += p.basic_consume(q, tag=f"c{i}", no_ack=True)
        c.send(data)
        p.sync(c)  # (deliveries of messages that had not expired yet are read and skipped)
        c.send(p.queue_delete(q))
        p.sync(c)
    c.close()
    assert still_serves(ferryd)


def test_no_expired_message_is_delivered_to_a_late_consumer(ferryd, connect):
    """The other side of the contract: what the pop drops as expired is never delivered."""
    ch = connect().channel()
    q = ch.queue_declare("ttl-late", arguments={"x-message-ttl": 50}).method.queue
    for _ in range(100):
        ch.basic_publish("", q, b"m")
    connect().sleep(0.3)
    got = []
    ch.basic_consume(q, lambda c, m, pr, b: got.append(b), auto_ack=True)
    ch.connection.process_data_events(time_limit=0.5)
    assert got == []
    assert still_serves(ferryd)
