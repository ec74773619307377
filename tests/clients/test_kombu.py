"""kombu (py-amqp transport), the library under Celery, used unchanged against the broker.

Each test is one behaviour a kombu application relies on. Queue depths and messages are
checked through a separate pika connection (`inspect`) where that proves more than kombu's
own view would.
"""
import datetime
import decimal
import socket
import threading
import time

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue


@pytest.fixture
def conn(broker):
    c = Connection(broker.url, connect_timeout=5, heartbeat=0)
    c.connect()
    yield c
    c.release()


def drain_until(conn, received, n, timeout=10.0):
    """drain_events until `received` has n items or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while len(received) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(received)} of {n} messages arrived within {timeout}s"
        try:
            conn.drain_events(timeout=min(left, 1.0))
        except socket.timeout:
            pass


def test_direct_exchange_routes_by_exact_key_to_consumer(conn, cleanup):
    ex = Exchange(cleanup.exchange(), type="direct", durable=False, auto_delete=False)
    q = Queue(cleanup.queue(), exchange=ex, routing_key="invoice.paid", durable=False)
    received = []
    with Consumer(conn, queues=[q], callbacks=[lambda body, m: (received.append(body), m.ack())],
                  accept=["json"]):
        producer = Producer(conn, exchange=ex, serializer="json")
        producer.publish({"n": 1}, routing_key="invoice.paid", declare=[ex])
        producer.publish({"n": 2}, routing_key="invoice.unpaid")   # no binding: dropped
        producer.publish({"n": 3}, routing_key="invoice.paid")
        drain_until(conn, received, 2)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
    assert received == [{"n": 1}, {"n": 3}]


def test_topic_exchange_routes_by_wildcard_pattern(conn, cleanup):
    ex = Exchange(cleanup.exchange(), type="topic", durable=False)
    star = Queue(cleanup.queue(), exchange=ex, routing_key="orders.*.created", durable=False)
    hash_ = Queue(cleanup.queue(), exchange=ex, routing_key="orders.#", durable=False)
    got_star, got_hash = [], []
    with Consumer(conn, queues=[star], callbacks=[lambda b, m: (got_star.append(b), m.ack())]), \
         Consumer(conn, queues=[hash_], callbacks=[lambda b, m: (got_hash.append(b), m.ack())]):
        producer = Producer(conn, exchange=ex, serializer="json")
        for key in ("orders.eu.created", "orders.eu.cancelled", "orders.created",
                    "orders.us.west.created", "billing.eu.created"):
            producer.publish(key, routing_key=key)
        deadline = time.monotonic() + 10
        while len(got_star) + len(got_hash) < 5 and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.5)
            except socket.timeout:
                pass
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
    assert got_star == ["orders.eu.created"]
    assert got_hash == ["orders.eu.created", "orders.eu.cancelled", "orders.created",
                        "orders.us.west.created"]


def test_simple_queue_put_then_get_returns_payload(conn, cleanup, inspect):
    name = cleanup.queue()
    with conn.SimpleQueue(name, serializer="json") as sq:
        sq.put({"hello": "world", "n": [1, 2, 3]})
        msg = sq.get(block=True, timeout=5)
        assert msg.payload == {"hello": "world", "n": [1, 2, 3]}
        assert msg.content_type == "application/json"
        msg.ack()
        with pytest.raises(sq.Empty):
            sq.get(block=True, timeout=0.5)
    assert inspect.depth(name) == 0


def test_simple_queue_get_nowait_on_empty_queue_raises_empty(conn, cleanup):
    with conn.SimpleQueue(cleanup.queue()) as sq:
        with pytest.raises(sq.Empty):
            sq.get_nowait()
        sq.put("one")
        deadline = time.monotonic() + 5
        while True:   # basic.get right after a publish on another channel may race; bounded
            try:
                msg = sq.get_nowait()
                break
            except sq.Empty:
                assert time.monotonic() < deadline, "published message never reached basic.get"
                time.sleep(0.05)
        assert msg.payload == "one"
        msg.ack()


def test_acked_message_is_not_redelivered_after_reconnect(broker, cleanup, inspect):
    name = cleanup.queue()
    with Connection(broker.url, connect_timeout=5) as c:
        with c.SimpleQueue(name) as sq:
            sq.put("done")
            sq.get(timeout=5).ack()
    assert inspect.depth(name) == 0
    with Connection(broker.url, connect_timeout=5) as c:
        with c.SimpleQueue(name) as sq:
            with pytest.raises(sq.Empty):
                sq.get(timeout=0.5)


def test_unacked_message_returns_to_queue_with_redelivered_flag_when_connection_closes(broker, cleanup):
    name = cleanup.queue()
    with Connection(broker.url, connect_timeout=5) as c:
        with c.SimpleQueue(name) as sq:
            sq.put("work")
            first = sq.get(timeout=5)
            assert first.delivery_info["redelivered"] is False
            # no ack: closing the connection must put it back
    with Connection(broker.url, connect_timeout=5) as c:
        with c.SimpleQueue(name) as sq:
            again = sq.get(timeout=5)
            assert again.payload == "work"
            assert again.delivery_info["redelivered"] is True
            again.ack()


def test_reject_without_requeue_discards_message(conn, cleanup, inspect):
    name = cleanup.queue()
    with conn.SimpleQueue(name) as sq:
        sq.put("poison")
        sq.put("good")
        m = sq.get(timeout=5)
        assert m.payload == "poison"
        m.reject(requeue=False)
        m2 = sq.get(timeout=5)
        assert m2.payload == "good"
        m2.ack()
        with pytest.raises(sq.Empty):
            sq.get(timeout=0.5)
    assert inspect.depth(name) == 0


def test_requeued_message_is_delivered_again_with_redelivered_flag(conn, cleanup):
    with conn.SimpleQueue(cleanup.queue()) as sq:
        sq.put("retry-me")
        m = sq.get(timeout=5)
        assert m.delivery_info["redelivered"] is False
        m.requeue()
        again = sq.get(timeout=5)
        assert again.payload == "retry-me"
        assert again.delivery_info["redelivered"] is True
        again.ack()


def test_reject_with_requeue_is_delivered_again(conn, cleanup):
    with conn.SimpleQueue(cleanup.queue()) as sq:
        sq.put("again")
        sq.get(timeout=5).reject(requeue=True)
        again = sq.get(timeout=5)
        assert (again.payload, again.delivery_info["redelivered"]) == ("again", True)
        again.ack()


def test_confirm_publish_returns_after_broker_acks_and_message_is_queued(broker, cleanup, inspect):
    name = cleanup.queue()
    q = Queue(name, exchange=Exchange("", type="direct"), routing_key=name, durable=True)
    with Connection(broker.url, connect_timeout=5, transport_options={"confirm_publish": True}) as c:
        producer = Producer(c)
        for i in range(50):
            producer.publish({"i": i}, routing_key=name, declare=[q], serializer="json",
                             delivery_mode=2, confirm_timeout=5)
        # every publish above returned only after its basic.ack, so all 50 are in the queue now
        assert inspect.depth(name) == 50
        assert c.default_channel._confirm_selected


def test_confirm_publish_of_unroutable_mandatory_message_raises(broker, cleanup):
    ex = Exchange(cleanup.exchange(), type="direct", durable=False)
    with Connection(broker.url, connect_timeout=5, transport_options={"confirm_publish": True}) as c:
        producer = Producer(c, exchange=ex)
        ex(c.default_channel).declare()
        with pytest.raises(amqp.exceptions.ChannelError) as e:   # basic.return 312 NO_ROUTE
            producer.publish("nowhere", routing_key="no-such-binding", mandatory=True,
                             confirm_timeout=5)
        assert e.value.reply_code == 312


def test_confirm_publish_nack_raises_message_nacked(broker, cleanup):
    """A queue that rejects publishes when full makes the broker answer basic.nack."""
    name = cleanup.queue()
    q = Queue(name, exchange=Exchange("", type="direct"), routing_key=name, durable=False,
              queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    with Connection(broker.url, connect_timeout=5, transport_options={"confirm_publish": True}) as c:
        producer = Producer(c)
        producer.publish("fits", routing_key=name, declare=[q], confirm_timeout=5)
        with pytest.raises(amqp.exceptions.MessageNacked):
            producer.publish("overflows", routing_key=name, confirm_timeout=5)


def test_message_properties_and_headers_round_trip(conn, cleanup):
    name = cleanup.queue()
    stamp = datetime.datetime(2024, 5, 17, 12, 30, 45)
    headers = {
        "str": "ünïcode ✓",
        "int": 42,
        "negative": -7,
        "big": 2 ** 40,
        "float": 1.5,
        "bool": True,
        "false": False,
        "none": None,
        "decimal": decimal.Decimal("12.345"),
        "when": stamp,
        "list": [1, "two", [3], {"four": 4}],
        "table": {"nested": {"deeper": "yes"}, "n": 1},
        "x-retry-count": 3,
    }
    with conn.SimpleQueue(name) as sq:
        sq.producer.publish(
            b"\x00\x01binary\xff", routing_key=name, headers=headers,
            content_type="application/x-ferry", content_encoding="binary",
            delivery_mode=2, priority=5, correlation_id="corr-1", reply_to="reply.queue",
            expiration=60, message_id="msg-1",   # kombu takes seconds
            timestamp=1700000000, type="ferry.test",
            user_id="guest", app_id="kombu-test")
        m = sq.get(timeout=5)
        m.ack()
    assert m.body == b"\x00\x01binary\xff"
    assert m.headers == headers
    p = m.properties
    assert m.content_type == "application/x-ferry"
    assert m.content_encoding == "binary"
    assert m.delivery_info["routing_key"] == name
    assert p["delivery_mode"] == 2
    assert p["priority"] == 5
    assert p["correlation_id"] == "corr-1"
    assert p["reply_to"] == "reply.queue"
    assert p["expiration"] == "60000"
    assert p["message_id"] == "msg-1"
    assert p["timestamp"] == 1700000000
    assert p["type"] == "ferry.test"
    assert p["user_id"] == "guest"
    assert p["app_id"] == "kombu-test"


def test_publish_with_user_id_of_another_user_is_refused(conn, cleanup):
    """RabbitMQ validates user_id against the connection's user (406 PRECONDITION_FAILED)."""
    name = cleanup.queue()
    ch = conn.channel()
    ch.queue_declare(name, durable=False, auto_delete=False)
    ch.basic_publish(ch.prepare_message(b"x", properties={"user_id": "mallory"}), "", name)
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        ch.queue_declare(name, passive=True)   # a synchronous call surfaces the channel.close


def test_drain_events_times_out_when_nothing_arrives(conn, cleanup):
    q = Queue(cleanup.queue(), durable=False)
    received = []
    with Consumer(conn, queues=[q], callbacks=[lambda b, m: (received.append(b), m.ack())]):
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
        waited = time.monotonic() - t0
        assert 0.4 <= waited < 3.0
        Producer(conn).publish("late", routing_key=q.name)
        conn.drain_events(timeout=5)
    assert received == ["late"]


def test_consumer_with_prefetch_count_gets_no_more_than_that_unacked(conn, cleanup):
    q = Queue(cleanup.queue(), durable=False)
    held = []
    consumer = Consumer(conn, queues=[q], callbacks=[lambda b, m: held.append(m)], prefetch_count=3)
    with consumer:
        producer = Producer(conn)
        for i in range(10):
            producer.publish(i, routing_key=q.name)
        drain_until(conn, held, 3)
        with pytest.raises(socket.timeout):   # 3 unacked: the broker must hold the rest back
            conn.drain_events(timeout=0.7)
        assert [m.payload for m in held] == [0, 1, 2]
        held[0].ack()
        drain_until(conn, held, 4)
        assert held[3].payload == 3
        for m in held[1:]:
            m.ack()


def test_consumer_cancel_stops_deliveries(conn, cleanup, inspect):
    q = Queue(cleanup.queue(), durable=False)
    received = []
    consumer = Consumer(conn, queues=[q], callbacks=[lambda b, m: (received.append(b), m.ack())])
    consumer.consume()
    producer = Producer(conn)
    producer.publish("before", routing_key=q.name)
    drain_until(conn, received, 1)
    assert inspect.consumers(q.name) == 1
    consumer.cancel()
    assert inspect.consumers(q.name) == 0
    producer.publish("after", routing_key=q.name)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.5)
    assert received == ["before"]
    assert inspect.depth(q.name) == 1


def test_queue_declare_with_expires_and_message_ttl_arguments(conn, cleanup, inspect):
    """kombu's Queue(expires=, message_ttl=, max_length=) become x-expires, x-message-ttl and
    x-max-length (Celery's pidbox and rpc:// reply queues use x-expires)."""
    q = Queue(cleanup.queue(), durable=False, expires=30, message_ttl=0.3, max_length=2)
    bound = q(conn.default_channel)
    bound.declare()
    producer = Producer(conn)
    for i in range(3):
        producer.publish(i, routing_key=q.name)
    deadline = time.monotonic() + 5
    while inspect.depth(q.name) != 2:   # max-length 2: the oldest is dropped
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    deadline = time.monotonic() + 5
    while inspect.depth(q.name) != 0:   # message-ttl 300 ms: both expire
        assert time.monotonic() < deadline, "messages outlived x-message-ttl"
        time.sleep(0.05)
    # redeclaring with different arguments is an error (406), the same arguments are fine
    bound.declare()
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        Queue(q.name, durable=False, expires=60)(conn.channel()).declare()


def test_ensure_republishes_after_the_connection_is_cut(broker, cleanup, inspect):
    name = cleanup.queue()
    q = Queue(name, durable=False)
    errors, revived = [], []
    with Connection(broker.url, connect_timeout=5) as c:
        producer = Producer(c)
        producer.publish("first", routing_key=name, declare=[q])
        # cut the TCP connection under kombu's feet, as a network failure would
        c.connection.sock.shutdown(socket.SHUT_RDWR)
        publish = c.ensure(producer, producer.publish, max_retries=3,
                           errback=lambda exc, interval: errors.append(exc),
                           on_revive=revived.append, interval_start=0.2, interval_step=0.2)
        publish("second", routing_key=name, declare=[q])
        assert errors, "the cut connection was never noticed"
        assert revived, "ensure() did not reconnect"
        assert c.connected
    deadline = time.monotonic() + 5
    while inspect.depth(name) != 2:
        assert time.monotonic() < deadline, f"depth {inspect.depth(name)}, expected 2"
        time.sleep(0.05)
    assert [inspect.get(name)[2] for _ in range(2)] == [b"first", b"second"]


class CuttableProxy:
    """A TCP forwarder to the broker that the test can take down and bring back on the same
    port, to make the broker 'go away' for a kombu client without touching the broker."""

    def __init__(self, host, port):
        self.target = (host, port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.pairs = []
        self.listener = None
        self.lock = threading.Lock()

    def up(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self):
        ls, self.listener = self.listener, None
        ls.shutdown(socket.SHUT_RDWR)   # wakes the accept() thread; close() alone would not
        ls.close()
        with self.lock:
            for s in self.pairs:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.pairs.clear()

    def _accept(self, ls):
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            with self.lock:
                self.pairs += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_ensure_connection_retries_until_the_broker_is_reachable_again(broker, cleanup, inspect):
    name = cleanup.queue()
    proxy = CuttableProxy(broker.host, broker.port)
    proxy.up()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    failures = []
    try:
        # confirms make each publish return only once the broker has the message, so cutting
        # the proxy cannot race with bytes still in flight through it
        with Connection(url, connect_timeout=2, transport_options={"confirm_publish": True}) as c:
            producer = Producer(c)
            producer.publish("before", routing_key=name, declare=[Queue(name, durable=False)])
            proxy.down()
            timer = threading.Timer(1.5, proxy.up)   # the broker "comes back" after 1.5 s
            timer.start()
            try:
                publish = c.ensure(producer, producer.publish, max_retries=10,
                                   errback=lambda exc, interval: failures.append(exc),
                                   interval_start=0.3, interval_step=0.3, interval_max=0.5)
                publish("after", routing_key=name, declare=[Queue(name, durable=False)])
            finally:
                timer.join()
            assert len(failures) >= 2, f"expected failed attempts while the proxy was down: {failures}"
    finally:
        proxy.down()
    assert [inspect.get(name)[2] for _ in range(2)] == [b"before", b"after"]


def test_heartbeats_keep_an_idle_connection_alive(broker, cleanup):
    """With heartbeat=2 the client gives up after missing ~2 intervals of server frames, so an
    idle connection survives 6 s only if the broker sends heartbeats (and accepts ours)."""
    with Connection(broker.url, heartbeat=2, connect_timeout=5) as c:
        c.connect()
        assert c.connection.heartbeat == 2   # negotiated: min(server's, ours)
        q = Queue(cleanup.queue(), durable=False)
        received = []
        with Consumer(c, queues=[q], callbacks=[lambda b, m: (received.append(b), m.ack())]):
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                c.heartbeat_check()   # raises ConnectionForced if the broker went silent
                try:
                    c.drain_events(timeout=0.5)
                except socket.timeout:
                    pass
            Producer(c).publish("still alive", routing_key=q.name)
            drain_until(c, received, 1, timeout=5)
        assert received == ["still alive"]
