"""TLS state is client-caused memory: OpenSSL's heap held for connections counts toward
--memory-high-watermark (memacct kind "tls"), so a crowd of TLS handshakes left hanging
raises the memory alarm like any other memory a client makes ferryd hold — and it is given
back when they are closed."""
import re
import socket
import ssl
import time

import pytest

from ferryd import free_port, wait_port
from tls_helpers import tls_args

pytestmark = pytest.mark.ferry_only


def client_hello():
    ctx = ssl._create_unverified_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def wait_log(d, pattern, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, d.log_text())
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in the log:\n{d.log_text()[-3000:]}")


def test_tls_handshakes_count_toward_the_memory_watermark(ferryd_factory, certs):
    port = free_port()
    d = ferryd_factory(*tls_args(certs, port, "none"), "--memory-high-watermark", str(1 << 20),
                       "--handshake-timeout", "20000")
    wait_port(d.host, port, 10, d.proc)
    hello = client_hello()
    socks = []
    try:
        for _ in range(250):  # each waits for our second flight, with OpenSSL's state held
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(hello)
            socks.append(s)
        for s in socks:
            assert s.recv(5)[:1] == b"\x16"
        m = wait_log(d, r"over the watermark of \d+ \(([^)]*)\)")
        tls_bytes = int(re.search(r"tls (\d+)", m.group(1)).group(1))
        assert tls_bytes > 1 << 20, m.group(0)
    finally:
        for s in socks:
            s.close()
    wait_log(d, r"resource alarm cleared \(memory\)")
