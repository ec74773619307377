"""Persistent messages: delivery-mode 2 messages on durable queues survive a restart (clean
or kill -9) in their original order; transient messages, and messages on transient queues,
do not; messages delivered but not acked come back with redelivered set, never-delivered
ones without it after a clean restart (after a crash every one may carry it); acked ones do not come back; startup says how many it recovered."""
import re
import time

import pika

from . import helpers
from .helpers import PERSISTENT, TRANSIENT, connect, drain, publish_confirmed


def declare(d, *queues, durable=True):
    conn = connect(d)
    ch = conn.channel()
    for q in queues:
        ch.queue_declare(q, durable=durable)
    conn.close()


def publish(d, queue, ids, props=PERSISTENT, exchange="", size=100):
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    publish_confirmed(ch, exchange, queue, ids, size=size, props=props)
    conn.close()


def test_persistent_messages_survive_restart_in_order(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    ids = [f"m{i}" for i in range(300)]
    publish(d, "q", ids, size=700)
    d = restart(d)
    got = drain(d, "q")
    assert got.ids == ids, (f"after a {restart.how} restart: {len(set(ids) - set(got.ids))} missing, "
                            f"order kept: {sorted(got.ids, key=ids.index) == got.ids}")


def test_transient_messages_on_a_durable_queue_do_not_survive_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    persistent = []
    for i in range(100):
        mid = f"m{i}"
        if i % 3 == 0:
            persistent.append(mid)
            publish_confirmed(ch, "", "q", [mid], props=PERSISTENT)
        else:
            publish_confirmed(ch, "", "q", [mid], props=TRANSIENT)
    conn.close()
    d = restart(d)
    assert drain(d, "q").ids == persistent


def test_messages_on_a_transient_queue_do_not_survive_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q-transient", durable=False)
    publish(d, "q-transient", [f"m{i}" for i in range(50)])
    d = restart(d)
    conn = connect(d)
    # Declared again, the queue is new and empty: nothing of the old one was stored.
    assert conn.channel().queue_declare("q-transient", durable=False).method.message_count == 0
    conn.close()


def test_a_message_routed_to_a_durable_and_a_transient_queue_survives_only_in_the_durable_one(
        ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("fan", "fanout", durable=True)
    ch.queue_declare("q-durable", durable=True)
    ch.queue_declare("q-transient", durable=False)
    ch.queue_bind("q-durable", "fan")
    ch.queue_bind("q-transient", "fan")
    ch.confirm_delivery()
    ids = [f"m{i}" for i in range(20)]
    publish_confirmed(ch, "fan", "", ids)
    conn.close()
    d = restart(d)
    assert drain(d, "q-durable").ids == ids


def test_a_message_routed_to_two_durable_queues_survives_in_both(ferryd_factory, tmp_path, restart):
    """The body is stored once and shared; each queue keeps its own copy after recovery,
    and acking it in one queue does not remove it from the other."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("fan", "fanout", durable=True)
    for q in ("qa", "qb"):
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, "fan")
    ch.confirm_delivery()
    ids = [f"m{i}" for i in range(50)]
    publish_confirmed(ch, "fan", "", ids, size=2000)
    conn.close()
    assert drain(d, "qa").ids == ids  # acked in qa only
    d = restart(d)
    assert drain(d, "qb").ids == ids
    if restart.how == "sigterm":
        assert drain(d, "qa").ids == []


def test_delivered_unacked_messages_come_back_redelivered_and_the_others_do_not(
        ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    ids = [f"m{i}" for i in range(10)]
    publish(d, "q", ids)
    # Take the first four without acking them, and keep the connection open across the restart.
    conn = connect(d)
    ch = conn.channel()
    taken = []
    for _ in range(4):
        method, props, body = ch.basic_get("q", auto_ack=False)
        assert method is not None and not method.redelivered
        taken.append(helpers.check_body(body))
    assert taken == ids[:4]
    ch.queue_declare("q", passive=True)  # a round trip: the deliveries are done broker-side
    time.sleep(0.5)
    d = restart(d)
    got = drain(d, "q")
    assert got.ids == ids, f"after a {restart.how} restart, order or content changed"
    flags = {m: got.redelivered[m] for m in ids}
    if restart.how == "sigterm":
        assert flags == {m: m in taken for m in ids}, (
            f"redelivered flags after a clean restart: {flags} (expected True for {taken} only)")
    else:  # after a crash the store cannot know what was delivered: "may have been" is every one
        assert all(flags[m] for m in taken), f"redelivered flags after kill -9: {flags} (expected True for {taken})"
    try:
        conn.close()
    except Exception:
        pass


def test_acked_messages_do_not_come_back_after_restart(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    ids = [f"m{i}" for i in range(100)]
    publish(d, "q", ids)
    conn = connect(d)
    ch = conn.channel()
    for _ in range(30):  # ack the first 30 one by one
        method, _, _ = ch.basic_get("q", auto_ack=False)
        ch.basic_ack(method.delivery_tag)
    for _ in range(20):  # then 20 with one multiple ack...
        method, _, _ = ch.basic_get("q", auto_ack=False)
    ch.basic_ack(method.delivery_tag, multiple=True)
    for _ in range(10):  # ...then take 10 with auto-ack
        assert ch.basic_get("q", auto_ack=True)[0] is not None
    ch.queue_declare("q", passive=True)
    conn.close()
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir)
    got = drain(d, "q")
    assert got.ids == ids[60:], f"{len(set(got.ids) & set(ids[:60]))} acked messages came back"


def test_rejected_and_purged_messages_do_not_come_back_after_restart(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q", "q-purged")
    ids = [f"m{i}" for i in range(10)]
    publish(d, "q", ids)
    publish(d, "q-purged", [f"p{i}" for i in range(10)])
    conn = connect(d)
    ch = conn.channel()
    method, _, _ = ch.basic_get("q", auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, _, _ = ch.basic_get("q", auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=False)
    ch.queue_purge("q-purged")
    conn.close()
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir)
    assert drain(d, "q").ids == ids[2:]
    assert drain(d, "q-purged").ids == []


def test_messages_published_in_a_committed_transaction_survive_kill9(ferryd_factory, tmp_path):
    """tx.commit-ok, like a publisher confirm, is sent only once the messages are stored."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    conn = connect(d)
    ch = conn.channel()
    ch.tx_select()
    ids = [f"m{i}" for i in range(40)]
    for mid in ids[:20]:
        ch.basic_publish("", "q", helpers.body_for(mid, 300), pika.BasicProperties(delivery_mode=2))
    ch.tx_commit()
    for mid in ids[20:]:
        ch.basic_publish("", "q", helpers.body_for(mid, 300), pika.BasicProperties(delivery_mode=2))
    ch.tx_rollback()
    d.kill9()
    d = helpers.start(ferryd_factory, d.data_dir)
    assert drain(d, "q").ids == ids[:20]


def test_startup_logs_how_many_messages_it_recovered(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    publish(d, "q", [f"m{i}" for i in range(37)])
    publish(d, "q", [f"t{i}" for i in range(5)], props=TRANSIENT)
    d.kill9()
    d = helpers.start(ferryd_factory, d.data_dir)
    log = helpers.log_since_start(d)
    m = re.search(r"recovered (\d+) messages", log)
    assert m, f"no 'recovered N messages' line at startup:\n{log[-2000:]}"
    assert int(m.group(1)) == 37, m.group(0)
    line = log[log.rfind("\n", 0, m.start()) + 1:log.find("\n", m.end())]
    assert re.search(r"\d+(\.\d+)? ?(s|ms|us|µs|seconds|milliseconds)\b", line), (
        f"the recovery line does not say how long recovery took: {line!r}")


def test_a_new_durable_queue_never_gets_the_messages_of_a_deleted_one(ferryd_factory, tmp_path):
    """A deleted queue's messages can outlive it in a segment that another queue keeps alive;
    a queue declared later (after restarts that forget the deleted one) must not inherit
    them, whatever internal id it is given."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "keep", "gone")
    publish(d, "keep", [f"k{i}" for i in range(5)])
    publish(d, "gone", [f"g{i}" for i in range(5)])
    conn = connect(d)
    conn.channel().queue_delete("gone")
    conn.close()
    for _ in range(2):
        assert d.stop() == 0
        d = helpers.start(ferryd_factory, d.data_dir)
    declare(d, "fresh")
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir)
    assert drain(d, "fresh").ids == [], "a new queue came back holding a deleted queue's messages"
    assert drain(d, "keep").ids == [f"k{i}" for i in range(5)]


def test_messages_dropped_by_max_length_do_not_come_back_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    conn.channel().queue_declare("q", durable=True, arguments={"x-max-length": 10})
    conn.close()
    ids = [f"m{i}" for i in range(30)]
    publish(d, "q", ids)
    conn = connect(d)
    conn.channel().queue_declare("q", passive=True)
    conn.close()
    d = restart(d)
    got = drain(d, "q").ids
    if restart.how == "sigterm":
        assert got == ids[20:]
    else:  # the drop records may not be written yet: duplicates allowed, loss and disorder not
        assert got[-10:] == ids[20:] and got == sorted(got, key=ids.index)


def test_messages_that_expire_while_ferryd_is_down_are_dropped_at_recovery(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("q-ttl", durable=True, arguments={"x-message-ttl": 1500})
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    publish_confirmed(ch, "", "q-ttl", [f"t{i}" for i in range(10)])
    ch.basic_publish("", "q", helpers.body_for("short", 10),
                     pika.BasicProperties(delivery_mode=2, expiration="1500", message_id="short"))
    ch.basic_publish("", "q", helpers.body_for("long", 10),
                     pika.BasicProperties(delivery_mode=2, expiration="600000", message_id="long"))
    conn.close()
    assert d.stop() == 0
    time.sleep(2.0)
    d = helpers.start(ferryd_factory, d.data_dir)
    assert drain(d, "q-ttl").ids == []
    assert drain(d, "q").ids == ["long"]


def test_dead_lettered_messages_are_in_the_dead_letter_queue_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dead", durable=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("q", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    conn.close()
    ids = [f"m{i}" for i in range(10)]
    publish(d, "q", ids)
    conn = connect(d)
    ch = conn.channel()
    for _ in range(4):
        method, _, _ = ch.basic_get("q", auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=False)
    ch.queue_declare("dead", passive=True)
    time.sleep(0.3)
    conn.close()
    d = restart(d)
    dead = drain(d, "dead").ids
    assert dead[:4] == ids[:4] or set(ids[:4]) <= set(dead), f"dead-lettered messages lost: {dead}"
    left = drain(d, "q").ids
    if restart.how == "sigterm":
        assert dead == ids[:4] and left == ids[4:]
    else:
        assert set(ids[4:]) <= set(left)


def test_a_priority_queue_delivers_by_priority_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("q", durable=True, arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    prios = [1, 5, 3, 5, 1, 0, 9]
    for i, pr in enumerate(prios):
        ch.basic_publish("", "q", helpers.body_for(f"m{i}", 10),
                         pika.BasicProperties(delivery_mode=2, priority=pr, message_id=f"m{i}"))
    conn.close()
    d = restart(d)
    expected = [f"m{i}" for i in sorted(range(len(prios)), key=lambda i: (-prios[i], i))]
    assert drain(d, "q").ids == expected


def test_empty_and_multi_frame_bodies_survive_restart_intact(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare(d, "q")
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "q", b"", pika.BasicProperties(delivery_mode=2, message_id="empty"))
    big = helpers.body_for("big", 3 * 1024 * 1024)  # many frames of 128 KiB
    ch.basic_publish("", "q", big, pika.BasicProperties(delivery_mode=2, message_id="big",
                                                         headers={"h": "v", "n": 7}, content_type="x/y"))
    conn.close()
    d = restart(d)
    conn = connect(d)
    ch = conn.channel()
    m1, p1, b1 = ch.basic_get("q", auto_ack=True)
    m2, p2, b2 = ch.basic_get("q", auto_ack=True)
    conn.close()
    assert (p1.message_id, b1) == ("empty", b"")
    assert p2.message_id == "big" and b2 == big, "the 3 MiB body came back different"
    assert p2.headers == {"h": b"v", "n": 7} or p2.headers == {"h": "v", "n": 7}
    assert p2.content_type == "x/y"


def test_a_quorum_queue_delivery_count_survives_kill9(ferryd_factory, tmp_path):
    """x-delivery-count (and so x-delivery-limit) counts the returns before a crash too:
    three nacks with requeue plus a delivery the crash took back make 4 after the restart."""
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", "qq", b"poison", PERSISTENT)
    for expected in range(3):
        method, props, _ = ch.basic_get("qq")
        assert props.headers["x-delivery-count"] == expected
        ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, _ = ch.basic_get("qq")  # the 4th delivery: still unacked when ferryd dies
    assert props.headers["x-delivery-count"] == 3
    time.sleep(0.3)  # the delivery records reach the log (group commit)
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    try:
        method, props, body = conn.channel().basic_get("qq", auto_ack=True)
        assert body == b"poison"
        assert method.redelivered
        assert props.headers["x-delivery-count"] == 4
    finally:
        conn.close()


def test_a_deduplication_window_survives_kill9(ferryd_factory, tmp_path):
    """A message-id accepted (and even consumed) before a crash is still a duplicate after
    the restart, while the window lasts: the store keeps the records that name it."""
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data, "--segment-size", "65536")
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("once", durable=True, arguments={"x-deduplication-window": 60000})
    for i in range(200):  # enough to fill several segments, so reclamation would run
        ch.basic_publish("", "once", helpers.body_for(f"id-{i}", 1000),
                         pika.BasicProperties(delivery_mode=2, message_id=f"id-{i}"))
    assert len(drain(d, "once").ids) == 200  # consumed and acked: their segments are settled
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data, "--segment-size", "65536")
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "once", b"again", pika.BasicProperties(delivery_mode=2, message_id="id-7"))
    ch.basic_publish("", "once", b"new", pika.BasicProperties(delivery_mode=2, message_id="id-new"))
    got = []
    while True:
        method, _props, body = ch.basic_get("once", auto_ack=True)
        if method is None:
            break
        got.append(body)
    conn.close()
    assert got == [b"new"], "a duplicate inside the window was accepted after restart"
