"""Queues over the management API (issue 11): declare, list, page and sort, publish through
amq.default, get, purge, delete, bindings — the forms RabbitMQ's API accepts, including
rabbitmqadmin's booleans and counts sent as strings."""
import threading
import time

import pika


def declared(url, names):
    """A connection to url after declaring the queues names on it (and its channel)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for q in names:
        ch.queue_declare(q)
    return conn, ch


class Churn:
    """Another client declaring 500 queues and deleting them again, over and over (enough new
    queues to double a vhost's queue map, so it rehashes between the loop's turns), for as long
    as the with-block runs; what went wrong is in .errors."""

    def __init__(self, url):
        self.url = url
        self.stop = threading.Event()
        self.errors = []
        self.t = threading.Thread(target=self.run)

    def run(self):
        try:
            c = pika.BlockingConnection(pika.URLParameters(self.url))
            cc = c.channel()
            n = 0
            while not self.stop.is_set():
                for i in range(500):
                    cc.queue_declare(f"churn-{n}-{i}")
                for i in range(500):
                    cc.queue_delete(f"churn-{n}-{i}")
                n += 1
            c.close()
        except Exception as e:  # reported by the tests' assertions
            self.errors.append(e)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()


def test_declare_list_and_inequivalent_redeclare(mgmt):
    api = mgmt.api
    assert api.put("/api/queues/%2F/q1", {"durable": True, "arguments": {"x-max-length": 10}})[0] == 201
    assert api.put("/api/queues/%2F/q1", {"durable": "true", "arguments": {"x-max-length": 10}})[0] == 204
    status, body, _ = api.put("/api/queues/%2F/q1", {"durable": False})
    assert status == 400
    assert body == {"error": "bad_request", "reason": "inequivalent arg 'durable' for queue 'q1' in vhost '/': "
                                                      "received 'false' but current is 'true'"}
    status, qs, _ = api.get("/api/queues")
    assert [q["name"] for q in qs] == ["q1"]
    q = qs[0]
    assert q["durable"] is True and q["arguments"] == {"x-max-length": 10} and q["vhost"] == "/"
    assert q["type"] == "classic" and q["state"] == "running" and q["messages"] == 0
    status, one, _ = api.get("/api/queues/%2F/q1")
    assert status == 200 and one["consumer_details"] == [] and one["name"] == "q1"


def test_publish_get_counts_and_rates(mgmt):
    api = mgmt.api
    api.put("/api/queues/%2F/work", {"durable": False, "auto_delete": "false"})
    for i in range(3):
        status, body, _ = api.post("/api/exchanges/%2F/amq.default/publish",
                                   {"properties": {"delivery_mode": "2", "correlation_id": f"c{i}",
                                                   "headers": {"h": i}},
                                    "routing_key": "work", "payload": f"m{i}", "payload_encoding": "string"})
        assert (status, body) == (200, {"routed": True})
    status, body, _ = api.post("/api/exchanges/%2F/amq.default/publish",
                               {"properties": {}, "routing_key": "nowhere", "payload": "x",
                                "payload_encoding": "string"})
    assert body == {"routed": False}
    status, q, _ = api.get("/api/queues/%2F/work")
    assert q["messages"] == 3 and q["messages_ready"] == 3 and q["message_stats"]["publish"] == 3
    status, msgs, _ = api.post("/api/queues/%2F/work/get", {"count": "2", "ackmode": "ack_requeue_true",
                                                            "encoding": "auto", "truncate": "50000"})
    assert status == 200 and [m["payload"] for m in msgs] == ["m0", "m1"]
    assert msgs[0]["properties"]["correlation_id"] == "c0" and msgs[0]["properties"]["headers"] == {"h": 0}
    assert msgs[0]["properties"]["delivery_mode"] == 2
    assert msgs[0]["message_count"] == 2 and msgs[0]["payload_encoding"] == "string"
    status, q, _ = api.get("/api/queues/%2F/work")
    assert q["messages"] == 3  # requeued
    status, msgs, _ = api.post("/api/queues/%2F/work/get", {"count": 5, "ackmode": "ack_requeue_false",
                                                            "encoding": "base64"})
    assert len(msgs) == 3 and msgs[0]["payload_encoding"] == "base64" and msgs[0]["redelivered"] is True
    status, q, _ = api.get("/api/queues/%2F/work")
    assert q["messages"] == 0
    # binary payloads come back base64 in auto mode
    api.post("/api/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": "work",
                                                        "payload": "/w==", "payload_encoding": "base64"})
    status, msgs, _ = api.post("/api/queues/%2F/work/get", {"count": 1, "ackmode": "ack_requeue_false",
                                                            "encoding": "auto"})
    assert msgs[0]["payload"] == "/w==" and msgs[0]["payload_encoding"] == "base64"
    assert msgs[0]["properties"] == []


def test_rates_follow_a_steady_publisher_within_5_seconds(mgmt):
    api = mgmt.api
    c = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    ch = c.channel()
    ch.queue_declare("rated")
    t0 = time.time()
    while time.time() - t0 < 3.2:
        for _ in range(20):
            ch.basic_publish("", "rated", b"x")
        c.process_data_events(0.1)
    time.sleep(1.1)  # counts are at most 1 s old
    status, q, _ = api.get("/api/queues/%2F/rated")
    n = q["messages"]
    assert n >= 200
    rate = q["message_stats"]["publish_details"]["rate"]
    assert 20 < rate < 400, rate
    status, ov, _ = api.get("/api/overview")
    assert ov["message_stats"]["publish"] >= n and ov["queue_totals"]["messages"] >= n
    assert 20 < ov["message_stats"]["publish_details"]["rate"] < 400
    status, x, _ = api.get("/api/exchanges/%2F/amq.default")
    assert x["message_stats"]["publish_in"] >= n and 20 < x["message_stats"]["publish_in_details"]["rate"] < 400
    c.close()


def test_pagination_sorting_filtering_and_columns(mgmt):
    api = mgmt.api
    for i in range(7):
        api.put(f"/api/queues/%2F/page-{i}", {"durable": False})
    api.put("/api/queues/%2F/other", {"durable": False})
    status, body, _ = api.get("/api/queues?page=2&page_size=3&name=page&sort=name&sort_reverse=true")
    assert status == 200
    assert body["total_count"] == 8 and body["filtered_count"] == 7 and body["page_count"] == 3
    assert body["page"] == 2 and body["page_size"] == 3 and body["item_count"] == 3
    assert [q["name"] for q in body["items"]] == ["page-3", "page-2", "page-1"]
    status, body, _ = api.get("/api/queues?page=1&page_size=100&name=%5Epage-%5B12%5D%24&use_regex=true")
    assert [q["name"] for q in body["items"]] == ["page-1", "page-2"]
    status, body, _ = api.get("/api/queues?columns=name,message_stats.publish")
    assert body[0] == {"name": "other", "message_stats": {"publish": 0}}
    assert api.get("/api/queues?page=0")[0] == 400
    assert api.get("/api/queues?page=1&page_size=501")[0] == 400
    assert api.get("/api/queues?page=9&page_size=3")[0] == 400


def test_purge_delete_and_bindings(mgmt):
    api = mgmt.api
    api.put("/api/queues/%2F/b1", {"durable": False})
    assert api.put("/api/exchanges/%2F/ev", {"type": "topic", "durable": "false"})[0] == 201
    status, _, headers = api.post("/api/bindings/%2F/e/ev/q/b1", {"routing_key": "order.*", "arguments": {}})
    assert status == 201 and headers["Location"]
    status, bs, _ = api.get("/api/queues/%2F/b1/bindings")
    assert [(b["source"], b["routing_key"]) for b in bs] == [("", "b1"), ("ev", "order.*")]
    status, bs, _ = api.get("/api/exchanges/%2F/ev/bindings/source")
    assert [b["destination"] for b in bs] == ["b1"]
    api.post("/api/exchanges/%2F/ev/publish", {"properties": {}, "routing_key": "order.new", "payload": "p",
                                               "payload_encoding": "string"})
    assert api.get("/api/queues/%2F/b1")[1]["messages"] == 1
    assert api.delete("/api/queues/%2F/b1/contents")[0] == 204
    assert api.get("/api/queues/%2F/b1")[1]["messages"] == 0
    status, b, _ = api.get("/api/bindings/%2F/e/ev/q/b1")
    pk = b[0]["properties_key"]
    assert api.get(f"/api/bindings/%2F/e/ev/q/b1/{pk}")[0] == 200
    assert api.delete(f"/api/bindings/%2F/e/ev/q/b1/{pk}")[0] == 204
    assert api.get("/api/bindings/%2F/e/ev/q/b1")[1] == []
    assert api.delete("/api/queues/%2F/b1")[0] == 204
    assert api.get("/api/queues/%2F/b1")[0] == 404
    assert api.delete("/api/exchanges/%2F/ev")[0] == 204
    # a reserved name is refused with RabbitMQ's reason
    status, body, _ = api.put("/api/queues/%2F/amq.mine", {})
    assert status == 401 or status == 400
    assert "amq." in body["reason"]


def test_connections_channels_consumers_listed(mgmt):
    api = mgmt.api
    c = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    ch = c.channel()
    ch.queue_declare("cq")
    ch.basic_qos(prefetch_count=7)
    ch.basic_consume("cq", lambda *a: None, consumer_tag="tag-1")
    c.process_data_events(0.2)
    status, conns, _ = api.get("/api/connections")
    assert len(conns) == 1 and conns[0]["user"] == "guest" and conns[0]["channels"] == 1
    assert conns[0]["client_properties"]["product"] == "Pika Python Client Library"
    status, one, _ = api.get("/api/connections/" + conns[0]["name"].replace(" ", "%20").replace(">", "%3E"))
    assert status == 200 and one["name"] == conns[0]["name"]
    status, chans, _ = api.get("/api/channels")
    assert len(chans) == 1 and chans[0]["consumer_count"] == 1 and chans[0]["prefetch_count"] == 7
    status, cons, _ = api.get("/api/consumers")
    assert [(x["consumer_tag"], x["queue"]["name"], x["prefetch_count"]) for x in cons] == [("tag-1", "cq", 7)]
    status, q, _ = api.get("/api/queues/%2F/cq")
    assert q["consumers"] == 1 and q["consumer_details"][0]["consumer_tag"] == "tag-1"
    # closing a connection from the API
    name = conns[0]["name"].replace(" ", "%20").replace(">", "%3E")
    assert api.delete("/api/connections/" + name)[0] == 204
    time.sleep(0.3)
    assert api.get("/api/connections")[1] == []
    try:
        c.close()
    except Exception:
        pass


def test_what_ferry_lacks_answers_empty_lists_and_refuses_changes(mgmt):
    api = mgmt.api
    for path in ("/api/policies", "/api/policies/%2F", "/api/parameters", "/api/global-parameters",
                 "/api/vhost-limits", "/api/topic-permissions", "/api/feature-flags"):
        assert api.get(path)[:2] == (200, []), path
    assert api.get("/api/policies/nope")[0] == 404
    assert api.get("/api/policies/%2F/p")[0] == 404
    status, body, _ = api.put("/api/policies/%2F/p", {"pattern": ".*", "definition": {"max-length": 1}})
    assert status == 400 and "not supported" in body["reason"]


def test_queue_list_under_churn_has_no_duplicates_and_misses_no_stable_queue(mgmt):
    """The loop copies the queue list a few dozen queues per turn; while it does, another client
    declares and deletes queues (the vhost's queue map grows and rehashes between turns). Every
    listing is sorted by name, holds each name once, and holds every queue that existed before
    the listing began and was not deleted."""
    stable = [f"stable-{i:04d}" for i in range(3000)]
    conn, ch = declared(mgmt.broker.url, stable)
    with Churn(mgmt.broker.url) as churn:
        listings = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            status, body, _ = mgmt.api.get("/api/queues?columns=name")
            assert status == 200
            names = [q["name"] for q in body]
            assert len(names) == len(set(names)), "a queue listed twice"
            assert names == sorted(names)
            missing = set(stable) - set(names)
            assert not missing, f"{len(missing)} stable queues missing, e.g. {sorted(missing)[:3]}"
            listings += 1
        assert listings >= 3
    conn.close()
    assert not churn.errors, churn.errors


def test_idle_since_is_the_wall_clock_of_the_last_publish(mgmt):
    """A queue's idle_since is the time of its last publish in UTC, to the second: it comes
    from the loop's cached clock plus an offset read again once a second, so it must follow a
    publish made seconds after the first, and never be ahead of the real clock."""
    import datetime

    def idle_since():
        status, q, _ = mgmt.api.get("/api/queues/%2F/idle")
        assert status == 200
        return datetime.datetime.fromisoformat(q["idle_since"]).timestamp()

    conn, ch = declared(mgmt.broker.url, ["idle"])
    for _ in range(2):
        before = time.time()
        ch.basic_publish("", "idle", b"x")
        conn.process_data_events(0.2)
        after = time.time()
        t = idle_since()
        assert before - 1.0 <= t <= after + 0.01, (before, t, after)
        time.sleep(2.5)
    conn.close()


def test_every_queue_is_sampled_while_rounds_span_many_turns_and_the_map_rehashes(mgmt):
    """Rates come from a sampling round that records 64 queues a loop turn (so 10,000 queues do
    not stall the loop once a second). With 2,000 queues a round spans dozens of turns while
    another client declares and deletes queues (the map grows and rehashes between turns).
    Every one of the 2,000 queues, published to twice a second, shows a publish rate near 2/s:
    a queue the rounds skipped would show 0."""

    names = [f"sampled-{i:04d}" for i in range(2000)]
    conn, ch = declared(mgmt.broker.url, names)
    with Churn(mgmt.broker.url) as churn:
        t0 = time.monotonic()
        passes = 0
        while time.monotonic() - t0 < 6:
            for q in names:
                ch.basic_publish("", q, b"x")
            passes += 1
            conn.process_data_events(max(0.0, t0 + passes * 0.5 - time.monotonic()))
        time.sleep(1.1)  # counts are at most 1 s old
    assert not churn.errors, churn.errors
    status, body, _ = mgmt.api.get("/api/queues?columns=name,message_stats")
    assert status == 200
    rates = {q["name"]: q.get("message_stats", {}).get("publish_details", {}).get("rate", 0.0)
             for q in body if q["name"].startswith("sampled-")}
    assert sorted(rates) == names
    low = {q: r for q, r in rates.items() if not 0.8 < r < 4}
    assert not low, f"{len(low)} of 2,000 queues with a publish rate off 2/s, e.g. {sorted(low.items())[:5]}"
    conn.close()


def test_send_pend_counts_large_bodies_waiting_for_a_slow_reader(mgmt):
    """A consumer that stops reading: the 1 MiB bodies waiting for its socket are sent from the
    shared messages (writev slices, not the output buffer), and send_pend counts them too."""
    slow = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    sch = slow.channel()
    sch.queue_declare("big")
    sch.basic_consume("big", lambda *a: None, auto_ack=True)
    slow.process_data_events(0.2)  # consume-ok read; from here on nothing reads the socket
    pub = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    pch = pub.channel()
    body = b"x" * (1 << 20)
    for _ in range(24):
        pch.basic_publish("", "big", body)
    pub.process_data_events(0.2)
    pending = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pending <= (1 << 20):
        time.sleep(0.3)
        conns = mgmt.api.get("/api/connections")[1]
        pending = max(c["send_pend"] for c in conns)
    try:
        assert pending > (1 << 20), f"send_pend {pending} with several 1 MiB bodies unread"
    finally:
        pub.close()
        slow.close()


def test_definitions_import_refuses_a_queue_its_declare_would_refuse(mgmt):
    """As Debian's RabbitMQ 3.10 answers (checked side by side): POST /api/definitions with a
    queue whose arguments queue.declare refuses (406) is 400 bad_request naming the argument;
    that queue is not created, the exchanges imported before it are."""
    defs = {"exchanges": [{"name": "okx", "vhost": "/", "type": "fanout", "durable": True,
                           "auto_delete": False, "internal": False, "arguments": {}}],
            "queues": [{"name": "bad", "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {"x-max-length": "abc"}}]}
    status, body, _ = mgmt.api.post("/api/definitions", defs)
    assert status == 400 and body["error"] == "bad_request"
    assert "invalid arg 'x-max-length' for queue 'bad' in vhost '/'" in body["reason"]
    assert mgmt.api.get("/api/queues/%2F/bad")[0] == 404
    assert mgmt.api.get("/api/exchanges/%2F/okx")[0] == 200
    # the property rules too: a quorum queue must be durable
    defs = {"queues": [{"name": "qq", "vhost": "/", "durable": False, "auto_delete": False,
                        "arguments": {"x-queue-type": "quorum"}}]}
    status, body, _ = mgmt.api.post("/api/definitions", defs)
    assert status == 400 and "invalid property 'non-durable' for queue 'qq'" in body["reason"]
    assert mgmt.api.get("/api/queues/%2F/qq")[0] == 404


def test_definitions_import_creates_a_stream_that_takes_and_replays_messages(mgmt):
    """A stream queue in imported definitions (as an export from RabbitMQ or ferryd has it) is a
    stream: appended to, replayed from the first offset with its x-stream-offset headers."""
    import pika
    defs = {"queues": [{"name": "events", "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {"x-queue-type": "stream", "x-max-length-bytes": 1 << 30}}]}
    status, body, _ = mgmt.api.post("/api/definitions", defs)
    assert status in (201, 204), body
    assert mgmt.api.get("/api/queues/%2F/events")[1]["type"] == "stream"
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", "events", f"e{i}".encode())
        ch.basic_qos(prefetch_count=10)
        got = []

        def on(c, m, p, b):
            got.append((p.headers["x-stream-offset"], b))
            c.basic_ack(m.delivery_tag)
        ch.basic_consume("events", on, arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            conn.process_data_events(0.1)
        assert [b for _, b in got] == [b"e0", b"e1", b"e2"]
        assert [o for o, _ in got] == sorted(o for o, _ in got)
    finally:
        conn.close()
    # exported again as a stream
    status, exported, _ = mgmt.api.get("/api/definitions")
    q = [x for x in exported["queues"] if x["name"] == "events"][0]
    assert q["arguments"]["x-queue-type"] == "stream"
