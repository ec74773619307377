"""The stream scenarios against Debian's rabbitmq-server 3.10.8 and against ferryd, compared on
what the client observes: offsets, order, bodies, headers, reply codes and texts.

Every scenario runs on both brokers. Where RabbitMQ 3.10 answers differently from RabbitMQ
4.x (which ferryd follows) or from 3.13 (stream filtering), the test asserts ferryd's
behaviour AND RabbitMQ 3.10's, side by side, in KNOWN_DIFFERENCES (also listed in the README):
a difference that changes fails the test, nothing is skipped silently.
"""
import datetime
import math
import time
import uuid

import pika
import pytest

import rabbitmq
from streamlib import Reader, connect, drain, fast_publish, publish_confirmed

pytestmark = pytest.mark.ferry_only  # ferryd's behaviour (FERRY_TEST_AMQP_URL: skipped)

S = {"x-queue-type": "stream"}


def _wait_amqp(url, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            pika.BlockingConnection(pika.URLParameters(url)).close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def rabbit():
    if not rabbitmq.available():
        pytest.fail(f"rabbitmq-server is not installed ({rabbitmq.RABBIT_BIN}); scripts/install-deps.sh installs it")
    r = rabbitmq.RabbitMQ()
    r.start()
    try:
        _wait_amqp(r.url)
        yield r
    finally:
        r.stop()


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def outcome(url, fn):
    """Runs fn(channel, connection) on a fresh connection: ("ok", value), or how the broker
    closed the channel or the connection (code and text)."""
    c = connect(url)
    ch = c.channel()
    try:
        v = fn(ch, c)
        return ("ok", v)
    except pika.exceptions.ChannelClosedByBroker as e:
        return ("channel", e.reply_code, e.reply_text)
    except pika.exceptions.ConnectionClosedByBroker as e:
        return ("connection", e.reply_code, e.reply_text)
    finally:
        try:
            c.close()
        except Exception:
            pass


def both(rabbit, broker, fn):
    return outcome(rabbit.url, fn), outcome(broker.url, fn)


def declare(name, durable=True, exclusive=False, auto_delete=False, **args):
    a = dict(S)
    a.update(args)
    return lambda ch, c: ch.queue_declare(name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                                          arguments=a).method.message_count


def consume_n(q, args, n, qos=50, wait=1.0, auto_ack=False):
    """Consumes until n deliveries (or wait seconds with none new); returns what was seen."""
    def f(ch, c):
        if qos is not None:
            ch.basic_qos(prefetch_count=qos)
        got = []

        def on(ch_, m, p, b):
            got.append((p.headers.get("x-stream-offset") if p.headers else None, b, m.redelivered, m.exchange,
                        m.routing_key, {k: v for k, v in (p.headers or {}).items()}, p.message_id))
            if not auto_ack:
                ch_.basic_ack(m.delivery_tag)

        ch.basic_consume(q, on, auto_ack=auto_ack, arguments=args)
        deadline = time.monotonic() + wait
        while len(got) < n and time.monotonic() < deadline:
            c.process_data_events(0.05)
        return got
    return f


# ---- declaring ----

def test_declare_properties_and_arguments_match(rabbit, broker):
    cases = [("nd", dict(durable=False)), ("ex", dict(exclusive=True)), ("ad", dict(auto_delete=True))]
    args = [
        {"x-max-age": "1h"}, {"x-max-age": "10Y"}, {"x-max-age": "7D"}, {"x-max-age": "30m"}, {"x-max-age": "1x"},
        {"x-max-age": 5}, {"x-max-age": "0D"}, {"x-max-age": "1Ms"},
        {"x-max-length-bytes": -1}, {"x-max-length-bytes": "a"}, {"x-max-length-bytes": 10**9},
        {"x-stream-max-segment-size-bytes": -5}, {"x-stream-max-segment-size-bytes": "x"},
        {"x-stream-max-segment-size-bytes": 1000},
        {"x-max-length": 10}, {"x-message-ttl": 10}, {"x-max-priority": 5}, {"x-dead-letter-exchange": "x"},
        {"x-overflow": "drop-head"}, {"x-single-active-consumer": True}, {"x-expires": 1000},
        {"x-queue-mode": "lazy"}, {"x-delivery-limit": 3}, {"x-max-in-memory-length": 5},
        {"x-initial-cluster-size": 1}, {"x-queue-leader-locator": "client-local"},
    ]
    for tag, flags in cases:
        name = uniq("decl-" + tag)
        r, f = both(rabbit, broker, declare(name, **flags))
        assert r == f, (flags, r, f)
        assert f[0] == "channel" and f[1] == 406
    for a in args:
        name = uniq("decl")
        r, f = both(rabbit, broker, declare(name, **a))
        assert r == f, (a, r, f)
        for url in (rabbit.url, broker.url):
            outcome(url, lambda ch, c: ch.queue_delete(name))


def test_redeclare_must_be_equivalent(rabbit, broker):
    name = uniq("redecl")
    for url in (rabbit.url, broker.url):
        assert outcome(url, declare(name)) == ("ok", 0)
    for a in [{"x-max-age": "1h"}, {"x-max-length-bytes": 1000}, {"x-stream-max-segment-size-bytes": 1000}]:
        r, f = both(rabbit, broker, declare(name, **a))
        assert r == f and f[1] == 406, (a, r, f)
    classic = lambda ch, c: ch.queue_declare(name, durable=True).method.message_count  # noqa: E731
    r, f = both(rabbit, broker, classic)
    assert r == f and f[1] == 406
    r, f = both(rabbit, broker, declare(name))
    assert r == f == ("ok", 0), "declare-ok of a stream counts no messages, as RabbitMQ 3.10"


# ---- consuming: refusals ----

def test_consumer_refusals(rabbit, broker):
    name = uniq("refuse")
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
    rs = f"queue '{name}' in vhost '/'"
    # No prefetch: 406 on both; the text is 4.x's on ferryd, 3.10's on RabbitMQ.
    for qos in (None, 0):
        r, f = both(rabbit, broker, consume_n(name, {}, 0, qos=qos, wait=0.3))
        assert r == ("channel", 406, f"PRECONDITION_FAILED - consumer prefetch count is not set for '{rs}'")
        assert f == ("channel", 406, f"PRECONDITION_FAILED - consumer prefetch count is not set for stream {rs}")
    # auto-ack: RabbitMQ 3.10 closes the connection (540); 4.x (ferryd) the channel (406).
    r, f = both(rabbit, broker, consume_n(name, {}, 0, auto_ack=True, wait=0.3))
    assert r == ("connection", 540, f"NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {rs}")
    assert f == ("channel", 406, f"PRECONDITION_FAILED - automatic acknowledgement not supported by stream {rs}")
    # basic.get and queue.purge: 540, the same text on both.
    get = lambda ch, c: ch.basic_get(name)  # noqa: E731
    r, f = both(rabbit, broker, get)
    assert r == f == ("connection", 540, f"NOT_IMPLEMENTED - basic.get not supported by stream queues {rs}")
    purge = lambda ch, c: ch.queue_purge(name)  # noqa: E731
    r, f = both(rabbit, broker, purge)
    assert r == f == ("connection", 540, f"NOT_IMPLEMENTED - queue.purge not supported by stream queues {rs}")
    # An exclusive consumer does not keep others away from a stream (both).
    def two(ch, c):
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(name, lambda *a: None, exclusive=True)
        ch.basic_consume(name, lambda *a: None)
        return "two consumers"
    r, f = both(rabbit, broker, two)
    assert r == f == ("ok", "two consumers")


def test_bad_offsets(rabbit, broker):
    name = uniq("offs")
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
    rs = f"queue '{name}' in vhost '/'"
    same = ["1x", "0s", "5", "1Ms", "-3h"[1:] + "x"]
    for v in same:
        r, f = both(rabbit, broker, consume_n(name, {"x-stream-offset": v}, 0, wait=0.2))
        assert r == f, (v, r, f)
        assert f == ("channel", 406, "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for "
                     f"{rs}: {{invalid_stream_offset_arg,{{longstr,<<\"{v}\">>}}}}")
    # Accepted on both, nothing to deliver yet: numbers of any size and sign, the words, intervals.
    for v in ["first", "last", "next", 0, -1, 2**62, "1h", "10m", "1Y", datetime.datetime(2020, 1, 1)]:
        r, f = both(rabbit, broker, consume_n(name, {"x-stream-offset": v}, 1, wait=0.3))
        assert r == f == ("ok", []), (v, r, f)
    # RabbitMQ 3.10 fails these with 541 INTERNAL_ERROR (a crash in its channel); ferryd
    # answers 406 like the other bad offsets.
    for v, typ, shown in [("foo", "longstr", '<<"foo">>'), ("", "longstr", '<<"">>'), (True, "bool", "true")]:
        r, f = both(rabbit, broker, consume_n(name, {"x-stream-offset": v}, 0, wait=0.3))
        assert r == ("connection", 541, "INTERNAL_ERROR"), (v, r)
        assert f == ("channel", 406, "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for "
                     f"{rs}: {{invalid_stream_offset_arg,{{{typ},{shown}}}}}"), (v, f)


# ---- consuming: what is delivered ----

def test_deliveries_offsets_order_and_shape(rabbit, broker):
    name = uniq("shape")
    obs = []
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
        c = connect(url)
        ch = c.channel()
        ch.confirm_delivery()
        for i in range(20):  # one at a time: on RabbitMQ each is a chunk of its own
            ch.basic_publish("", name, b"m%d" % i, pika.BasicProperties(headers={"k": i}, message_id="id%d" % i))
        c.close()
        o = {}
        for label, v, n in [("first", "first", 20), ("last", "last", 1), ("next", "next", 0), ("numeric", 13, 7),
                            ("negative", -5, 20), ("beyond", 10**6, 0), ("default", None, 0)]:
            args = {"x-stream-offset": v} if v is not None else {}
            o[label] = outcome(url, consume_n(name, args, n, wait=0.5 if n == 0 else 3))
        obs.append(o)
    r, f = obs
    assert r == f
    got = f["first"][1]
    assert [g[0] for g in got] == list(range(20))
    assert got[3] == (3, b"m3", False, "", name, {"k": 3, "x-stream-offset": 3}, "id3")
    assert [g[0] for g in f["last"][1]] == [19] and [g[0] for g in f["numeric"][1]] == list(range(13, 20))


def test_next_and_last_see_new_events_and_timestamps_select(rabbit, broker):
    """Several consumers at once on each broker: first, an offset, a timestamp, next, last."""
    name = uniq("live")
    obs = []
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
        fast_publish(url, name, [b"a%d" % i for i in range(2000)])
        publish_confirmed(url, name, [b"a-last"])  # alone in its chunk on RabbitMQ
        obs.append(None)
    t = math.ceil(time.time()) + 1
    while time.time() < t + 0.2:
        time.sleep(0.05)
    res = []
    for url in (rabbit.url, broker.url):
        fast_publish(url, name, [b"b%d" % i for i in range(3000)])
        c = connect(url)
        rd = [Reader(c, name, {"x-stream-offset": "first"}, want=5001 + 3),
              Reader(c, name, {"x-stream-offset": 1500}, want=3501 + 3),
              Reader(c, name, {"x-stream-offset": datetime.datetime.fromtimestamp(t)}, want=3000 + 3)]
        publish_confirmed(url, name, [b"c-last"])
        rd += [Reader(c, name, {"x-stream-offset": "last"}, want=1 + 2),
               Reader(c, name, {"x-stream-offset": "next"}, want=2)]
        c.process_data_events(0.5)
        publish_confirmed(url, name, [b"d0", b"d1"])
        drain(c, rd, timeout=60, settle=0.5)
        res.append([(r.offsets(), r.bodies()) for r in rd])
        c.close()
    assert res[0] == res[1]
    first, numeric, stamp, last, nxt = res[1]
    assert first[0] == list(range(5004)) and stamp[1][0] == b"b0" and last[1] == [b"c-last", b"d0", b"d1"]
    assert nxt[1] == [b"d0", b"d1"] and numeric[0][0] == 1500


def test_acks_nacks_and_rejects(rabbit, broker):
    """An ack removes nothing; nack and reject: RabbitMQ 4.x (ferryd) give the credit back and
    redeliver nothing; RabbitMQ 3.10 closes the connection with 540."""
    name = uniq("acks")
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
        publish_confirmed(url, name, [b"x%d" % i for i in range(10)])

    def settle_with(how):
        def f(ch, c):
            ch.basic_qos(prefetch_count=3)
            got = []

            def on(ch_, m, p, b):
                got.append(p.headers["x-stream-offset"])
                getattr(ch_, how)(m.delivery_tag) if how != "basic_nack" else ch_.basic_nack(m.delivery_tag,
                                                                                              requeue=True)
            ch.basic_consume(name, on, arguments={"x-stream-offset": "first"})
            deadline = time.monotonic() + 1.5
            while len(got) < 10 and time.monotonic() < deadline:
                c.process_data_events(0.05)
            c.process_data_events(0.3)
            return got
        return f
    r, f = both(rabbit, broker, settle_with("basic_ack"))
    assert r == f == ("ok", list(range(10)))
    rs = f"queue '{name}' in vhost '/'"
    for how in ("basic_nack", "basic_reject"):
        r, f = both(rabbit, broker, settle_with(how))
        assert r == ("connection", 540, f"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues {rs}")
        assert f == ("ok", list(range(10))), f


def test_filtering_is_rabbitmq_3_13(rabbit, broker):
    """x-stream-filter exists since RabbitMQ 3.13: 3.10 ignores it and delivers everything;
    ferryd filters as 3.13 does."""
    name = uniq("filt")
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
        c = connect(url)
        ch = c.channel()
        ch.confirm_delivery()
        for i in range(9):
            region = ["eu", "us", None][i % 3]
            ch.basic_publish("", name, b"f%d" % i,
                             pika.BasicProperties(headers={"x-stream-filter-value": region} if region else None))
        c.close()
    args = {"x-stream-offset": "first", "x-stream-filter": "eu"}
    r, f = both(rabbit, broker, consume_n(name, args, 9, wait=1.0))
    assert [g[0] for g in r[1]] == list(range(9)), "3.10: no filtering"
    assert [g[0] for g in f[1]] == [0, 3, 6], "ferryd: 3.13's filtering"
    assert f[1][0][5]["x-stream-filter-value"] == "eu"


def test_retention_drops_the_oldest_segments_on_both(rabbit, broker):
    """Offsets are not dense on RabbitMQ (a new segment starts with a tracking chunk that takes
    an offset), so the comparison is on the events left: a contiguous tail, in order."""
    name = uniq("ret")
    firsts = []
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name, **{"x-stream-max-segment-size-bytes": 20_000, "x-max-length-bytes": 60_000}))
        publish_confirmed(url, name, [b"%04d" % i + b"r" * 196 for i in range(1000)])
        got = outcome(url, consume_n(name, {"x-stream-offset": "first"}, 1000, wait=3))[1]
        offs = [g[0] for g in got]
        seq = [int(g[1][:4]) for g in got]
        assert offs == sorted(set(offs)) and offs[0] > 0, "offsets only increase; the oldest are gone"
        assert seq == list(range(seq[0], 1000)), "what is left is the contiguous newest part, in order"
        firsts.append(seq[0])
    r, f = firsts
    assert r > 0 and f > 0, firsts
    # Both keep a bounded tail, whole segments of it: RabbitMQ's records are bigger (its
    # message container), so its 20 kB segments hold fewer events; ferryd keeps between
    # x-max-length-bytes minus one segment and plus one (240 to 320 events of 250 B here).
    assert 100 <= 1000 - r <= 400 and 100 <= 1000 - f <= 400, firsts


def test_named_offset_argument_is_ignored_by_rabbitmq(rabbit, broker):
    """x-ferry-offset-name is Ferry's: RabbitMQ ignores it (a consumer starting at next), and
    so does a first attach with a new name on ferryd; the resume is ferryd's alone."""
    name = uniq("named")
    res = []
    for url in (rabbit.url, broker.url):
        outcome(url, declare(name))
        publish_confirmed(url, name, [b"n%d" % i for i in range(5)])
        res.append(outcome(url, consume_n(name, {"x-ferry-offset-name": "app"}, 1, wait=0.5)))
        publish_confirmed(url, name, [b"n5"])
        res.append(outcome(url, consume_n(name, {"x-ferry-offset-name": "app"}, 1, wait=1.0)))
    rab_first, rab_second, fer_first, fer_second = res
    assert rab_first == fer_first == ("ok", [])
    assert rab_second == ("ok", []), "RabbitMQ: next again"
    assert [g[1] for g in fer_second[1]] == [b"n5"], "ferryd: resumes after the first attach's position"
