"""Bad input before the connection is open: protocol header, authentication, tuning, and
frames sent out of order during the handshake.

Expected replies are RabbitMQ 3.10.8's, observed with these exact bytes. Before
connection.open-ok RabbitMQ mostly closes the socket without a reply (as the spec asks for
handshake errors), 3 s after the error; its log line is quoted in each test.
"""
import time

import pytest

import rawamqp as amqp
from malformed_checks import (assert_broker_serves, assert_connection_close,
                              assert_dropped_silently)


def read_until_eof(conn, timeout=5.0):
    """All bytes the server sends until it closes the socket."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn._fill(deadline)
        except amqp.Closed:
            data += conn.buf
            conn.buf = b""
            return data
        except TimeoutError:
            raise AssertionError(f"socket still open after {timeout}s; got {data + conn.buf!r}")


# ---------------------------------------------------------------- protocol header

@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x09\x00",              # 0-9-0
    b"AMQP\x00\x00\x09\x02",              # an unknown 0-9 revision
    b"AMQP\x00\x01\x00\x00",              # AMQP 1.0
    b"AMQP\x03\x01\x00\x00",              # AMQP 1.0 SASL layer
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # an HTTP client on the AMQP port
    b"\x16\x03\x01\x02\x00\x01\x00\x01",  # a TLS ClientHello
], ids=["amqp-0-9-0", "amqp-0-9-2", "amqp-1-0", "amqp-1-0-sasl", "http", "tls"])
def test_wrong_protocol_header_is_answered_with_amqp_0_9_1_header_and_closed(broker, raw, header):
    # RabbitMQ: writes exactly "AMQP\x00\x00\x09\x01" and closes the socket at once.
    raw.send(header)
    assert read_until_eof(raw) == amqp.PROTOCOL_HEADER
    assert_broker_serves(broker)


def test_protocol_header_sent_one_byte_at_a_time_is_accepted(broker, raw):
    for b in amqp.PROTOCOL_HEADER:
        raw.send(bytes([b]))
        time.sleep(0.01)
    start = raw.read_start()
    assert (start.args["version_major"], start.args["version_minor"]) == (0, 9)


def test_partial_protocol_header_then_disconnect_is_harmless(broker, raw):
    raw.send(b"AMQP\x00")
    raw.close()
    assert_broker_serves(broker)


def test_garbage_instead_of_start_ok_drops_connection_silently(broker, raw):
    # RabbitMQ log: {handshake_error,starting,...,{amqp_error,frame_error,
    #   "type 103, all octets = <<>>: {frame_too_large,1650550629,4088}",none}}
    raw.send_header()
    raw.read_start()
    raw.send(b"garbage garbage garbage")
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_truncated_start_ok_drops_connection_silently(broker, raw):
    # RabbitMQ log: {handshake_error,starting,0,{exit,{amqp_error,frame_error,
    #   "cannot decode <<0,0>>",'connection.start_ok'},...}}
    raw.send_header()
    raw.read_start()
    raw.send(amqp.method_frame(0, amqp.CONNECTION_START_OK, b"\x00\x00"))
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


# ---------------------------------------------------------------- authentication

def test_server_offers_plain_and_amqplain(raw):
    raw.send_header()
    start = raw.read_start()
    # RabbitMQ: mechanisms = "AMQPLAIN PLAIN", locales = "en_US"
    assert set(start.args["mechanisms"].split()) == {"PLAIN", "AMQPLAIN"}
    assert "en_US" in start.args["locales"].split()


def test_plain_mechanism_with_guest_is_accepted(raw):
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("PLAIN", amqp.plain_response("guest", "guest"))
    raw.read_tune()
    raw.send_tune_ok()
    raw.send_open()
    raw.expect(amqp.CONNECTION_OPEN_OK)


def test_amqplain_mechanism_with_guest_is_accepted(raw):
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("AMQPLAIN", amqp.amqplain_response("guest", "guest"))
    raw.read_tune()
    raw.send_tune_ok()
    raw.send_open()
    raw.expect(amqp.CONNECTION_OPEN_OK)


def test_bad_password_is_refused_with_403_when_client_has_authentication_failure_close(broker, raw):
    # RabbitMQ: connection.close 403 "ACCESS_REFUSED - Login was refused using authentication
    # mechanism PLAIN. For details see the broker logfile." class 0 method 0
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("PLAIN", amqp.plain_response("guest", "not-the-password"))
    assert_connection_close(raw, amqp.ACCESS_REFUSED,
                            text="ACCESS_REFUSED - Login was refused using authentication mechanism "
                                 "PLAIN. For details see the broker logfile.")
    assert_broker_serves(broker)


def test_unknown_user_is_refused_like_a_bad_password(broker, raw):
    # RabbitMQ: the same 403 text as a bad password (it does not reveal which was wrong).
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("PLAIN", amqp.plain_response("ferry-no-such-user", "x"))
    assert_connection_close(raw, amqp.ACCESS_REFUSED,
                            text="ACCESS_REFUSED - Login was refused using authentication mechanism "
                                 "PLAIN. For details see the broker logfile.")
    assert_broker_serves(broker)


def test_bad_password_with_amqplain_is_refused_with_403_naming_amqplain(broker, raw):
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("AMQPLAIN", amqp.amqplain_response("guest", "not-the-password"))
    assert_connection_close(raw, amqp.ACCESS_REFUSED,
                            text="ACCESS_REFUSED - Login was refused using authentication mechanism "
                                 "AMQPLAIN. For details see the broker logfile.")
    assert_broker_serves(broker)


def test_bad_password_without_authentication_failure_close_drops_connection_silently(broker, raw):
    # A client that did not announce capabilities.authentication_failure_close gets the
    # spec's behaviour: the socket is closed, no connection.close.
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("PLAIN", amqp.plain_response("guest", "not-the-password"),
                      client_properties={"product": "old-client"})
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_unknown_mechanism_drops_connection_silently(broker, raw):
    # RabbitMQ log: {handshake_error,starting,0,{amqp_error,command_invalid,
    #   "unknown authentication mechanism 'CRAM-MD5'",'connection.start_ok'}}
    # (silent even when the client announced authentication_failure_close)
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("CRAM-MD5", b"guest 0123456789abcdef")
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_malformed_plain_response_drops_connection_silently(broker, raw):
    # PLAIN response without the NUL separators.
    raw.send_header()
    raw.read_start()
    raw.send_start_ok("PLAIN", b"guestguest")
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_open_of_unknown_vhost_is_refused_with_530(broker, raw):
    # RabbitMQ: connection.close 530 "NOT_ALLOWED - vhost /ferry-no-such-vhost not found"
    # class 10 method 40 (connection.open)
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    raw.read_tune()
    raw.send_tune_ok()
    raw.send_open("/ferry-no-such-vhost")
    assert_connection_close(raw, amqp.NOT_ALLOWED,
                            text="NOT_ALLOWED - vhost /ferry-no-such-vhost not found",
                            class_id=10, method_id=40)
    assert_broker_serves(broker)


# ---------------------------------------------------------------- tuning

def test_tune_ok_frame_max_below_4096_drops_connection_silently(broker, raw):
    # RabbitMQ log: "failed to negotiate connection parameters: negotiated frame_max = 1000
    # is lower than the minimum allowed value (4096)"
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    raw.read_tune()
    raw.send_tune_ok(frame_max=1000)
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_tune_ok_frame_max_above_servers_drops_connection_silently(broker, raw):
    # RabbitMQ log: "failed to negotiate connection parameters: negotiated frame_max = 131073
    # is higher than the maximum allowed value (131072)"
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    tune = raw.read_tune()
    assert tune.args["frame_max"] > 0
    raw.send_tune_ok(frame_max=tune.args["frame_max"] + 1)
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_tune_ok_channel_max_above_servers_drops_connection_silently(broker, raw):
    # RabbitMQ log: "failed to negotiate connection parameters: negotiated channel_max = 5000
    # is higher than the maximum allowed value (2047)"
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    tune = raw.read_tune()
    assert 0 < tune.args["channel_max"] < 5000
    raw.send_tune_ok(channel_max=5000)
    raw.send_open()
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


# ---------------------------------------------------------------- frames out of order

def test_heartbeats_during_handshake_are_ignored(raw):
    raw.send_header()
    raw.read_start()
    raw.send(amqp.heartbeat_frame())
    raw.send_start_ok()
    raw.read_tune()
    raw.send(amqp.heartbeat_frame())
    raw.send_tune_ok()
    raw.send(amqp.heartbeat_frame())
    raw.send_open()
    raw.expect(amqp.CONNECTION_OPEN_OK)


def test_channel_open_before_start_ok_drops_connection_silently(broker, raw):
    raw.send_header()
    raw.read_start()
    raw.send(amqp.method_frame(1, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_tune_ok_before_start_ok_drops_connection_silently(broker, raw):
    # RabbitMQ log: {handshake_error,starting,0,{amqp_error,channel_error,
    #   "unexpected method in connection state starting",'connection.tune_ok'}}
    raw.send_header()
    raw.read_start()
    raw.send(amqp.method_frame(0, amqp.CONNECTION_TUNE_OK, amqp.tune_ok_args()))
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_open_before_tune_ok_drops_connection_silently(broker, raw):
    # RabbitMQ log: {handshake_error,tuning,0,{amqp_error,channel_error,
    #   "unexpected method in connection state tuning",'connection.open'}}
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    raw.read_tune()
    raw.send_open()
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_channel_open_before_tune_ok_drops_connection_silently(broker, raw):
    # RabbitMQ log: {handshake_error,tuning,1,{amqp_error,unexpected_frame,
    #   "type 1, all octets = <<0,20,0,10,0>>",none}}
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    raw.read_tune()
    raw.send(amqp.method_frame(1, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    assert_dropped_silently(raw)
    assert_broker_serves(broker)


def test_channel_open_before_connection_open_is_unexpected_frame_505(broker, raw):
    # After tune-ok RabbitMQ answers with connection.close:
    # 505 "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,0>>" class 0 method 0
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    raw.read_tune()
    raw.send_tune_ok()
    raw.send(amqp.method_frame(1, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    assert_connection_close(raw, amqp.UNEXPECTED_FRAME, text_prefix="UNEXPECTED_FRAME - ")
    assert_broker_serves(broker)


def test_queue_declare_on_channel_zero_before_connection_open_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state opening"
    # class 50 method 10
    raw.send_header()
    raw.read_start()
    raw.send_start_ok()
    raw.read_tune()
    raw.send_tune_ok()
    raw.send(amqp.method_frame(0, amqp.QUEUE_DECLARE, amqp.queue_declare_args("", exclusive=True)))
    assert_connection_close(raw, amqp.CHANNEL_ERROR,
                            text="CHANNEL_ERROR - unexpected method in connection state opening",
                            class_id=50, method_id=10)
    assert_broker_serves(broker)


def test_start_ok_after_connection_open_is_channel_error_504(broker, raw):
    # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
    # class 10 method 11
    raw.handshake()
    raw.send_start_ok()
    assert_connection_close(raw, amqp.CHANNEL_ERROR,
                            text="CHANNEL_ERROR - unexpected method in connection state running",
                            class_id=10, method_id=11)
    assert_broker_serves(broker)
