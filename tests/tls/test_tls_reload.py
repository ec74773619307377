"""SIGHUP reloads the TLS certificate and key from the same files without dropping
connections: a new connection is served the new certificate (its serial number and
fingerprint), an old one keeps working on the session it has. A reload that fails (an
unreadable or mismatched file) keeps the old certificate and the broker."""
import os
import shutil
import signal
import ssl
import time

import pika
import pytest

from certs import fingerprint
from tls_helpers import pika_tls_params, round_trip, tls_args, tls_socket
from ferryd import free_port, wait_port

pytestmark = pytest.mark.ferry_only


def served(certs, port):
    s = tls_socket(certs, port)
    try:
        der = s.getpeercert(binary_form=True)
        return fingerprint(der), int(s.getpeercert()["serialNumber"], 16)
    finally:
        s.close()


def der_of(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def wait_log(d, text, n, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if d.log_text().count(text) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged {n} times:\n{d.log_text()[-2000:]}")


@pytest.fixture
def reloadable(ferryd_factory, certs, tmp_path):
    """A ferryd whose certificate and key are copies the test may overwrite."""
    cert, key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    shutil.copy(certs.server_cert, cert)
    shutil.copy(certs.server_key, key)
    port = free_port()
    args = tls_args(certs, port)
    args[args.index("--tls-cert") + 1] = cert
    args[args.index("--tls-key") + 1] = key
    d = ferryd_factory(*args)
    wait_port(d.host, port, 10, d.proc)
    d.tls_port, d.cert, d.key = port, cert, key
    return d


def test_sighup_serves_the_new_certificate_and_keeps_old_connections(reloadable, certs):
    d = reloadable
    assert served(certs, d.tls_port) == (fingerprint(der_of(certs.server_cert)), 1000)
    old = pika.BlockingConnection(pika_tls_params(certs, d.tls_port))
    old_ch = old.channel()
    q = old_ch.queue_declare("", exclusive=False, auto_delete=False).method.queue
    old_ch.basic_publish("", q, b"before")
    raw_old = tls_socket(certs, d.tls_port)  # a second old session, idle through the reload

    new_cert, new_key = certs.server("server2", serial=1001)
    shutil.copy(new_cert, d.cert + ".tmp")
    shutil.copy(new_key, d.key + ".tmp")
    os.replace(d.key + ".tmp", d.key)
    os.replace(d.cert + ".tmp", d.cert)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, "TLS certificate and key reloaded", 1)

    # new connections: the new certificate (serial 1001, its fingerprint)
    assert served(certs, d.tls_port) == (fingerprint(der_of(new_cert)), 1001)
    assert round_trip(pika_tls_params(certs, d.tls_port)) == b"ping"
    # the old connection is still up, on its old session, and works both ways
    assert fingerprint(old._impl._transport._sock.getpeercert(binary_form=True)) == fingerprint(der_of(certs.server_cert))
    old_ch.basic_publish("", q, b"after")
    bodies = [old_ch.basic_get(q, auto_ack=True)[2] for _ in range(2)]
    assert bodies == [b"before", b"after"]
    old_ch.queue_delete(q)
    old.close()
    raw_old.sendall(b"AMQP\x00\x00\x09\x01")
    assert b"PLAIN" in raw_old.recv(4096)  # connection.start, on the pre-reload session
    raw_old.close()
    assert d.running()


def test_a_failed_reload_keeps_the_old_certificate(reloadable, certs):
    d = reloadable
    before = served(certs, d.tls_port)
    with open(d.cert, "w") as f:
        f.write("not a certificate\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, "TLS reload failed", 1)
    assert "live.pem" in d.log_text()
    assert served(certs, d.tls_port) == before
    # a key that does not match the certificate: refused too
    other_cert, _ = certs.server("server3", serial=1003)
    shutil.copy(other_cert, d.cert)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, "TLS reload failed", 2)
    assert served(certs, d.tls_port) == before
    assert round_trip(pika_tls_params(certs, d.tls_port)) == b"ping"


def test_sighup_without_tls_does_not_stop_ferryd(ferryd_factory):
    d = ferryd_factory()
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, "no TLS certificate to reload", 1)
    assert d.running()
    assert round_trip(pika.URLParameters(d.url + "?heartbeat=0&socket_timeout=5")) == b"ping"
