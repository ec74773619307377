"""x-single-active-consumer: one consumer gets the messages; when it goes (cancel or
channel close) the next registered consumer takes over, unacked messages first."""
import time

import pika

from helpers import crash, wait_count


class Recorder:
    def __init__(self, ch, queue, auto_ack=False, prefetch=None):
        self.ch, self.got = ch, []
        if prefetch:
            ch.basic_qos(prefetch_count=prefetch)
        self.tag = ch.basic_consume(queue, self.on, auto_ack=auto_ack)

    def on(self, ch, m, p, b):
        self.got.append((m, b))


def pump(conn, until, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    return until()


def sac_queue(ch, name):
    q = name("q")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    return q


def test_only_the_first_consumer_receives_messages(conn, ch, name):
    q = sac_queue(ch, name)
    a, b = Recorder(conn.channel(), q, auto_ack=True), Recorder(conn.channel(), q, auto_ack=True)
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    pump(conn, lambda: len(a.got) == 10)
    conn.process_data_events(time_limit=0.2)
    assert [x[1] for x in a.got] == [str(i).encode() for i in range(10)]
    assert b.got == []
    ch.queue_delete(q)


def test_cancelling_the_active_consumer_fails_over_to_the_next(conn, ch, name):
    q = sac_queue(ch, name)
    a, b = Recorder(conn.channel(), q, auto_ack=True), Recorder(conn.channel(), q, auto_ack=True)
    ch.basic_publish("", q, b"1")
    pump(conn, lambda: len(a.got) == 1)
    a.ch.basic_cancel(a.tag)
    ch.basic_publish("", q, b"2")
    pump(conn, lambda: len(b.got) == 1)
    assert [x[1] for x in b.got] == [b"2"] and len(a.got) == 1
    ch.queue_delete(q)


def test_active_consumer_crash_redelivers_its_unacked_to_the_next_in_order(broker, conn, ch, name):
    q = sac_queue(ch, name)
    conn_a = pika.BlockingConnection(pika.URLParameters(broker.url))
    a = Recorder(conn_a.channel(), q, prefetch=3)
    b = Recorder(conn.channel(), q)
    for i in range(6):
        ch.basic_publish("", q, str(i).encode())
    pump(conn_a, lambda: len(a.got) == 3)
    assert [x[1] for x in a.got] == [b"0", b"1", b"2"]
    crash(conn_a)  # the consumer dies holding 0, 1 and 2
    pump(conn, lambda: len(b.got) == 6)
    assert [x[1] for x in b.got] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert [x[0].redelivered for x in b.got] == [True, True, True, False, False, False]
    ch.queue_delete(q)


def test_a_full_active_consumer_is_not_bypassed(conn, ch, name):
    q = sac_queue(ch, name)
    a = Recorder(conn.channel(), q, prefetch=1)
    b = Recorder(conn.channel(), q)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    pump(conn, lambda: len(a.got) == 1)
    conn.process_data_events(time_limit=0.2)
    assert len(a.got) == 1 and b.got == []
    assert wait_count(ch, q, 2) == 2
    ch.queue_delete(q)
