"""Well-framed but wrong methods and content: unknown or misplaced methods, channel state
errors, content frames out of sequence, undecodable arguments and field tables.

Expected replies are RabbitMQ 3.10.8's, observed with these exact bytes. All of these are
connection errors in RabbitMQ (connection.close on channel 0); class/method ids name the
offending method (0/0 when RabbitMQ reports no method).

Three inputs crash RabbitMQ's connection process instead of producing a reply (an unknown
class/method id, an unknown field-table type octet, an undecodable message headers table).
For those the tests accept RabbitMQ's outcome (the socket simply closes, or 541) or the
clear answer ferryd should give instead, documented at each test.
"""
import time

import rawamqp as amqp
from malformed_checks import (assert_broker_serves, assert_connection_close,
                              assert_connection_dropped, close_connection, declare_queue,
                              get_message, publish, unique)


def open_connection(raw, channel_max=None):
    raw.handshake(channel_max=channel_max)
    raw.open_channel(1)
    return raw


def publish_start(channel=1, queue="x"):
    return amqp.method_frame(channel, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", queue))


def queue_declare_frame(channel=1, **kw):
    kw.setdefault("exclusive", True)
    return amqp.method_frame(channel, amqp.QUEUE_DECLARE, amqp.queue_declare_args("", **kw))


# ---------------------------------------------------------------- unknown methods

def test_unknown_class_id_ends_the_connection(broker, raw):
    # RabbitMQ: no reply; its reader dies with {unknown_method_id,{99,10}} and the socket
    # closes at once. Accepted clearer answer: connection.close 540 NOT_IMPLEMENTED
    # class 99 method 10.
    open_connection(raw)
    raw.send(amqp.method_frame(1, (99, 10)))
    assert_connection_dropped(raw, allowed_close=(amqp.NOT_IMPLEMENTED, 99, 10))
    assert_broker_serves(broker)


def test_unknown_method_id_in_known_class_ends_the_connection(broker, raw):
    # RabbitMQ: socket closed, {unknown_method_id,{60,99}}. Accepted: 540 class 60 method 99.
    open_connection(raw)
    raw.send(amqp.method_frame(1, (60, 99)))
    assert_connection_dropped(raw, allowed_close=(amqp.NOT_IMPLEMENTED, 60, 99))
    assert_broker_serves(broker)


def test_unknown_connection_method_on_channel_zero_ends_the_connection(broker, raw):
    # RabbitMQ: socket closed, {unknown_method_id,{10,99}}. Accepted: 540 class 10 method 99.
    raw.handshake()
    raw.send(amqp.method_frame(0, (10, 99)))
    assert_connection_dropped(raw, allowed_close=(amqp.NOT_IMPLEMENTED, 10, 99))
    assert_broker_serves(broker)


def test_server_only_method_from_client_is_command_invalid_503(broker, raw):
    # queue.declare-ok sent by the client. RabbitMQ:
    # 503 "COMMAND_INVALID - unimplemented method" class 50 method 11
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE_OK,
                               amqp.shortstr("q") + amqp.long_(0) + amqp.long_(0)))
    assert_connection_close(raw, amqp.COMMAND_INVALID,
                            text="COMMAND_INVALID - unimplemented method", class_id=50, method_id=11)
    assert_broker_serves(broker)


# ---------------------------------------------------------------- channel state

def test_method_on_channel_that_is_not_open_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - expected 'channel.open'" class 50 method 10
    open_connection(raw)
    raw.send(queue_declare_frame(channel=2))
    assert_connection_close(raw, amqp.CHANNEL_ERROR, text="CHANNEL_ERROR - expected 'channel.open'",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_channel_open_on_open_channel_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - second 'channel.open' seen" class 20 method 10
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    assert_connection_close(raw, amqp.CHANNEL_ERROR, text="CHANNEL_ERROR - second 'channel.open' seen",
                            class_id=20, method_id=10)
    assert_broker_serves(broker)


def test_channel_open_on_channel_zero_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
    # class 20 method 10
    raw.handshake()
    raw.send(amqp.method_frame(0, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    assert_connection_close(raw, amqp.CHANNEL_ERROR,
                            text="CHANNEL_ERROR - unexpected method in connection state running",
                            class_id=20, method_id=10)
    assert_broker_serves(broker)


def test_queue_method_on_channel_zero_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
    # class 50 method 10
    raw.handshake()
    raw.send(queue_declare_frame(channel=0))
    assert_connection_close(raw, amqp.CHANNEL_ERROR,
                            text="CHANNEL_ERROR - unexpected method in connection state running",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_connection_method_on_nonzero_channel_is_command_invalid_503(broker, raw):
    # connection.open on channel 1. RabbitMQ:
    # 503 "COMMAND_INVALID - unimplemented method" class 10 method 40
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.CONNECTION_OPEN, amqp.open_args()))
    assert_connection_close(raw, amqp.COMMAND_INVALID,
                            text="COMMAND_INVALID - unimplemented method", class_id=10, method_id=40)
    assert_broker_serves(broker)


def test_connection_close_on_nonzero_channel_is_command_invalid_503(broker, raw):
    # RabbitMQ: 503 "COMMAND_INVALID - unimplemented method" class 10 method 50
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.CONNECTION_CLOSE, amqp.connection_close_args()))
    assert_connection_close(raw, amqp.COMMAND_INVALID,
                            text="COMMAND_INVALID - unimplemented method", class_id=10, method_id=50)
    assert_broker_serves(broker)


def test_unsolicited_channel_close_ok_is_command_invalid_503(broker, raw):
    # RabbitMQ: 503 "COMMAND_INVALID - unimplemented method" class 20 method 41
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.CHANNEL_CLOSE_OK))
    assert_connection_close(raw, amqp.COMMAND_INVALID,
                            text="COMMAND_INVALID - unimplemented method", class_id=20, method_id=41)
    assert_broker_serves(broker)


def test_unsolicited_connection_close_ok_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
    # class 10 method 51
    raw.handshake()
    raw.send(amqp.method_frame(0, amqp.CONNECTION_CLOSE_OK))
    assert_connection_close(raw, amqp.CHANNEL_ERROR,
                            text="CHANNEL_ERROR - unexpected method in connection state running",
                            class_id=10, method_id=51)
    assert_broker_serves(broker)


def test_methods_on_a_channel_awaiting_close_ok_are_discarded(broker, raw):
    # After the broker sends channel.close it ignores everything on that channel except
    # close-ok (spec 4.2.2); after close-ok the channel number can be opened again.
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE,
                               amqp.queue_declare_args(unique("ferry.malformed.missing"), passive=True)))
    raw.send(queue_declare_frame(channel=1))
    close = raw.read_close()
    assert (close.level, close.channel, close.code) == ("channel", 1, amqp.NOT_FOUND)
    try:
        f = raw.recv_frame(0.5)
        raise AssertionError(f"broker answered a method on a closing channel: {f!r}")
    except TimeoutError:
        pass
    raw.send(amqp.method_frame(1, amqp.CHANNEL_CLOSE_OK))
    raw.open_channel(1)
    assert declare_queue(raw, exclusive=True)["queue"].startswith("amq.gen-")


def test_opening_more_channels_than_channel_max_is_not_allowed_530(broker, raw):
    # channel_max negotiated to 2; a third channel.open. RabbitMQ:
    # 530 "NOT_ALLOWED - number of channels opened (2) has reached the negotiated
    # channel_max (2)" class 0 method 0
    raw.handshake(channel_max=2)
    raw.open_channel(1)
    raw.open_channel(2)
    raw.send(amqp.method_frame(3, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    assert_connection_close(raw, amqp.NOT_ALLOWED,
                            text="NOT_ALLOWED - number of channels opened (2) has reached the "
                                 "negotiated channel_max (2)")
    assert_broker_serves(broker)


def test_channel_number_above_channel_max_is_accepted_like_rabbitmq(broker, raw):
    # Odd but RabbitMQ's behaviour: channel_max limits how many channels are open, not the
    # channel number itself. With channel_max 10, channel 11 opens and works.
    raw.handshake(channel_max=10)
    raw.open_channel(11)
    assert declare_queue(raw, channel=11, exclusive=True)["queue"].startswith("amq.gen-")
    close_connection(raw)


# ---------------------------------------------------------------- content sequencing

def test_content_header_without_publish_is_unexpected_frame_505(broker, raw):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    # class 0 method 0
    open_connection(raw)
    raw.send(amqp.header_frame(1, 5))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    assert_broker_serves(broker)


def test_body_frame_without_publish_is_unexpected_frame_505(broker, raw):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    open_connection(raw)
    raw.send(amqp.body_frame(1, b"hello"))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    assert_broker_serves(broker)


def test_body_frame_where_content_header_expected_is_unexpected_frame_505(broker, raw):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content header for class 60, got non content
    # header frame instead" class 60 method 40
    open_connection(raw)
    raw.send(publish_start() + amqp.body_frame(1, b"hello"))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected content header for class 60, "
                                 "got non content header frame instead",
                            class_id=60, method_id=40)
    assert_broker_serves(broker)


def test_method_frame_where_content_header_expected_is_unexpected_frame_505(broker, raw):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content header for class 60, got non content
    # header frame instead" class 60 method 40
    open_connection(raw)
    raw.send(publish_start() + queue_declare_frame())
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected content header for class 60, "
                                 "got non content header frame instead",
                            class_id=60, method_id=40)
    assert_broker_serves(broker)


def test_method_frame_where_content_body_expected_is_unexpected_frame_505(broker, raw):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content body, got non content body frame
    # instead" class 60 method 40
    open_connection(raw)
    raw.send(publish_start() + amqp.header_frame(1, 5) + queue_declare_frame())
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected content body, got non content body "
                                 "frame instead",
                            class_id=60, method_id=40)
    assert_broker_serves(broker)


def test_content_header_for_another_class_is_unexpected_frame_505(broker, raw):
    # A header frame with class-id 50 after basic.publish. RabbitMQ:
    # 505 "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50
    # instead" class 60 method 40
    open_connection(raw)
    raw.send(publish_start() + amqp.header_frame(1, 5, class_id=50) + amqp.body_frame(1, b"hello"))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected content header for class 60, "
                                 "got one for class 50 instead",
                            class_id=60, method_id=40)
    assert_broker_serves(broker)


def test_body_frame_after_zero_size_content_header_is_unexpected_frame_505(broker, raw):
    # A header with body-size 0 completes the message; a body frame after it is stray.
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    open_connection(raw)
    raw.send(publish_start() + amqp.header_frame(1, 0) + amqp.body_frame(1, b"hello"))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    assert_broker_serves(broker)


def test_body_longer_than_declared_size_is_never_delivered(broker, raw):
    # Header declares 5 bytes, the body frame carries 11. RabbitMQ sends nothing at that
    # point: it keeps waiting for the body to add up, so the message is never routed, and
    # the next method on that channel is
    # 505 "UNEXPECTED_FRAME - expected content body, got non content body frame instead"
    # class 60 method 40.
    open_connection(raw)
    queue = unique()
    declare_queue(raw, name=queue)
    try:
        raw.send(publish_start(queue=queue) + amqp.header_frame(1, 5) + amqp.body_frame(1, b"hello world"))
        time.sleep(0.3)
        raw.send(amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args(queue)))
        assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                                text="UNEXPECTED_FRAME - expected content body, got non content "
                                     "body frame instead",
                                class_id=60, method_id=40)
        assert_broker_serves(broker)
    finally:
        with amqp.Connection(broker.host, broker.port) as check:
            check.handshake()
            check.open_channel(1)
            assert declare_queue(check, name=queue, passive=True)["message_count"] == 0
            check.send(amqp.method_frame(1, amqp.QUEUE_DELETE, amqp.queue_delete_args(queue)))
            check.expect(amqp.QUEUE_DELETE_OK)


def test_empty_body_frames_are_accepted(broker, raw):
    # Zero-length body frames are legal; they add nothing to the body.
    open_connection(raw)
    queue = declare_queue(raw, exclusive=True)["queue"]
    publish(raw, 1, queue, b"ab", frame_bodies=[b"", b"a", b"", b"b"])
    got = get_message(raw, 1, queue)
    assert got is not None and got[1] == b"ab"


# ---------------------------------------------------------------- undecodable arguments

def test_truncated_method_arguments_are_frame_error_501(broker, raw):
    # queue.declare whose queue-name shortstr says 16 bytes but 3 follow. RabbitMQ (501, not
    # the spec's 502): "FRAME_ERROR - cannot decode <<0,0,16,97,98,99>>" class 50 method 10
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.short(0) + b"\x10abc"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text="FRAME_ERROR - cannot decode <<0,0,16,97,98,99>>",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_method_with_no_arguments_at_all_is_frame_error_501(broker, raw):
    # basic.qos with an empty argument list. RabbitMQ:
    # 501 "FRAME_ERROR - cannot decode <<>>" class 60 method 10
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.BASIC_QOS))
    assert_connection_close(raw, amqp.FRAME_ERROR, text="FRAME_ERROR - cannot decode <<>>",
                            class_id=60, method_id=10)
    assert_broker_serves(broker)


def test_extra_bytes_after_method_arguments_are_frame_error_501(broker, raw):
    # A valid queue.declare followed by 5 stray bytes. RabbitMQ:
    # 501 "FRAME_ERROR - cannot decode <<0,0,0,4,0,0,0,0,101,120,116,114,97>>"
    # class 50 method 10
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE,
                               amqp.queue_declare_args("", exclusive=True) + b"extra"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text="FRAME_ERROR - cannot decode <<0,0,0,4,0,0,0,0,101,120,116,114,97>>",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_field_table_length_past_end_of_frame_is_frame_error_501(broker, raw):
    # queue.declare arguments table claiming 100 bytes with 8 present. RabbitMQ:
    # 501 "FRAME_ERROR - cannot decode <<0,0,0,4,0,0,0,100,1,107,83,0,0,0,1,118>>"
    # class 50 method 10
    open_connection(raw)
    table = amqp.long_(100) + amqp.shortstr("k") + b"S" + amqp.longstr("v")
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE,
                               amqp.queue_declare_args("", exclusive=True, raw_arguments=table)))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text="FRAME_ERROR - cannot decode <<0,0,0,4,0,0,0,100,1,107,83,0,0,0,1,118>>",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_field_table_value_longer_than_its_table_is_frame_error_501(broker, raw):
    # A longstr value claiming 1000 bytes inside a 12-byte table. RabbitMQ:
    # 501 "FRAME_ERROR - cannot decode <<0,0,0,4,0,0,0,12,1,107,83,0,0,3,232,118,118,118,118>>"
    # class 50 method 10
    open_connection(raw)
    table = amqp.long_(12) + amqp.shortstr("k") + b"S" + amqp.long_(1000) + b"vvvv"
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE,
                               amqp.queue_declare_args("", exclusive=True, raw_arguments=table)))
    assert_connection_close(raw, amqp.FRAME_ERROR, text_prefix="FRAME_ERROR - cannot decode",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_field_table_with_unknown_type_octet_ends_the_connection(broker, raw):
    # Field type 'Z' in queue.declare arguments. RabbitMQ: no reply; its reader dies with
    # "no function clause matching rabbit_binary_parser:parse_table(<<1,107,90,97,98,99>>)"
    # and the socket closes. Accepted clearer answer, like the other undecodable tables:
    # connection.close 501 FRAME_ERROR class 50 method 10.
    open_connection(raw)
    table = amqp.long_(6) + amqp.shortstr("k") + b"Z" + b"abc"
    raw.send(amqp.method_frame(1, amqp.QUEUE_DECLARE,
                               amqp.queue_declare_args("", exclusive=True, raw_arguments=table)))
    assert_connection_dropped(raw, allowed_close=(amqp.FRAME_ERROR, 50, 10))
    assert_broker_serves(broker)


def test_undecodable_headers_property_ends_the_connection(broker, raw):
    # A content header whose headers table has field type 'Z'. RabbitMQ decodes properties
    # on publish; its channel crashes and the connection is closed with
    # 541 "INTERNAL_ERROR" class 0 method 0. Accepted clearer answer: 501 FRAME_ERROR
    # class 60 method 40 (the publish whose content could not be decoded).
    open_connection(raw)
    headers = amqp.long_(8) + amqp.shortstr("k") + b"Z" + b"abcde"
    raw.send(publish_start(queue="x")
             + amqp.header_frame(1, 1, flags=0x2000, props=headers)  # 0x2000: headers present
             + amqp.body_frame(1, b"x"))
    try:
        close = raw.read_close()
    except amqp.Closed:
        raise AssertionError("broker closed the socket without connection.close")
    assert close.level == "connection", close
    assert ((close.code, close.text, close.class_id, close.method_id) == (amqp.INTERNAL_ERROR, "INTERNAL_ERROR", 0, 0)
            or (close.code, close.class_id, close.method_id) == (amqp.FRAME_ERROR, 60, 40)), close
    assert raw.wait_eof(6.0)
    assert_broker_serves(broker)
