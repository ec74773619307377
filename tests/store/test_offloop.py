"""Disk work off the loop thread (issue 9, defect 5): meta.log syncs and paged reads.

A durable declare, bind or delete is answered once its meta.log record is synced by the
writer thread, as a confirm is; a channel's answers stay in the order of its methods; a
failed sync fails the method as before (RESOURCE_ERROR, the change undone); and while one
client floods the broker with durable declares, another is still served. Paged-out bodies
are read back on the store's helper thread: a deep queue drained from a cold page cache
delivers every message, in order, to consumers and to basic.get."""
import os
import sys
import threading
import time

import pika
import pytest
from pika import exceptions

from . import helpers

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
import rawamqp as R  # noqa: E402

EXCHANGE_DECLARE_OK = (40, 11)
EXCHANGE_DELETE = (40, 20)
EXCHANGE_DELETE_OK = (40, 21)
QUEUE_BIND = (50, 20)
QUEUE_BIND_OK = (50, 21)
QUEUE_UNBIND = (50, 50)
QUEUE_UNBIND_OK = (50, 51)


def raw_conn(d, channels=(1,)):
    c = R.Connection(d.host, d.port, timeout=30)
    c.handshake()
    for ch in channels:
        c.open_channel(ch)
    return c


def exchange_declare(ch, name, type_="direct", durable=True):
    return R.method_frame(ch, R.EXCHANGE_DECLARE, R.short(0) + R.shortstr(name) + R.shortstr(type_) +
                          R.bits(False, durable, False, False, False) + R.table({}))


def exchange_delete(ch, name):
    return R.method_frame(ch, EXCHANGE_DELETE, R.short(0) + R.shortstr(name) + R.bits(False, False))


def queue_bind(ch, queue, exchange, key):
    return R.method_frame(ch, QUEUE_BIND, R.short(0) + R.shortstr(queue) + R.shortstr(exchange) + R.shortstr(key) +
                          R.bits(False) + R.table({}))


def queue_unbind(ch, queue, exchange, key):
    return R.method_frame(ch, QUEUE_UNBIND, R.short(0) + R.shortstr(queue) + R.shortstr(exchange) + R.shortstr(key) +
                          R.table({}))


def declare(ch, name, durable=True):
    return R.method_frame(ch, R.QUEUE_DECLARE, R.queue_declare_args(name, durable=durable))


def delete(ch, name):
    return R.method_frame(ch, R.QUEUE_DELETE, R.queue_delete_args(name))


def get(ch, name):
    return R.method_frame(ch, R.BASIC_GET, R.basic_get_args(name))


def answers(c, n, timeout=30):
    """The next n method frames, as (channel, method, args)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        f = c.recv_frame(max(0.1, deadline - time.monotonic()))
        if f.type == R.FRAME_METHOD:
            out.append((f.channel, f.method, f.args))
    return out


def exists(d, queue):
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=d.host, port=d.port, heartbeat=0))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    except exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return None
    finally:
        if conn.is_open:
            conn.close()


def test_durable_declares_binds_and_deletes_answer_in_order_and_survive_a_restart(ferryd_factory, restart):
    d = ferryd_factory()
    c = raw_conn(d, channels=(1, 2))
    # One write: every method pipelined on channel 1, with a transient declare on channel 2.
    c.send(exchange_declare(1, "ol-x") + declare(1, "ol-q1") + queue_bind(1, "ol-q1", "ol-x", "k") +
           declare(1, "ol-q2") + get(1, "ol-q1") + delete(1, "ol-q2") + declare(1, "ol-q3") +
           queue_bind(1, "ol-q3", "ol-x", "k3") + queue_unbind(1, "ol-q3", "ol-x", "k3") +
           exchange_declare(1, "ol-gone") + exchange_delete(1, "ol-gone") + declare(2, "ol-t", durable=False))
    got = answers(c, 12)
    on1 = [(m, a.get("queue")) for ch, m, a in got if ch == 1]
    assert on1 == [(EXCHANGE_DECLARE_OK, None), (R.QUEUE_DECLARE_OK, "ol-q1"), (QUEUE_BIND_OK, None),
                   (R.QUEUE_DECLARE_OK, "ol-q2"), (R.BASIC_GET_EMPTY, None), (R.QUEUE_DELETE_OK, None),
                   (R.QUEUE_DECLARE_OK, "ol-q3"), (QUEUE_BIND_OK, None), (QUEUE_UNBIND_OK, None),
                   (EXCHANGE_DECLARE_OK, None), (EXCHANGE_DELETE_OK, None)]
    assert [(m, a.get("queue")) for ch, m, a in got if ch == 2] == [(R.QUEUE_DECLARE_OK, "ol-t")]
    c.close()
    d = restart(d)
    assert exists(d, "ol-q1") == 0 and exists(d, "ol-q3") == 0
    assert exists(d, "ol-q2") is None, "a deleted queue came back"
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=d.host, port=d.port, heartbeat=0))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("ol-x", "k", b"via the binding", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("ol-x", "k3", b"unbound", pika.BasicProperties(delivery_mode=2))
    assert ch.queue_declare("ol-q1", passive=True).method.message_count == 1, "the binding was lost"
    assert ch.queue_declare("ol-q3", passive=True).method.message_count == 0, "the unbind was lost"
    with pytest.raises(exceptions.ChannelClosedByBroker) as e:
        conn.channel().exchange_declare("ol-gone", passive=True)
    assert e.value.reply_code == 404, "a deleted exchange came back"
    conn.close()


def test_a_flood_of_durable_declares_does_not_stall_another_client(ferryd_factory):
    """Every fdatasync takes half a second (an injected slow disk); one client pipelines
    durable declares in one write, and each is answered in order once its meta.log record is
    synced; meanwhile another client's basic.gets are answered at once (before: the loop
    thread ran each declare's fsync itself, so the other client waited half a second or
    more at every declare)."""
    env = dict(os.environ, FERRY_IO_FAULTS="op=fdatasync,p=1,delay=500", FERRY_IO_SEED="1")
    d = ferryd_factory(env=env)
    flood = raw_conn(d)
    probe = raw_conn(d)
    probe.send(declare(1, "ol-probe", durable=False))
    probe.expect(R.QUEUE_DECLARE_OK)
    n = 6
    flood.send(b"".join(declare(1, f"ol-flood-{i}") for i in range(n)))
    done = threading.Event()
    rtts = []

    def run_probe():
        while not done.is_set():
            t0 = time.monotonic()
            probe.send(get(1, "ol-probe"))
            probe.expect(R.BASIC_GET_EMPTY, timeout=60)
            rtts.append(time.monotonic() - t0)
            time.sleep(0.005)

    t = threading.Thread(target=run_probe, daemon=True)
    t.start()
    oks = answers(flood, n, timeout=120)
    done.set()
    t.join(70)
    assert [(m, a["queue"]) for _, m, a in oks] == [(R.QUEUE_DECLARE_OK, f"ol-flood-{i}") for i in range(n)]
    assert len(rtts) >= 20 and max(rtts) < 0.35, (
        f"the other client's longest round trip was {max(rtts) * 1000:.0f} ms over {len(rtts)} basic.gets "
        f"while {n} durable declares were synced on a disk that takes 0.5 s an fsync")
    flood.close()
    probe.close()


def drop_caches():
    """Cold page cache, as the issue's measurement asks (root only; otherwise the reads may
    come from the cache, and the test still checks order and bodies)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def body_for(i, size=1024):
    head = b"%08d:" % i
    return head + bytes((i * 31 + k) & 0xFF for k in range(size - len(head)))


def test_a_paged_queue_drained_from_a_cold_cache_delivers_every_message_in_order(ferryd_factory):
    """20,000 persistent 1 KiB messages against a 2 MB memory budget, the page cache dropped,
    then drained: the first 3,000 by basic.get (each paged head waits for its read-back),
    the rest by two consumers' prefetch of one channel — every message once, in order."""
    n = 20000
    d = ferryd_factory("--memory-budget", "2000000")
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=d.host, port=d.port, heartbeat=0))
    ch = conn.channel()
    ch.queue_declare("ol-deep", durable=True)
    tx = conn.channel()  # commit-ok once synced: as good as confirms, one fsync per 1,000
    tx.tx_select()
    for k in range(0, n, 1000):
        for i in range(k, k + 1000):
            tx.basic_publish("", "ol-deep", body_for(i), pika.BasicProperties(delivery_mode=2))
        tx.tx_commit()
    tx.close()
    assert ch.queue_declare("ol-deep", passive=True).method.message_count == n
    drop_caches()
    got = []
    for _ in range(3000):
        method, _, body = ch.basic_get("ol-deep", auto_ack=True)
        assert method is not None, f"basic.get found the queue empty after {len(got)} of {n}"
        got.append(body)
    ch.basic_qos(prefetch_count=300)
    deadline = time.time() + 120
    for method, _, body in ch.consume("ol-deep", inactivity_timeout=5):
        if method is None:
            assert time.time() < deadline, f"the drain stalled after {len(got)} of {n}"
            continue
        got.append(body)
        if len(got) % 100 == 0 or len(got) == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if len(got) == n:
            break
    ch.cancel()
    assert len(got) == n
    for i, b in enumerate(got):
        assert b == body_for(i), f"message {i}: got {b[:12]!r}"
    assert ch.queue_declare("ol-deep", passive=True).method.message_count == 0
    conn.close()


def first_startable_fault(ferryd_factory, tmp, rule):
    """The smallest N for which ferryd starts with FERRY_IO_FAULTS=rule % N (the faults
    before it hit the startup's own syncs), and that broker."""
    for n in range(1, 40):
        env = dict(os.environ, FERRY_IO_FAULTS=rule % n, FERRY_IO_SEED="1")
        try:
            return n, ferryd_factory(data_dir=str(tmp / f"probe{n}"), env=env)
        except (RuntimeError, TimeoutError, AssertionError):
            continue
    pytest.fail("ferryd did not start with any of the first 40 syncs failing")


def test_a_failed_meta_sync_fails_the_declare_with_resource_error_and_keeps_the_others(ferryd_factory, tmp_path):
    """The third fdatasync after startup fails (ENOSPC): durable declares one at a time, and
    exactly one gets RESOURCE_ERROR with the old text; the rest are answered and, after a
    restart, exist — the failed one does not."""
    rule = "op=fdatasync,nth=%d,err=ENOSPC"
    n0, probe = first_startable_fault(ferryd_factory, tmp_path, rule)
    probe.stop()
    data = str(tmp_path / "failing")
    d = ferryd_factory(data_dir=data, env=dict(os.environ, FERRY_IO_FAULTS=rule % (n0 + 2), FERRY_IO_SEED="1"))
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=d.host, port=d.port, heartbeat=0))
    ok, failed = [], []
    for i in range(6):
        try:
            conn.channel().queue_declare(f"ol-f{i}", durable=True)
            ok.append(f"ol-f{i}")
        except exceptions.ChannelClosedByBroker as e:
            failed.append((f"ol-f{i}", e.reply_code, e.reply_text))
    conn.close()
    assert len(failed) == 1, f"expected one failed declare, got {failed}"
    name, code, text = failed[0]
    assert code == 506 and text == f"RESOURCE_ERROR - cannot store durable queue '{name}' in vhost '/': the disk is " \
                                    f"full or failing", failed
    assert d.stop() == 0
    d = ferryd_factory(data_dir=data)
    for q in ok:
        assert exists(d, q) == 0, f"{q} was declared-ok, then lost"
    assert exists(d, name) is None, f"{name} failed to store but came back"


def test_a_drain_from_a_slow_disk_does_not_stall_another_client(ferryd_factory):
    """Every read of the log takes a second longer (an injected slow disk): a consumer drains
    a queue mostly paged out while another client's basic.gets go on, and none of those waits
    for a read (before: the loop thread read paged bodies back itself, so the other client
    waited a second or more for each batch of 512)."""
    env = dict(os.environ, FERRY_IO_FAULTS="op=read,p=1,delay=1000", FERRY_IO_SEED="1")
    d = ferryd_factory("--memory-budget", "1000000", env=env)
    n = 2000
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=d.host, port=d.port, heartbeat=0))
    ch = conn.channel()
    ch.queue_declare("ol-slow")
    tx = conn.channel()
    tx.tx_select()
    for k in range(0, n, 500):
        for i in range(k, k + 500):
            tx.basic_publish("", "ol-slow", body_for(i))
        tx.tx_commit()
    tx.close()
    probe = raw_conn(d)
    probe.send(declare(1, "ol-probe2", durable=False))
    probe.expect(R.QUEUE_DECLARE_OK)
    done = threading.Event()
    rtts = []

    def run_probe():
        while not done.is_set():
            t0 = time.monotonic()
            probe.send(get(1, "ol-probe2"))
            probe.expect(R.BASIC_GET_EMPTY, timeout=60)
            rtts.append(time.monotonic() - t0)
            time.sleep(0.005)

    t = threading.Thread(target=run_probe, daemon=True)
    t.start()
    got = []
    ch.basic_qos(prefetch_count=200)
    deadline = time.time() + 120
    for method, _, body in ch.consume("ol-slow", inactivity_timeout=5):
        if method is None:
            assert time.time() < deadline, f"the drain stalled after {len(got)} of {n}"
            continue
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            break
    ch.cancel()
    done.set()
    t.join(70)
    conn.close()
    probe.close()
    assert got == [body_for(i) for i in range(n)]
    assert len(rtts) >= 20 and max(rtts) < 0.7, (
        f"the other client's longest round trip was {max(rtts) * 1000:.0f} ms over {len(rtts)} basic.gets "
        f"while paged bodies were read from a disk that takes 1 s a read")
