"""Streams against hostile or careless clients, and damaged stream files (ferryd only; the
answers RabbitMQ also gives are compared in test_streams_rabbitmq.py).
"""
import datetime
import os
import time

import pika
import pytest

from streamlib import Reader, connect, declare, drain, fast_publish, publish_confirmed

pytestmark = pytest.mark.ferry_only  # ferryd's behaviour (FERRY_TEST_AMQP_URL: skipped)


def closed_with(url, fn):
    c = connect(url)
    ch = c.channel()
    try:
        fn(ch, c)
        c.process_data_events(0.3)
        return None
    except pika.exceptions.ChannelClosedByBroker as e:
        return ("channel", e.reply_code, e.reply_text)
    except pika.exceptions.ConnectionClosedByBroker as e:
        return ("connection", e.reply_code, e.reply_text)
    finally:
        try:
            c.close()
        except Exception:
            pass


def consume(q, args, qos=10):
    def f(ch, c):
        ch.basic_qos(prefetch_count=qos)
        ch.basic_consume(q, lambda *a: None, arguments=args)
    return f


@pytest.fixture
def stream(broker):
    c = connect(broker.url)
    ch = c.channel()
    ch.queue_delete("hostile")
    declare(ch, "hostile")
    c.close()
    yield "hostile"
    c = connect(broker.url)
    c.channel().queue_delete("hostile")
    c.close()


def test_offset_name_must_be_a_short_string(broker, stream):
    for bad in [5, "", "x" * 256, True, ["a"]]:
        r = closed_with(broker.url, consume(stream, {"x-ferry-offset-name": bad}))
        assert r == ("channel", 406, "PRECONDITION_FAILED - invalid arg 'x-ferry-offset-name' for queue 'hostile' in "
                     "vhost '/': expected a string of 1 to 255 bytes"), (bad, r)
    assert closed_with(broker.url, consume(stream, {"x-ferry-offset-name": "x" * 255})) is None


def test_wrong_types_in_filters_are_ignored_as_rabbitmq_does(broker, stream):
    publish_confirmed(broker.url, stream, [b"a", b"b"], pika.BasicProperties(headers={"x-stream-filter-value": 7}))
    c = connect(broker.url)
    # a filter that is not a string (or strings) filters nothing in: no value matches it
    r = Reader(c, stream, {"x-stream-offset": "first", "x-stream-filter": 12}, want=None)
    m = Reader(c, stream, {"x-stream-offset": "first", "x-stream-filter": [1, "a"],
                           "x-stream-match-unfiltered": "yes"}, want=None)
    drain(c, [], settle=0.5)
    assert r.got == [] and m.got == [], "a non-string filter value is no filter value: unfiltered"
    u = Reader(c, stream, {"x-stream-offset": "first", "x-stream-filter": "z", "x-stream-match-unfiltered": True},
               want=2)
    drain(c, [u])
    assert u.offsets() == [0, 1]
    c.close()


def test_future_timestamp_and_huge_offsets_wait_for_new_events(broker, stream):
    publish_confirmed(broker.url, stream, [b"old"])
    c = connect(broker.url)
    fut = Reader(c, stream, {"x-stream-offset": datetime.datetime(2100, 1, 1)}, want=1)
    big = Reader(c, stream, {"x-stream-offset": 2**63 - 1}, want=1)
    neg = Reader(c, stream, {"x-stream-offset": -(2**63)}, want=2)
    c.process_data_events(0.3)
    assert fut.got == [] and big.got == []
    publish_confirmed(broker.url, stream, [b"new"])
    drain(c, [fut, big, neg], settle=0.2)
    assert fut.bodies() == [b"new"] and big.bodies() == [b"new"] and neg.bodies() == [b"old", b"new"]
    c.close()


def test_big_events_larger_than_a_read(broker, stream):
    bodies = [os.urandom(3_000_000), b"small", os.urandom(1_500_000)]
    publish_confirmed(broker.url, stream, bodies)
    c = connect(broker.url)
    r = Reader(c, stream, {"x-stream-offset": "first"}, prefetch=1, want=3, ack_every=1)
    drain(c, [r])
    assert r.bodies() == bodies
    c.close()


def test_deleting_a_stream_under_replaying_consumers(broker, stream):
    fast_publish(broker.url, stream, [b"e" * 500 for _ in range(20000)])
    c = connect(broker.url)
    cancelled = []
    rd = []
    for i in range(5):
        r = Reader(c, stream, {"x-stream-offset": "first"}, prefetch=2000, want=None)
        r.ch.add_on_cancel_callback(lambda m, i=i: cancelled.append(i))
        rd.append(r)
    c.process_data_events(0.2)
    c2 = connect(broker.url)
    assert c2.channel().queue_delete(stream).method.message_count == 0
    deadline = time.monotonic() + 15
    while len(cancelled) < 5 and time.monotonic() < deadline:
        c.process_data_events(0.1)
    assert sorted(cancelled) == list(range(5)), "each consumer is told (consumer cancel notification)"
    ch = c2.channel()
    declare(ch, stream)
    r = Reader(c2, stream, {"x-stream-offset": "first"}, want=None)
    c2.process_data_events(0.3)
    assert r.got == [], "a stream declared again under the same name starts empty"
    publish_confirmed(broker.url, stream, [b"fresh"])
    drain(c2, [], settle=0.3)
    assert r.offsets() == [0] and r.bodies() == [b"fresh"]
    c.close()
    c2.close()


def test_replay_from_first_does_not_stall_other_clients(broker, stream):
    fast_publish(broker.url, stream, [os.urandom(4000) for _ in range(15000)])  # 60 MB
    hogs = []
    for _ in range(3):  # readers from first that never ack: each holds its prefetch and a read
        c = connect(broker.url)
        hogs.append((c, Reader(c, stream, {"x-stream-offset": "first"}, prefetch=5000, want=None, ack_every=10**9)))
    live = connect(broker.url)
    ch = live.channel()
    worst = 0.0
    for i in range(10):
        for c, _ in hogs:
            c.process_data_events(0)
        t0 = time.monotonic()
        ch.queue_declare(stream, passive=True)
        worst = max(worst, time.monotonic() - t0)
    assert worst < 1.0, f"a round trip took {worst:.2f}s while others replayed"
    deadline = time.monotonic() + 30
    while not all(len(r.got) == 5000 for _, r in hogs) and time.monotonic() < deadline:
        for c, _ in hogs:
            c.process_data_events(0.05)
    for c, _ in hogs:
        c.process_data_events(0.3)
    assert [len(r.got) for _, r in hogs] == [5000] * 3, "each got its prefetch, and no more without acks"
    for c, _ in hogs:
        c.close()
    live.close()


def test_client_vanishing_mid_replay(broker, stream):
    fast_publish(broker.url, stream, [b"v" * 1000 for _ in range(5000)])
    for _ in range(5):
        c = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
        ch = c.channel()
        ch.basic_qos(prefetch_count=1000)
        ch.basic_consume(stream, lambda *a: None, arguments={"x-stream-offset": "first"})
        c.process_data_events(0.05)
        c._impl._transport._sock.close()  # gone without a close: reads in flight come back to nobody
    c = connect(broker.url)
    r = Reader(c, stream, {"x-stream-offset": 4990}, want=10)
    drain(c, [r])
    assert r.offsets() == list(range(4990, 5000))
    c.close()


def test_torn_tail_and_missing_index_are_repaired_at_start(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    declare(c.channel(), "torn", **{"x-stream-max-segment-size-bytes": 50_000})
    c.close()
    publish_confirmed(d.url, "torn", [b"%05d" % i + b"t" * 995 for i in range(200)])
    d.stop_and_check()
    sdir = os.path.join(d.data_dir, "streams", os.listdir(os.path.join(d.data_dir, "streams"))[0])
    segs = sorted(f for f in os.listdir(sdir) if f.endswith(".seg"))
    last = os.path.join(sdir, segs[-1])
    size = os.path.getsize(last)
    with open(last, "r+b") as f:  # a record cut in half, as a crash mid-write leaves it
        f.truncate(size - 500)
    os.unlink(os.path.join(sdir, segs[0][:-4] + ".idx"))  # an index lost
    with open(os.path.join(sdir, segs[1][:-4] + ".idx"), "r+b") as f:  # an index with garbage
        f.seek(0)
        f.write(b"\xff" * 24)
    d.start()
    assert "cutting" in d.log_text()
    c = connect(d.url)
    r = Reader(c, "torn", {"x-stream-offset": "first"}, want=199)
    drain(c, [r], settle=0.3)
    assert r.offsets() == list(range(199)), "everything up to the torn record"
    assert [int(b[:5]) for b in r.bodies()] == list(range(199))
    publish_confirmed(d.url, "torn", [b"after"])
    r2 = Reader(c, "torn", {"x-stream-offset": 150}, want=50)
    drain(c, [r2], settle=0.3)
    assert r2.offsets() == list(range(150, 200)) and r2.bodies()[-1] == b"after"
    c.close()


def test_deleted_stream_files_are_removed(ferryd_factory):
    d = ferryd_factory()
    c = connect(d.url)
    ch = c.channel()
    declare(ch, "gone")
    publish_confirmed(d.url, "gone", [b"g" * 100 for _ in range(100)])
    assert os.listdir(os.path.join(d.data_dir, "streams"))
    ch.queue_delete("gone")
    time.sleep(0.3)
    assert os.listdir(os.path.join(d.data_dir, "streams")) == []
    c.close()
