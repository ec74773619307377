"""Errors at the right level: a channel error closes only that channel (the connection and
its other channels go on), a connection error closes everything. Covers what pika can send
with well-formed frames; malformed frames are tested in tests/malformed/."""
import pika
from pika import spec

from .helpers import (bodies, channel_error, connection_error, get_all, pump, roundtrip, send_method, temp_queue,
                      unique, wait_until)


def test_channel_error_leaves_other_channels_and_their_consumers_working(conn, ch):
    q = temp_queue(ch)
    got = []
    ch.basic_consume(q, lambda _c, _m, _p, b: got.append(b), auto_ack=True)
    bad = conn.channel()
    with channel_error(conn, 406, "PRECONDITION_FAILED - unknown delivery tag 5"):
        bad.basic_ack(5)
        roundtrip(bad)
    publisher = conn.channel()
    publisher.basic_publish("", q, b"still-delivered")
    assert wait_until(lambda: got, conn)
    assert got == [b"still-delivered"]


def test_channel_number_can_be_reused_after_close(conn, ch):
    number = ch.channel_number
    ch.close()
    again = conn.channel(channel_number=number)
    q = temp_queue(again)
    again.basic_publish("", q, b"m")
    assert bodies(get_all(again, q)) == [b"m"]


def test_channel_number_can_be_reused_after_broker_closed_it(conn, ch):
    number, q = ch.channel_number, unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_declare(q, passive=True)
    again = conn.channel(channel_number=number)
    roundtrip(again)


def test_second_channel_open_on_an_open_channel_closes_connection_504(conn, ch):
    with connection_error(conn, 504, "CHANNEL_ERROR - second 'channel.open' seen"):
        send_method(ch, spec.Channel.Open())
        pump(conn, 2)


def test_publish_with_immediate_flag_closes_connection_540(conn, ch):
    q = temp_queue(ch)
    with connection_error(conn, 540, "NOT_IMPLEMENTED - immediate=true"):
        send_method(ch, spec.Basic.Publish(exchange="", routing_key=q, immediate=True),
                    (spec.BasicProperties(), b"m"))
        pump(conn, 2)


def test_channel_flow_active_true_is_answered_flow_ok(ch):
    assert ch.flow(True) is True
    roundtrip(ch)


def test_channel_flow_active_false_closes_connection_540(conn, ch):
    with connection_error(conn, 540, "NOT_IMPLEMENTED - active=false"):
        ch.flow(False)


def test_user_id_different_from_login_closes_channel_406(conn, ch):
    q = temp_queue(ch)
    with channel_error(conn, 406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'"):
        ch.basic_publish("", q, b"m", pika.BasicProperties(user_id="bob"))
        roundtrip(ch)
    assert get_all(conn.channel(), q) == []


def test_user_id_equal_to_login_is_accepted(ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m", pika.BasicProperties(user_id="guest"))
    (_m, p, _b), = get_all(ch, q)
    assert p.user_id == "guest"


def test_non_numeric_expiration_closes_channel_406(conn, ch):
    q = temp_queue(ch)
    with channel_error(conn, 406, "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"):
        ch.basic_publish("", q, b"m", pika.BasicProperties(expiration="abc"))
        roundtrip(ch)


def test_negative_expiration_closes_channel_406(conn, ch):
    q = temp_queue(ch)
    with channel_error(conn, 406, "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"):
        ch.basic_publish("", q, b"m", pika.BasicProperties(expiration="-1"))
        roundtrip(ch)


def test_opening_more_channels_than_channel_max_closes_connection_530(connect):
    conn = connect(channel_max=2)
    assert conn._impl.params.channel_max == 2
    conn.channel(channel_number=1)
    conn.channel(channel_number=2)
    with connection_error(conn, 530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"):
        c3 = conn.channel(channel_number=3)
        roundtrip(c3)


def test_channel_number_above_channel_max_is_accepted_while_under_the_count(connect):
    # RabbitMQ limits how many channels are open, not the channel number itself.
    conn = connect(channel_max=2)
    c = conn.channel(channel_number=7)
    q = temp_queue(c)
    c.basic_publish("", q, b"m")
    assert bodies(get_all(c, q)) == [b"m"]
