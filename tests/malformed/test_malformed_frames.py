"""Bad framing on an open connection: garbage, bad frame ends, oversized, truncated and
unknown frames, misplaced heartbeats.

Expected replies are RabbitMQ 3.10.8's, observed with these exact bytes. Frame errors are
connection errors (the byte stream can no longer be trusted): connection.close with class 0
method 0. After a "fatal" frame error (bad frame end, oversized frame) RabbitMQ cannot read
our close-ok and closes the socket 3 s later; a broker may close sooner.
RabbitMQ's reply texts embed Erlang terms; where they do, the tests check the stable prefix
and the full text is quoted in a comment.
"""
import time

import rawamqp as amqp
from malformed_checks import (assert_broker_serves, assert_connection_close, declare_queue,
                              get_message, publish)


def open_connection(raw, frame_max=None):
    raw.handshake(frame_max=frame_max)
    raw.open_channel(1)
    return raw


def test_garbage_after_handshake_is_frame_error_501(broker, raw):
    # RabbitMQ reads "GARB" + "AGE..." as a frame header of type 71 with a huge size:
    # 501 "FRAME_ERROR - type 71, all octets = <<>>: {frame_too_large,1111574341,131064}"
    raw.handshake()
    raw.send(b"GARBAGEGARBAGEGARBAGE\r\n")
    assert_connection_close(raw, amqp.FRAME_ERROR, text_prefix="FRAME_ERROR - ")
    assert_broker_serves(broker)


def test_bad_frame_end_octet_is_frame_error_501(broker, raw):
    # basic.qos whose frame ends in 0x00 instead of 0xCE. RabbitMQ:
    # 501 "FRAME_ERROR - type 1, all octets = <<0,60,0,10,0,0,0,0,0,10,0>>:
    #      {invalid_frame_end_marker,\n<spaces>0}"   (sic, a newline in the text)
    open_connection(raw)
    qos = amqp.long_(0) + amqp.short(10) + amqp.bits(False)
    raw.send(amqp.method_frame(1, amqp.BASIC_QOS, qos, end=0x00))
    assert_connection_close(raw, amqp.FRAME_ERROR, text_prefix="FRAME_ERROR - ")
    assert_broker_serves(broker)


def test_bad_frame_end_on_heartbeat_is_frame_error_501(broker, raw):
    # RabbitMQ: 501 "FRAME_ERROR - type 8, all octets = <<>>: {invalid_frame_end_marker,171}"
    raw.handshake()
    raw.send(amqp.frame(amqp.FRAME_HEARTBEAT, 0, b"", end=0xAB))
    assert_connection_close(raw, amqp.FRAME_ERROR, text_prefix="FRAME_ERROR - ")
    assert_broker_serves(broker)


def test_frame_larger_than_negotiated_frame_max_is_frame_error_501(broker, raw):
    # Negotiated frame_max 4096; a body frame with an 8192-byte payload. The 7-byte frame
    # header goes first: RabbitMQ rejects on the header's size alone.
    # RabbitMQ: 501 "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,8192,4088}"
    open_connection(raw, frame_max=4096)
    raw.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "x"))
             + amqp.header_frame(1, 8192))
    big = amqp.body_frame(1, b"x" * 8192)
    raw.send(big[:7])
    time.sleep(0.2)
    try:
        raw.send(big[7:])
    except OSError:
        pass  # the broker may already have closed the socket; its close frame is buffered
    assert_connection_close(raw, amqp.FRAME_ERROR, text_prefix="FRAME_ERROR - ")
    assert_broker_serves(broker)


def test_method_frame_larger_than_frame_max_is_frame_error_501(broker, raw):
    # A queue.declare whose arguments table makes the frame 200 KB (frame_max 131072).
    # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,200219,131064}"
    raw.handshake()
    raw.open_channel(1)
    args = amqp.queue_declare_args("ferry.malformed.big", arguments={"x-big": "v" * 200000})
    f = amqp.method_frame(1, amqp.QUEUE_DECLARE, args)
    raw.send(f[:7])
    time.sleep(0.2)
    try:
        raw.send(f[7:])
    except OSError:
        pass
    assert_connection_close(raw, amqp.FRAME_ERROR, text_prefix="FRAME_ERROR - ")
    assert_broker_serves(broker)


def test_frame_of_exactly_frame_max_is_accepted(broker, raw):
    # frame_max counts the whole frame: 7-byte header + payload + frame-end octet.
    open_connection(raw, frame_max=4096)
    queue = declare_queue(raw, exclusive=True)["queue"]
    body = b"y" * (4096 - 8)
    publish(raw, 1, queue, body)
    got = get_message(raw, 1, queue)
    assert got is not None and got[1] == body


def test_unknown_frame_type_is_frame_error_501(broker, raw):
    # RabbitMQ: 501 'FRAME_ERROR - type 9, all octets = <<"abc">>: unknown_frame'
    raw.handshake()
    raw.send(amqp.frame(9, 0, b"abc"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text='FRAME_ERROR - type 9, all octets = <<"abc">>: unknown_frame')
    assert_broker_serves(broker)


def test_unknown_frame_type_on_open_channel_is_frame_error_501(broker, raw):
    # Frame type 4 (the 0-8 "oob" types are gone from 0-9-1). RabbitMQ:
    # 501 'FRAME_ERROR - type 4, all octets = <<"abc">>: unknown_frame'
    open_connection(raw)
    raw.send(amqp.frame(4, 1, b"abc"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text='FRAME_ERROR - type 4, all octets = <<"abc">>: unknown_frame')
    assert_broker_serves(broker)


def test_method_frame_shorter_than_class_and_method_ids_is_frame_error_501(broker, raw):
    # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<0,60>>: unknown_frame"
    open_connection(raw)
    raw.send(amqp.frame(amqp.FRAME_METHOD, 1, b"\x00\x3c"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text="FRAME_ERROR - type 1, all octets = <<0,60>>: unknown_frame")
    assert_broker_serves(broker)


def test_truncated_content_header_is_frame_error_501(broker, raw):
    # A content header payload of 3 bytes (needs at least 14). RabbitMQ:
    # 501 "FRAME_ERROR - type 2, all octets = <<0,60,0>>: unknown_frame"
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "x"))
             + amqp.frame(amqp.FRAME_HEADER, 1, b"\x00\x3c\x00"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text="FRAME_ERROR - type 2, all octets = <<0,60,0>>: unknown_frame")
    assert_broker_serves(broker)


def test_heartbeat_on_nonzero_channel_is_unexpected_frame_505(broker, raw):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - type 8, all octets = <<>>" class 0 method 0
    open_connection(raw)
    raw.send(amqp.heartbeat_frame(1))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME,
                            text="UNEXPECTED_FRAME - type 8, all octets = <<>>")
    assert_broker_serves(broker)


def test_heartbeat_with_payload_is_frame_error_501(broker, raw):
    # RabbitMQ: 501 'FRAME_ERROR - type 8, all octets = <<"xx">>: unknown_frame'
    raw.handshake()
    raw.send(amqp.frame(amqp.FRAME_HEARTBEAT, 0, b"xx"))
    assert_connection_close(raw, amqp.FRAME_ERROR,
                            text='FRAME_ERROR - type 8, all octets = <<"xx">>: unknown_frame')
    assert_broker_serves(broker)


def test_truncated_frame_then_disconnect_is_harmless(broker, raw):
    # Half a frame (the header promises 100 bytes, 10 arrive), then the client goes away.
    open_connection(raw)
    raw.send(amqp.octet(amqp.FRAME_METHOD) + amqp.short(1) + amqp.long_(100) + b"\x00\x32\x00\x0a" + b"abcdef")
    time.sleep(0.1)
    raw.close()
    assert_broker_serves(broker)


def test_disconnect_in_the_middle_of_a_message_is_harmless(broker, raw):
    # publish + header promising 1000 bytes, 10 bytes of body, then the socket closes.
    open_connection(raw)
    raw.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "x"))
             + amqp.header_frame(1, 1000) + amqp.body_frame(1, b"0123456789"))
    time.sleep(0.1)
    raw.close()
    assert_broker_serves(broker)


def test_frames_split_into_single_bytes_are_reassembled(broker, raw):
    # The broker must not assume one read() returns one whole frame.
    open_connection(raw)
    queue = declare_queue(raw, exclusive=True)["queue"]
    data = (amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", queue))
            + amqp.header_frame(1, 5) + amqp.body_frame(1, b"hello"))
    for i in range(len(data)):
        raw.send(data[i:i + 1])
        time.sleep(0.002)
    got = get_message(raw, 1, queue)
    assert got is not None and got[1] == b"hello"


def test_many_frames_in_one_write_are_all_processed(broker, raw):
    open_connection(raw)
    queue = declare_queue(raw, exclusive=True)["queue"]
    data = b""
    for i in range(200):
        body = f"m{i}".encode()
        data += (amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", queue))
                 + amqp.header_frame(1, len(body)) + amqp.body_frame(1, body))
    raw.send(data)
    bodies = [get_message(raw, 1, queue)[1] for _ in range(200)]
    assert bodies == [f"m{i}".encode() for i in range(200)]
    assert get_message(raw, 1, queue) is None
