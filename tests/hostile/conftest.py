"""Fixtures for the hostile-client tests (issue 8): inputs an attacker, or just an unlucky
client, can send with ordinary AMQP, each of which once crashed, stalled or exhausted
ferryd. Every test gets its own ferryd (a crash must not take the next test with it) and
checks at the end that it still serves and exits cleanly on SIGTERM with no sanitizer
report. Modelled on tests/malformed/conftest.py and tests/integration/conftest.py."""
import os
import sys

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
from rawamqp import Connection  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """A hostile input that hangs ferryd fails its test after 60 s rather than the suite."""
    here = str(config.rootpath / "hostile")
    for item in items:
        if str(item.path).startswith(here) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(60))


def params(d, **kw):
    kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
    kw.setdefault("heartbeat", 0)
    kw.setdefault("blocked_connection_timeout", 20)
    kw.setdefault("socket_timeout", 20)
    kw.setdefault("stack_timeout", 30)
    kw.setdefault("connection_attempts", 1)
    return pika.ConnectionParameters(host=d.host, port=d.port, **kw)


@pytest.fixture
def ferryd(ferryd_factory):
    """A private ferryd for this test; stopped with SIGTERM and checked (exit 0, no sanitizer
    report) at teardown by ferryd_factory."""
    return ferryd_factory()


@pytest.fixture
def connect(ferryd):
    """Factory: connect(**params) -> pika BlockingConnection to this test's ferryd."""
    opened = []

    def make(d=None, **kw):
        c = pika.BlockingConnection(params(d or ferryd, **kw))
        opened.append(c)
        return c

    yield make
    for c in opened:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def raw(ferryd):
    """A raw TCP connection to this test's ferryd (no handshake done yet)."""
    conn = Connection(ferryd.host, ferryd.port)
    yield conn
    conn.close()


def still_serves(d):
    """A fresh connection can declare, publish and get one message back: the broker is alive
    and its loop is not stuck."""
    c = pika.BlockingConnection(params(d, socket_timeout=10, stack_timeout=15))
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"alive")
        for _ in range(200):
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m:
                return body == b"alive"
            c.sleep(0.01)
        return False
    finally:
        c.close()
