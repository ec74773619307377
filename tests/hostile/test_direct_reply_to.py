"""Direct reply-to under hostile conditions (issue 8).

Item 16: a request sent with reply-to amq.rabbitmq.reply-to keeps its delivery mode,
expiration and priority (ferryd rewrites the reply-to property; nothing else may change)."""
import time

import pika

REPLY_TO = "amq.rabbitmq.reply-to"


def connect(b):
    return pika.BlockingConnection(pika.ConnectionParameters(host=b.host, port=b.port, blocked_connection_timeout=60))


def requester(conn):
    """A channel consuming from the reply-to pseudo-queue (required to send requests)."""
    ch = conn.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    return ch


def test_confirmed_persistent_request_survives_a_crash(ferryd_factory):
    d = ferryd_factory()
    conn = connect(d)
    ch = requester(conn)
    ch.queue_declare("requests", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "requests", b"request-1",
                     pika.BasicProperties(reply_to=REPLY_TO, delivery_mode=2))  # raises unless acked
    d.kill9()
    d2 = ferryd_factory(data_dir=d.data_dir)
    conn2 = connect(d2)
    method, props, body = conn2.channel().basic_get("requests", auto_ack=True)
    assert body == b"request-1", "a confirmed persistent request was lost in the crash"
    assert props.delivery_mode == 2
    assert props.reply_to.startswith(REPLY_TO + ".")
    conn2.close()


def test_request_expiration_is_honoured(conn_b):
    conn, q = conn_b
    ch = requester(conn)
    ch.basic_publish("", q, b"stale", pika.BasicProperties(reply_to=REPLY_TO, expiration="50"))
    ch.basic_publish("", q, b"fresh", pika.BasicProperties(reply_to=REPLY_TO))
    time.sleep(0.5)
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"fresh", "a request past its expiration was delivered"


def test_request_priority_is_honoured(conn_b):
    conn, _ = conn_b
    ch = requester(conn)
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 10}).method.queue
    ch.basic_publish("", q, b"low", pika.BasicProperties(reply_to=REPLY_TO, priority=1))
    ch.basic_publish("", q, b"high", pika.BasicProperties(reply_to=REPLY_TO, priority=9))
    bodies = [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)]
    assert bodies == [b"high", b"low"]
