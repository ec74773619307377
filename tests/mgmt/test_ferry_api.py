"""Ferry's additions under /api/ferry/ (issue 11): per-queue backlog (oldest message age,
dead letters by reason, retries, delayed pending) and the dead-letter tools (peek with the
x-death reason, redrive all or N back to their queues, purge)."""
import time

import pika
import pytest


def setup_dlq(url, n=3):
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.queue_declare("orders", durable=True, arguments={"x-dead-letter-exchange": "",
                                                        "x-dead-letter-routing-key": "orders.dlq"})
    ch.queue_declare("orders.dlq", durable=True)
    for i in range(n):
        ch.basic_publish("", "orders", b"order-%d" % i, pika.BasicProperties(correlation_id=f"c-{i}",
                                                                            delivery_mode=2))
    for _ in range(n):
        m = ch.basic_get("orders")
        ch.basic_reject(m[0].delivery_tag, requeue=False)
    return c, ch


def wait_for(fn, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def test_backlog_view_counts_dead_letters_by_reason_and_ages(mgmt):
    api = mgmt.api
    c, ch = setup_dlq(mgmt.broker.url)
    ch.queue_declare("ttl", arguments={"x-message-ttl": 1, "x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": "orders.dlq"})
    ch.basic_publish("", "ttl", b"expires")
    ch.basic_publish("", "orders", b"waiting")
    c.process_data_events(0.1)
    t0 = time.time()
    q = wait_for(lambda: api.get("/api/ferry/queues/%2F/orders")[1]["oldest_message_age_seconds"] >= 1.0 and
                 api.get("/api/ferry/queues/%2F/orders")[1], 4)
    assert q, "the oldest message's age did not grow"
    assert q["dead_lettered"] == {"rejected": 3, "expired": 0, "maxlen": 0, "delivery_limit": 0}
    assert q["dead_lettered_total"] == 3 and q["messages"] == 1 and q["messages_ready"] == 1
    age = q["oldest_message_age_seconds"]
    assert age <= time.time() - t0 + 0.5
    ttl = wait_for(lambda: api.get("/api/ferry/queues/%2F/ttl")[1]["dead_lettered"]["expired"] == 1, 3)
    assert ttl
    dlq = api.get("/api/ferry/queues/%2F/orders.dlq")[1]
    assert dlq["messages"] == 4 and dlq["oldest_message_age_seconds"] > 0
    names = [x["name"] for x in api.get("/api/ferry/queues")[1]]
    assert {"orders", "orders.dlq", "ttl"} <= set(names)
    assert api.get("/api/ferry/queues/%2F/nope")[0] == 404
    assert api.get("/api/ferry/queues/nope")[0] == 404
    c.close()


def test_retries_and_delayed_pending(mgmt):
    api = mgmt.api
    c = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    ch = c.channel()
    ch.queue_declare("jobs", arguments={"x-retry-delays": [60000]})
    ch.basic_publish("", "jobs", b"j")
    m = ch.basic_get("jobs")
    ch.basic_reject(m[0].delivery_tag, requeue=False)
    q = wait_for(lambda: api.get("/api/ferry/queues/%2F/jobs")[1]["retries"] == 1 and
                 api.get("/api/ferry/queues/%2F/jobs")[1])
    assert q["delayed_pending"] == 1 and q["messages"] == 0
    c.close()


def test_peek_redrive_and_purge_dead_letters(mgmt):
    api = mgmt.api
    c, ch = setup_dlq(mgmt.broker.url, n=3)
    status, peek, _ = api.get("/api/ferry/dead-letters/%2F/orders.dlq?count=2")
    assert status == 200 and peek["messages"] == 3 and peek["count"] == 2
    item = peek["items"][0]
    assert item["reason"] == "rejected" and item["original_queue"] == "orders"
    assert item["payload"] == "order-0" and item["correlation_id"] == "c-0"
    assert item["x_death"]["queue"] == "orders" and item["x_death"]["count"] == 1
    assert peek["reasons_shown"]["rejected"] == 2
    # peeking takes nothing
    assert api.get("/api/queues/%2F/orders.dlq")[1]["messages"] == 3
    status, page2, _ = api.get("/api/ferry/dead-letters/%2F/orders.dlq?count=5&offset=2")
    assert [i["payload"] for i in page2["items"]] == ["order-2"] and page2["items"][0]["position"] == 2
    # redrive one, then the rest
    status, r, _ = api.post("/api/ferry/dead-letters/%2F/orders.dlq/redrive", {"count": 1})
    assert (status, r) == (200, {"redriven": 1, "remaining": 2})
    assert api.get("/api/queues/%2F/orders")[1]["messages"] == 1
    got = ch.basic_get("orders", auto_ack=True)
    assert got[2] == b"order-0" and got[1].correlation_id == "c-0"
    status, r, _ = api.post("/api/ferry/dead-letters/%2F/orders.dlq/redrive", {})
    assert r == {"redriven": 2, "remaining": 0}
    # dead-letter again, then purge
    for _ in range(2):
        m = ch.basic_get("orders")
        ch.basic_reject(m[0].delivery_tag, requeue=False)
    assert wait_for(lambda: api.get("/api/queues/%2F/orders.dlq")[1]["messages"] == 2)
    status, r, _ = api.post("/api/ferry/dead-letters/%2F/orders.dlq/purge")
    assert (status, r) == (200, {"purged": 2})
    assert api.delete("/api/ferry/dead-letters/%2F/orders.dlq")[1] == {"purged": 0}
    c.close()


def test_dead_letter_tools_refuse_bad_input(mgmt):
    api = mgmt.api
    api.put("/api/queues/%2F/d", {"durable": False})
    assert api.get("/api/ferry/dead-letters/%2F/nope")[0] == 404
    assert api.get("/api/ferry/dead-letters/nope/d")[0] == 404
    assert api.get("/api/ferry/dead-letters/%2F/d?count=-1")[0] == 400
    assert api.get("/api/ferry/dead-letters/%2F/d?count=abc")[0] == 400
    assert api.post("/api/ferry/dead-letters/%2F/d/redrive", {"count": "x"})[0] == 400
    assert api.call("POST", "/api/ferry/dead-letters/%2F/d/redrive", raw=b"{nope")[0] == 400
    assert api.get("/api/ferry/dead-letters/%2F/d/redrive")[0] == 405
    assert api.post("/api/ferry/dead-letters/%2F/d/other")[0] == 404
    # a management user without permissions on the queue may not purge it
    api.put("/api/users/viewer", {"password": "v", "tags": "monitoring"})
    status, body, _ = api.delete("/api/ferry/dead-letters/%2F/d", auth=("viewer", "v"))
    assert status == 401 and body["error"] == "not_authorised"
    # messages without x-death stay where they are
    api.post("/api/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": "d", "payload": "plain",
                                                        "payload_encoding": "string"})
    assert api.post("/api/ferry/dead-letters/%2F/d/redrive", {})[1] == {"redriven": 0, "remaining": 1}
    status, peek, _ = api.get("/api/ferry/dead-letters/%2F/d")
    assert peek["items"][0]["reason"] is None and peek["items"][0]["x_death"] is None
