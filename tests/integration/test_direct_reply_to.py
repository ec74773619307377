"""Request/reply over direct reply-to (amq.rabbitmq.reply-to): the requester consumes the
pseudo-queue in no-ack mode on its channel, publishes with reply_to=amq.rabbitmq.reply-to,
and the server replies to the address it finds in the delivered properties."""
import pika

from .helpers import channel_error, get_all, temp_queue, unique, wait_until

REPLY_TO = "amq.rabbitmq.reply-to"


def _start_rpc_server(conn, cleanup):
    """A server on its own connection that answers each request with its body upper-cased,
    to the reply_to and with the correlation_id it was given. Returns (queue, seen requests)."""
    ch = conn.channel()
    q = cleanup.queue(unique("rpc"))
    ch.queue_declare(q)
    seen = []

    def on_request(c, m, p, b):
        seen.append(p)
        c.basic_publish("", p.reply_to, b.upper(), pika.BasicProperties(correlation_id=p.correlation_id))
        c.basic_ack(m.delivery_tag)

    ch.basic_consume(q, on_request)
    return q, seen


def test_request_reply_via_direct_reply_to_matches_correlation_ids(connect, cleanup):
    server, client = connect(), connect()
    q, seen = _start_rpc_server(server, cleanup)
    ch = client.channel()
    replies = {}
    ch.basic_consume(REPLY_TO, lambda _c, _m, p, b: replies.__setitem__(p.correlation_id, b), auto_ack=True)
    for i in range(5):
        ch.basic_publish("", q, f"req{i}".encode(), pika.BasicProperties(reply_to=REPLY_TO, correlation_id=f"cid-{i}"))
    assert wait_until(lambda: len(replies) == 5, [server, client])
    assert replies == {f"cid-{i}": f"REQ{i}".encode() for i in range(5)}
    assert len(seen) == 5


def test_server_sees_a_per_channel_reply_address_not_the_pseudo_queue_name(connect, cleanup):
    server, client = connect(), connect()
    q, seen = _start_rpc_server(server, cleanup)
    ch = client.channel()
    got = []
    ch.basic_consume(REPLY_TO, lambda _c, m, p, b: got.append((m, p, b)), auto_ack=True)
    ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c"))
    assert wait_until(lambda: got, [server, client])
    address = seen[0].reply_to
    assert address.startswith(REPLY_TO + ".") and len(address) > len(REPLY_TO) + 1
    m, p, b = got[0]
    assert (m.exchange, m.routing_key, m.redelivered, p.correlation_id, b) == ("", address, False, "c", b"X")


def test_reply_consumer_must_be_no_ack_406(conn, ch):
    with channel_error(conn, 406, "PRECONDITION_FAILED - reply consumer cannot acknowledge"):
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)


def test_second_reply_consumer_on_channel_is_refused_406(conn, ch):
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    with channel_error(conn, 406, "PRECONDITION_FAILED - reply consumer already set"):
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)


def test_publish_with_direct_reply_to_without_consuming_first_fails_406(conn, ch):
    q = temp_queue(ch)
    with channel_error(conn, 406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        ch.basic_publish("", q, b"req", pika.BasicProperties(reply_to=REPLY_TO))
        ch.basic_qos(prefetch_count=0)
    assert get_all(conn.channel(), q) == []  # the request was not enqueued


def test_direct_reply_to_consumer_belongs_to_its_channel_406(conn, ch):
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    other = conn.channel()
    with channel_error(conn, 406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        other.basic_publish("", "anything", b"req", pika.BasicProperties(reply_to=REPLY_TO))
        other.basic_qos(prefetch_count=0)


def test_ordinary_reply_to_values_pass_through_untouched(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m", pika.BasicProperties(reply_to="my-own-reply-queue"))
    (_m, p, _b), = get_all(ch, q)
    assert p.reply_to == "my-own-reply-queue"
