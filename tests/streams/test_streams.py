"""Streams over AMQP 0-9-1 (x-queue-type stream) against a real ferryd, with pika.

100,000 events appended, replayed from first, a numeric offset, a timestamp, an interval,
next and last by several consumers at once, with ferryd restarted (SIGTERM and kill -9) in
between; retention dropping whole segments; named offsets (x-ferry-offset-name) resuming
after a restart and after the consumer's process is killed.
"""
import datetime
import math
import os
import signal
import subprocess
import sys
import time

import pika
import pytest

from streamlib import Reader, connect, declare, drain, fast_publish, publish_confirmed

N = 100_000


def body(i):
    return b"event-%06d" % i


def segment_files(d, suffix=".seg"):
    root = os.path.join(d.data_dir, "streams")
    out = []
    for sub in os.listdir(root):
        out += [f for f in os.listdir(os.path.join(root, sub)) if f.endswith(suffix)]
    return sorted(out)


def test_replay_100k_from_every_kind_of_offset_across_restarts(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    ch = c.channel()
    ok = declare(ch, "events", **{"x-stream-max-segment-size-bytes": 1_000_000})
    assert ok.method.message_count == 0
    c.close()
    # Batch A, then a whole second boundary T, then batch B: a timestamp start at T sees B.
    half = N // 2
    fast_publish(d.url, "events", [body(i) for i in range(half)])
    t = math.ceil(time.time()) + 1
    while time.time() < t + 0.2:
        time.sleep(0.05)
    fast_publish(d.url, "events", [body(i) for i in range(half, N)])
    assert len(segment_files(d)) >= 3  # ~2.6 MB of records in segments of 1 MB

    d.stop_and_check()  # a clean restart: the stream is read back from its files
    d.start()

    c = connect(d.url)
    readers = [
        Reader(c, "events", {"x-stream-offset": "first"}, want=N + 5),
        Reader(c, "events", {"x-stream-offset": 77_777}, want=N + 5 - 77_777),
        Reader(c, "events", {"x-stream-offset": datetime.datetime.fromtimestamp(t)}, want=N + 5 - half),
        Reader(c, "events", {"x-stream-offset": "1h"}, want=N + 5),
        Reader(c, "events", {"x-stream-offset": "last"}, want=1 + 5),
        Reader(c, "events", {"x-stream-offset": "next"}, want=5),
        Reader(c, "events", {}, want=5),  # no x-stream-offset: next, as RabbitMQ
    ]
    c.process_data_events(0.3)  # every consumer is attached before the new events come
    publish_confirmed(d.url, "events", [body(i) for i in range(N, N + 5)])
    drain(c, readers, timeout=110, settle=0.3)
    first, numeric, stamp, interval, last, nxt, default = readers
    assert first.offsets() == list(range(N + 5)) and first.bodies() == [body(i) for i in range(N + 5)]
    assert numeric.offsets() == list(range(77_777, N + 5))
    assert stamp.offsets() == list(range(half, N + 5)), "a timestamp start is the first event at or after it"
    assert interval.offsets() == list(range(N + 5))
    assert last.offsets() == [N - 1] + list(range(N, N + 5))
    assert nxt.offsets() == list(range(N, N + 5)) and nxt.bodies() == [body(i) for i in range(N, N + 5)]
    assert default.offsets() == list(range(N, N + 5))
    # every delivery: the offset header (a long), routing as published, never redelivered
    assert all(isinstance(h["x-stream-offset"], int) for _, _, h in first.got[:10])
    c.close()

    d.kill9()  # unclean: what was confirmed is still there, in order
    d.start()
    c = connect(d.url)
    again = Reader(c, "events", {"x-stream-offset": N - 1000}, want=1005)
    drain(c, [again], timeout=60, settle=0.3)
    assert again.offsets() == list(range(N - 1000, N + 5))
    c.close()


def test_acks_remove_nothing_and_consumers_are_independent(broker):
    c = connect(broker.url)
    ch = c.channel()
    ch.queue_delete("indep")
    declare(ch, "indep")
    publish_confirmed(broker.url, "indep", [body(i) for i in range(50)])
    a = Reader(c, "indep", {"x-stream-offset": "first"}, prefetch=7, want=50, ack_every=1)
    b = Reader(c, "indep", {"x-stream-offset": 10}, prefetch=3, want=40, ack_every=1)
    drain(c, [a, b], settle=0.2)
    assert a.offsets() == list(range(50)) and b.offsets() == list(range(10, 50))
    d = Reader(c, "indep", {"x-stream-offset": "first"}, want=50)
    drain(c, [d])
    assert d.offsets() == list(range(50)), "acknowledged events are still in the stream"
    assert ch.queue_declare("indep", passive=True).method.consumer_count == 3
    ch.queue_delete("indep")
    c.close()


def test_prefetch_bounds_unacked_deliveries(broker):
    c = connect(broker.url)
    ch = c.channel()
    ch.queue_delete("pf")
    declare(ch, "pf")
    publish_confirmed(broker.url, "pf", [body(i) for i in range(100)])
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume("pf", lambda ch_, m, p, b: got.append(m.delivery_tag), arguments={"x-stream-offset": "first"})
    c.process_data_events(0.5)
    assert len(got) == 10, "no more than the prefetch without acks"
    ch.basic_ack(got[-1], multiple=True)
    c.process_data_events(0.5)
    assert len(got) == 20
    ch.queue_delete("pf")
    c.close()


@pytest.mark.ferry_only  # RabbitMQ 3.10 has no filtering
def test_filtering_as_rabbitmq_3_13(broker):
    c = connect(broker.url)
    ch = c.channel()
    ch.queue_delete("filt")
    declare(ch, "filt")
    ch.confirm_delivery()
    for i in range(30):
        region = ["eu", "us", None][i % 3]
        headers = {"x-stream-filter-value": region} if region else None
        ch.basic_publish("", "filt", body(i), pika.BasicProperties(headers=headers))
    eu = Reader(c, "filt", {"x-stream-offset": "first", "x-stream-filter": "eu"}, want=10)
    both = Reader(c, "filt", {"x-stream-offset": "first", "x-stream-filter": ["eu", "us"]}, want=20)
    unf = Reader(c, "filt", {"x-stream-offset": "first", "x-stream-filter": "us", "x-stream-match-unfiltered": True},
                 want=20)
    drain(c, [eu, both, unf], settle=0.3)
    assert eu.offsets() == list(range(0, 30, 3))
    assert both.offsets() == [i for i in range(30) if i % 3 != 2]
    assert unf.offsets() == [i for i in range(30) if i % 3 != 0]
    ch.queue_delete("filt")
    c.close()


def test_retention_by_bytes_drops_whole_oldest_segments(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    ch = c.channel()
    declare(ch, "ret", **{"x-stream-max-segment-size-bytes": 20_000, "x-max-length-bytes": 60_000})
    publish_confirmed(d.url, "ret", [b"x" * 200 for _ in range(1000)])  # ~250 KB of records
    files = segment_files(d)
    assert 3 <= len(files) <= 5, files  # about max-length-bytes / segment size, plus the active one
    first = int(files[0][:-4], 16)
    assert first > 0
    r = Reader(c, "ret", {"x-stream-offset": "first"}, want=1000 - first)
    drain(c, [r], settle=0.3)
    assert r.offsets() == list(range(first, 1000)), "first is the oldest offset still stored"
    r2 = Reader(c, "ret", {"x-stream-offset": 3}, want=1000 - first)
    drain(c, [r2])
    assert r2.offsets()[0] == first, "an offset no longer stored starts at the first one"
    c.close()
    d.stop_and_check()
    d.start()
    assert segment_files(d) == files
    assert segment_files(d, ".idx") == [f[:-4] + ".idx" for f in files]


def test_retention_by_age(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    ch = c.channel()
    declare(ch, "aged", **{"x-stream-max-segment-size-bytes": 5_000, "x-max-age": "2s"})
    publish_confirmed(d.url, "aged", [b"y" * 200 for _ in range(100)])
    before = segment_files(d)
    assert len(before) >= 4
    time.sleep(3.5)  # older than x-max-age: the once-a-second check drops all but the active one
    publish_confirmed(d.url, "aged", [b"z"])
    after = segment_files(d)
    assert len(after) <= 2 and int(after[0][:-4], 16) > 0, after
    c.close()


def named_reader(url, name, ack_upto, args=None):
    """Consumes with x-ferry-offset-name and acks every delivery below ack_upto; returns the
    offsets delivered and the connection (still open)."""
    c = connect(url)
    ch = c.channel()
    ch.basic_qos(prefetch_count=50)
    got = []

    def on(ch_, m, p, b):
        off = p.headers["x-stream-offset"]
        got.append(off)
        if off < ack_upto:
            ch_.basic_ack(m.delivery_tag)

    a = {"x-ferry-offset-name": name}
    a.update(args or {})
    ch.basic_consume("named", on, arguments=a)
    return c, ch, got


def test_named_offsets_resume_after_cancel_restart_and_kill(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    ch = c.channel()
    declare(ch, "named")
    publish_confirmed(d.url, "named", [body(i) for i in range(1000)])
    c.close()
    # A new name with no offset starts at next, as RabbitMQ's default.
    c1, ch1, got = named_reader(d.url, "new", 10**9)
    c1.process_data_events(0.5)
    assert got == []
    c1.close()
    # An explicit offset wins over the stored one; acks up to 300 move the name to 300.
    c1, ch1, got = named_reader(d.url, "n1", 300, {"x-stream-offset": "first"})
    while len(got) < 350:
        c1.process_data_events(0.1)
    # the name is in use: a second consumer with it is refused (406), the first goes on
    c2 = connect(d.url)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch2 = c2.channel()
        ch2.basic_qos(prefetch_count=5)
        ch2.basic_consume("named", lambda *a: None, arguments={"x-ferry-offset-name": "n1"})
    assert e.value.reply_code == 406 and "'n1' is in use" in e.value.reply_text
    c2.close()
    c1.close()
    # reconnect, no x-stream-offset: resumes at 300
    c1, ch1, got = named_reader(d.url, "n1", 600)
    while len(got) < 10:
        c1.process_data_events(0.1)
    assert got[0] == 300
    while len(got) < 350:
        c1.process_data_events(0.1)
    c1.close()
    # a clean restart keeps it (saved at shutdown): resumes at 600
    d.stop_and_check()
    d.start()
    c1, ch1, got = named_reader(d.url, "n1", 800)
    while len(got) < 250:
        c1.process_data_events(0.1)
    assert got[0] == 600
    time.sleep(1.6)  # saved at least once a second
    c1.process_data_events(0.1)
    d.kill9()  # unclean: the position saved a second ago survives
    d.start()
    c1, ch1, got = named_reader(d.url, "n1", 10**9)
    while len(got) < 5:
        c1.process_data_events(0.1)
    assert got[0] == 800
    c1.close()


CHILD = r"""
import os, sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = c.channel()
ch.basic_qos(prefetch_count=20)
def on(ch_, m, p, b):
    off = p.headers["x-stream-offset"]
    if off < 400:
        ch_.basic_ack(m.delivery_tag)
    elif off == 419:
        os.kill(os.getpid(), 9)  # killed mid-stream: 400..419 delivered, never acked
ch.basic_consume("named", on, arguments={"x-ferry-offset-name": "worker", "x-stream-offset": "first"})
ch.start_consuming()
"""


def test_named_offset_resumes_after_the_consumer_is_killed(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    declare(c.channel(), "named")
    publish_confirmed(d.url, "named", [body(i) for i in range(1000)])
    p = subprocess.run([sys.executable, "-c", CHILD, d.url], timeout=60)
    assert p.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while True:  # ferryd notices the dead socket and frees the name
        c1, ch1, got = named_reader(d.url, "worker", 0)
        try:
            while len(got) < 5:
                c1.process_data_events(0.1)
            break
        except pika.exceptions.ChannelClosedByBroker:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert got[0] == 400, "resumes after the last event acknowledged in order"
    c1.close()
    c.close()


def test_stream_queue_survives_as_a_queue(broker):
    """Declared, redeclared, bound, deleted like any queue; publishing through an exchange."""
    c = connect(broker.url)
    ch = c.channel()
    ch.queue_delete("bound")
    declare(ch, "bound")
    declare(ch, "bound")  # equivalent redeclare
    ch.exchange_declare("ev.x", "topic")
    ch.queue_bind("bound", "ev.x", "acct.*")
    ch.confirm_delivery()
    ch.basic_publish("ev.x", "acct.1", b"a")
    ch.basic_publish("ev.x", "other", b"b")
    r = Reader(c, "bound", {"x-stream-offset": "first"}, want=1)
    drain(c, [r], settle=0.3)
    assert r.bodies() == [b"a"]
    m = r.got[0]
    assert m[0] == 0
    assert ch.queue_delete("bound").method.message_count == 0
    ch.exchange_delete("ev.x")
    c.close()
