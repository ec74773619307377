"""Helpers for the TLS tests (a module of its own: every test directory has a conftest.py,
so `from conftest import` would be ambiguous)."""
import socket
import ssl
import time

import pika

HANDSHAKE_TIMEOUT_MS = 1500


def tls_args(certs, tls_port, verify="peer", *extra):
    return ["--tls-port", str(tls_port), "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
            "--tls-ca", certs.ca, "--tls-verify", verify, *extra]


def client_context(certs, cert=None, verify=True):
    ctx = ssl.create_default_context(cafile=certs.ca) if verify else ssl._create_unverified_context()
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def pika_tls_params(certs, port, cert=None, credentials=None, **kw):
    """pika parameters for an amqps connection to 127.0.0.1:port, verifying the server."""
    ctx = client_context(certs, cert)
    args = dict(host="127.0.0.1", port=port, ssl_options=pika.SSLOptions(ctx, "localhost"),
                heartbeat=0, socket_timeout=5, blocked_connection_timeout=10, connection_attempts=1,
                stack_timeout=10)
    if credentials is not None:
        args["credentials"] = credentials
    args.update(kw)
    return pika.ConnectionParameters(**args)


def round_trip(params, body=b"ping"):
    """Declares a queue, publishes, gets the message back: proof a client is served."""
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, body)
        for _ in range(50):
            m, _, got = ch.basic_get(q, auto_ack=True)
            if m:
                return got
            conn.sleep(0.02)
        raise AssertionError("message did not come back")
    finally:
        conn.close()


def tls_socket(certs, port, cert=None, timeout=5):
    """A raw TLS socket to 127.0.0.1:port (handshake done, server verified)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return client_context(certs, cert).wrap_socket(s, server_hostname="localhost")


def read_connection_start(sock):
    """Sends the protocol header and returns connection.start's frame bytes."""
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    data = b""
    while len(data) < 7 or len(data) < 8 + int.from_bytes(data[3:7], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def closed_within(sock, seconds):
    """True if the peer closes (EOF or reset) within `seconds`, discarding what it sends."""

    deadline = time.time() + seconds
    sock.settimeout(0.2)
    while time.time() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            return True
    return False
