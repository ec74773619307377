"""Acknowledgements in and out of transactions, as RabbitMQ 3.10 does them (checked against
rabbitmq-server 3.10.8). An ack in a transaction takes the delivery out of the unacked set
at once (RabbitMQ's collect_acks), so acking it again is 406 "unknown delivery tag" — a
client cannot make a transaction grow by acking one tag over and over; tx.rollback gives
the deliveries back. A multiple ack must name a delivery tag that is unacked."""
import struct

import pytest

import rawamqp as amqp

TX_SELECT, TX_SELECT_OK = (90, 10), (90, 11)
TX_COMMIT, TX_COMMIT_OK = (90, 20), (90, 21)
TX_ROLLBACK, TX_ROLLBACK_OK = (90, 30), (90, 31)


def ack(tag, multiple=False):
    return amqp.method_frame(1, amqp.BASIC_ACK, struct.pack(">QB", tag, 1 if multiple else 0))


def got(c, q, n):
    """Publishes n messages to a fresh exclusive queue q and basic.gets them (delivery
    tags 1..n, unacked)."""
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("", exclusive=True)))
    q = c.expect(amqp.QUEUE_DECLARE_OK).args["queue"]
    for _ in range(n):
        c.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", q)) +
               amqp.header_frame(1, 1) + amqp.body_frame(1, b"x"))
    for _ in range(n):
        c.send(amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args(q, no_ack=False)))
        c.expect(amqp.BASIC_GET_OK)
        c.recv_frame()  # header
        c.recv_frame()  # body
    return q


def depth(c, q):
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args(q, passive=True)))
    return c.expect(amqp.QUEUE_DECLARE_OK).args["message_count"]


def assert_unknown_tag(c, tag):
    close = c.read_close()
    assert (close.level, close.code) == ("channel", amqp.PRECONDITION_FAILED), close
    assert close.text == f"PRECONDITION_FAILED - unknown delivery tag {tag}", close
    assert (close.class_id, close.method_id) == amqp.BASIC_ACK, close


@pytest.fixture
def ch1(raw):
    c = raw()
    c.open_channel(1)
    return c


def test_acking_a_tag_twice_in_a_transaction_is_unknown_delivery_tag(ch1):
    got(ch1, "", 1)
    ch1.send(amqp.method_frame(1, TX_SELECT))
    ch1.expect(TX_SELECT_OK)
    ch1.send(ack(1) + ack(1))
    assert_unknown_tag(ch1, 1)


def test_a_tag_acked_by_a_multiple_ack_in_a_transaction_cannot_be_acked_again(ch1):
    got(ch1, "", 3)
    ch1.send(amqp.method_frame(1, TX_SELECT))
    ch1.expect(TX_SELECT_OK)
    ch1.send(ack(2, multiple=True) + ack(1))
    assert_unknown_tag(ch1, 1)


def test_multiple_ack_of_a_tag_not_delivered_is_unknown_delivery_tag(ch1):
    q = got(ch1, "", 2)
    ch1.send(ack(5, multiple=True))
    assert_unknown_tag(ch1, 5)
    ch1.send(amqp.method_frame(1, amqp.CHANNEL_CLOSE_OK))
    ch1.open_channel(1)
    assert depth(ch1, q) == 2  # nothing was acked: both requeued by the channel close


def test_multiple_ack_of_a_tag_not_delivered_in_a_transaction_is_unknown_delivery_tag(ch1):
    got(ch1, "", 3)
    ch1.send(amqp.method_frame(1, TX_SELECT))
    ch1.expect(TX_SELECT_OK)
    ch1.send(ack(5, multiple=True))
    assert_unknown_tag(ch1, 5)


def test_rollback_gives_the_acked_deliveries_back_to_be_acked_again(ch1):
    q = got(ch1, "", 2)
    ch1.send(amqp.method_frame(1, TX_SELECT))
    ch1.expect(TX_SELECT_OK)
    ch1.send(ack(2, multiple=True) + amqp.method_frame(1, TX_ROLLBACK))
    ch1.expect(TX_ROLLBACK_OK)
    ch1.send(ack(1) + ack(2) + amqp.method_frame(1, TX_COMMIT))
    ch1.expect(TX_COMMIT_OK)
    assert depth(ch1, q) == 0
