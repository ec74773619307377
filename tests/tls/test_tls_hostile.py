"""Hostile and confused clients on the TLS and plain ports. Each must fail cleanly — the
connection is closed, ferryd does not crash or stall — and is followed by a check that
another client is still served (the session's ferryd must also exit cleanly under ASan)."""
import os
import socket
import ssl
import time

import pika
import pytest

from tls_helpers import HANDSHAKE_TIMEOUT_MS, closed_within, pika_tls_params, round_trip

pytestmark = pytest.mark.ferry_only


def client_hello():
    """The bytes of a real TLS ClientHello (from Python's ssl module, never sent by it)."""
    ctx = ssl._create_unverified_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a handshake record
    return hello


def still_served(tls_broker, certs):
    assert round_trip(pika_tls_params(certs, tls_broker.tls_port)) == b"ping"
    assert round_trip(pika.URLParameters(tls_broker.url + "?heartbeat=0&socket_timeout=5")) == b"ping"


def test_plain_amqp_to_the_tls_port_is_closed(tls_broker, certs):
    s = socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    assert closed_within(s, 5), "ferryd kept a plain AMQP connection on its TLS port open"
    s.close()
    # and a real plain client (pika) to the TLS port fails rather than hangs
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", tls_broker.tls_port, connection_attempts=1,
                                                          socket_timeout=5, stack_timeout=8))
    still_served(tls_broker, certs)


def test_tls_handshake_to_the_plain_port_gets_the_protocol_header(tls_broker, certs):
    s = socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5)
    s.sendall(client_hello())
    data = b""
    while True:
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
    s.close()
    # spec 4.2.2, as RabbitMQ: the header of the protocol we speak, then close
    assert data == b"AMQP\x00\x00\x09\x01"
    # a TLS client (pika with ssl_options) pointed at the plain port fails cleanly
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(pika_tls_params(certs, tls_broker.port))
    still_served(tls_broker, certs)


def test_a_handshake_never_started_is_closed_after_the_handshake_timeout(tls_broker, certs):
    s = socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5)
    t0 = time.time()
    still_served(tls_broker, certs)  # served while this one waits
    assert closed_within(s, HANDSHAKE_TIMEOUT_MS / 1000 + 3)
    assert time.time() - t0 >= HANDSHAKE_TIMEOUT_MS / 1000 - 0.2
    s.close()
    still_served(tls_broker, certs)


def test_a_handshake_never_finished_is_closed_after_the_handshake_timeout(tls_broker, certs):
    """ClientHello sent, the server's answer read, then silence."""
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5)
        s.sendall(client_hello())
        assert s.recv(5)[:1] == b"\x16"  # the ServerHello's record
        socks.append(s)
    half = socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5)
    half.sendall(client_hello()[:40])  # half a ClientHello: OpenSSL waits for the rest
    socks.append(half)
    t0 = time.time()
    still_served(tls_broker, certs)  # the loop never waits on them
    for s in socks:
        assert closed_within(s, HANDSHAKE_TIMEOUT_MS / 1000 + 3 - (time.time() - t0))
        s.close()
    still_served(tls_broker, certs)


@pytest.mark.parametrize("garbage", [b"\x00" * 64, os.urandom(4096), b"\x16\x03\x03\xff\xff" + os.urandom(200),
                                     b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_garbage_after_the_client_hello_is_closed(tls_broker, certs, garbage):
    s = socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5)
    s.sendall(client_hello())
    try:
        s.sendall(garbage)
    except OSError:
        pass
    assert closed_within(s, 5)
    s.close()
    still_served(tls_broker, certs)


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x00\x05hello", os.urandom(2000), b"\x80" * 300])
def test_garbage_instead_of_a_client_hello_is_closed(tls_broker, certs, garbage):
    s = socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5)
    s.sendall(garbage)
    assert closed_within(s, HANDSHAKE_TIMEOUT_MS / 1000 + 3)
    s.close()
    still_served(tls_broker, certs)


def handshake_over_raw_socket(certs, port):
    """A TLS handshake done through memory BIOs over a plain socket, so the test can then
    write raw bytes on the same connection. Returns (socket, SSLObject, its outgoing BIO)."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            s.sendall(outgoing.read())
            data = s.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
    s.sendall(outgoing.read())
    return s, obj, outgoing


def test_garbage_inside_an_established_tls_session_is_closed(tls_broker, certs):
    """A finished handshake, then bytes that are not TLS records: the connection ends."""
    s, _, _ = handshake_over_raw_socket(certs, tls_broker.tls_port)
    s.sendall(os.urandom(3000))
    assert closed_within(s, 5)
    s.close()
    still_served(tls_broker, certs)


def test_a_session_with_a_tampered_record_is_closed(tls_broker, certs):
    """A valid AMQP header inside TLS, then a record whose ciphertext was flipped."""
    s, obj, outgoing = handshake_over_raw_socket(certs, tls_broker.tls_port)
    obj.write(b"AMQP\x00\x00\x09\x01")
    s.sendall(outgoing.read())
    obj.write(b"x" * 100)
    rec = bytearray(outgoing.read())
    rec[-5] ^= 0xFF
    s.sendall(bytes(rec))
    assert closed_within(s, 5)
    s.close()
    still_served(tls_broker, certs)


def test_a_tls_client_that_vanishes_mid_session_costs_nothing(tls_broker, certs):
    conn = pika.BlockingConnection(pika_tls_params(certs, tls_broker.tls_port))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for _ in range(100):
        ch.basic_publish("", q, os.urandom(20000))
    conn._impl._transport._sock.close()  # no close, no close_notify
    time.sleep(0.3)
    still_served(tls_broker, certs)
