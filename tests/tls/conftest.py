"""Fixtures for the TLS tests: certificates made with openssl at test time (tests/lib/certs.py)
and a ferryd with a TLS listener, plus helpers for raw TLS sockets.

The session's TLS ferryd asks for client certificates (--tls-verify peer, --tls-ca) but does
not require them, and has a short handshake timeout so the hostile tests need not wait long."""
import pytest

from certs import Certs
from ferryd import Ferryd, free_port, wait_port
from tls_helpers import HANDSHAKE_TIMEOUT_MS, tls_args


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    c = Certs(str(tmp_path_factory.mktemp("certs")))
    c.guest_cert = c.client("guest", "/O=Test/CN=guest", serial=2001)
    c.dn_cert = c.client("dnclient", "/O=Test/CN=client", serial=2002)
    return c


class TlsBroker:
    def __init__(self, d, tls_port):
        self.d, self.host, self.port, self.tls_port = d, d.host, d.port, tls_port
        self.url = d.url


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory, certs):
    """A ferryd with a plain port (.port) and a TLS port (.tls_port)."""
    tls_port = free_port()
    d = Ferryd(data_dir=str(tmp_path_factory.mktemp("ferryd-tls")),
               args=tls_args(certs, tls_port) + ["--handshake-timeout", str(HANDSHAKE_TIMEOUT_MS)])
    d.start()
    wait_port(d.host, tls_port, 10, d.proc)
    yield TlsBroker(d, tls_port)
    d.stop_and_check()
