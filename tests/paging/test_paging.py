"""Queues deeper than memory (issue 3): beyond --memory-budget, the bodies of ready messages
far from a queue's head live only in the message log and are read back ahead of consumers.

Every test runs a private ferryd with a budget of a few MB and pushes far more than that
through it, so most bodies are paged out; then it checks what a client sees: every message,
in order, with its body intact, and the queue operations (restart, purge, delete, TTL,
dead-lettering, priorities) working on paged messages as on any other."""
import os
import subprocess
import time

import pika
import pytest

BUDGET = "2000000"
FERRY = os.path.join(os.path.dirname(__file__), "..", "..", "build", "ferry")
SIZE = 1024


def body_for(i, size=SIZE):
    head = b"%08d:" % i
    return head + bytes((i * 31 + k) & 0xFF for k in range(size - len(head)))


def connect(d):
    return pika.BlockingConnection(pika.ConnectionParameters(host=d.host, port=d.port, heartbeat=0,
                                                             blocked_connection_timeout=30))


def publish(ch, queue, ids, persistent=False, **props):
    """Publishes in transactions of 1000: tx.commit-ok comes only once they are synced (so
    they are as good as confirmed), with one fsync per commit rather than per message."""
    txch = ch.connection.channel()  # acks on a transacted channel would wait for a commit
    txch.tx_select()
    ids = list(ids)
    for k in range(0, len(ids), 1000):
        for i in ids[k:k + 1000]:
            txch.basic_publish("", queue, body_for(i), pika.BasicProperties(
                delivery_mode=2 if persistent else 1, **props))
        txch.tx_commit()
    txch.close()


def drain(ch, queue, expect, timeout=60):
    """Reads `expect` messages with manual acks; returns their bodies in delivery order."""
    ch.basic_qos(prefetch_count=500)
    got = []
    deadline = time.time() + timeout
    for method, props, body in ch.consume(queue, inactivity_timeout=5):
        if method is None:
            if time.time() > deadline:
                break
            continue
        got.append(body)
        if len(got) % 100 == 0 or len(got) == expect:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if len(got) == expect:
            break
    ch.cancel()
    return got


def depth(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def segments(d):
    segdir = os.path.join(d.data_dir, "segments")
    return sorted(f for f in os.listdir(segdir) if f.endswith(".seg"))


def rss_kb(d):
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def assert_in_order(bodies, ids):
    assert len(bodies) == len(ids), f"got {len(bodies)} messages, expected {len(ids)}"
    for b, i in zip(bodies, ids):
        assert b == body_for(i), f"message {i}: got {b[:12]!r}... ({len(b)} bytes)"


N = 20000  # 20 MB of bodies against a 2 MB budget


@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_deep_queue_delivers_every_message_in_order_with_intact_bodies(ferryd_factory, persistent):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("deep", durable=persistent)
    publish(ch, "deep", range(N), persistent=persistent)
    assert depth(ch, "deep") == N
    assert segments(d), "bodies beyond the budget were not written to the log"
    assert_in_order(drain(ch, "deep", N), list(range(N)))
    assert depth(ch, "deep") == 0
    conn.close()


def test_a_basic_get_reads_paged_messages_back(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("deep-get")
    publish(ch, "deep-get", range(5000))
    got = []
    for _ in range(5000):
        method, props, body = ch.basic_get("deep-get", auto_ack=True)
        assert method is not None
        got.append(body)
    assert_in_order(got, list(range(5000)))
    conn.close()


def test_rss_stays_bounded_while_publishing_far_beyond_the_budget(ferryd_factory):
    # The sanitizer build keeps freed memory in a quarantine: make it small for this test.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4").lstrip(":")
    d = ferryd_factory("--memory-budget", "4000000", env=env)
    before = rss_kb(d)
    n = 300000  # 300 MB of bodies, published by ferry bench (a fast pipelined publisher)
    subprocess.run([FERRY, "bench", "--uri", d.url, "--no-consume", "--count", str(n), "--size", "1024",
                    "--quiet"], check=True, timeout=120, stdout=subprocess.DEVNULL)
    conn = connect(d)
    ch = conn.channel()
    assert depth(ch, "bench-0") == n
    time.sleep(1.0)
    grown_mb = (rss_kb(d) - before) / 1024
    assert grown_mb < 120, f"RSS grew by {grown_mb:.0f} MB for 300 MB of bodies with a 4 MB budget"
    ch.queue_delete("bench-0")
    conn.close()


def test_paged_persistent_messages_survive_kill_9(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("durable-deep", durable=True)
    publish(ch, "durable-deep", range(N), persistent=True)  # every one confirmed
    conn.close()
    d.kill9()
    d2 = ferryd_factory("--memory-budget", BUDGET, data_dir=d.data_dir)
    assert "recovered %d messages" % N in d2.log_text()
    conn = connect(d2)
    ch = conn.channel()
    assert depth(ch, "durable-deep") == N
    assert_in_order(drain(ch, "durable-deep", N), list(range(N)))
    conn.close()


def test_a_restart_keeps_a_deep_queue_paged_and_delivers_it_in_order(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("restart-deep", durable=True)
    publish(ch, "restart-deep", range(N), persistent=True)
    conn.close()
    assert d.stop() == 0
    d2 = ferryd_factory("--memory-budget", BUDGET, data_dir=d.data_dir)
    conn = connect(d2)
    ch = conn.channel()
    # half now, the rest after another restart: settles of paged copies are recorded
    assert_in_order(drain(ch, "restart-deep", N // 2), list(range(N // 2)))
    conn.close()
    d2.kill9()
    d3 = ferryd_factory("--memory-budget", BUDGET, data_dir=d.data_dir)
    conn = connect(d3)
    ch = conn.channel()
    assert depth(ch, "restart-deep") == N - N // 2
    assert_in_order(drain(ch, "restart-deep", N - N // 2), list(range(N // 2, N)))
    conn.close()


@pytest.mark.parametrize("how", ["purge", "delete"])
def test_purging_or_deleting_a_paged_queue_reclaims_its_segments(ferryd_factory, how):
    d = ferryd_factory("--memory-budget", BUDGET, "--segment-size", "1000000")
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("reclaim")
    ch.queue_declare("reclaim-p", durable=True)
    publish(ch, "reclaim", range(N))
    publish(ch, "reclaim-p", range(N), persistent=True)
    assert len(segments(d)) > 10
    if how == "purge":
        ch.queue_purge("reclaim")
        ch.queue_purge("reclaim-p")
    else:
        ch.queue_delete("reclaim")
        ch.queue_delete("reclaim-p")
    ch.queue_declare("nudge")  # any later batch writes the unlinks
    publish(ch, "nudge", range(1))
    assert wait_for(lambda: len(segments(d)) <= 2), f"segments left: {segments(d)}"
    conn.close()


def test_paged_messages_expire_by_ttl_into_the_dead_letter_queue_intact(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("dlq")
    ch.queue_declare("ttl-deep", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": "dlq"})
    n = 8000
    publish(ch, "ttl-deep", range(n))
    assert wait_for(lambda: depth(ch, "ttl-deep") == 0, timeout=20)
    assert wait_for(lambda: depth(ch, "dlq") == n, timeout=20)
    assert_in_order(drain(ch, "dlq", n), list(range(n)))
    conn.close()


def test_priorities_hold_for_paged_messages(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("prio", arguments={"x-max-priority": 3})
    low, high = range(0, 6000), range(6000, 12000)
    publish(ch, "prio", low, priority=0)
    publish(ch, "prio", high, priority=3)
    assert_in_order(drain(ch, "prio", 12000), list(high) + list(low))
    conn.close()


def test_requeued_paged_messages_come_back_in_their_place(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("requeue")
    publish(ch, "requeue", range(N))
    # take 3000 unacked (reading paged ones back), then give them all back
    ch.basic_qos(prefetch_count=3000)
    taken = 0
    for method, props, body in ch.consume("requeue", inactivity_timeout=5):
        assert method is not None
        taken += 1
        if taken == 3000:
            ch.basic_nack(method.delivery_tag, multiple=True, requeue=True)
            break
    ch.cancel()
    assert wait_for(lambda: depth(ch, "requeue") == N)
    assert_in_order(drain(ch, "requeue", N), list(range(N)))
    conn.close()


def test_paged_messages_recovered_after_a_restart_still_expire(ferryd_factory):
    d = ferryd_factory("--memory-budget", BUDGET)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("ttl-durable", durable=True, arguments={"x-message-ttl": 4000})
    publish(ch, "ttl-durable", range(N), persistent=True)
    conn.close()
    assert d.stop() == 0
    d2 = ferryd_factory("--memory-budget", BUDGET, data_dir=d.data_dir)
    conn = connect(d2)
    ch = conn.channel()
    assert wait_for(lambda: depth(ch, "ttl-durable") == 0, timeout=20)
    conn.close()
