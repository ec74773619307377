"""Fixtures for the hostile-client tests (issue 8: no client can crash, stall or exhaust
ferryd): raw AMQP sockets (tests/malformed/rawamqp.py) and a look at ferryd's memory.

Tests here act as a hostile or unlucky client would, against a real ferryd over a real
socket, and assert that the broker stays up, bounded and fair. Tests that measure the
broker's memory, restart it or configure limits start their own ferryd (ferryd_factory),
so that other tests' traffic does not disturb the figures. Tests whose input used to crash
ferryd use a private one too (`ferryd`, `connect`): a crash must not take the next test
with it, and ferryd_factory checks each for a clean SIGTERM exit with no sanitizer report.
"""
import os
import sys

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
sys.path.insert(0, os.path.dirname(__file__))  # rawclient.py
from hostile_lib import params, proc_status, still_serves  # noqa: E402,F401
from rawamqp import Connection  # noqa: E402


@pytest.fixture
def raw(broker):
    """Factory: raw() -> a raw TCP connection to the session broker, handshake done;
    closed at teardown."""
    opened = []

    def make(target=None, handshake=True, **kw):
        b = target or broker
        c = Connection(b.host, b.port)
        opened.append(c)
        if handshake:
            c.handshake(**kw)
        return c

    yield make
    for c in opened:
        c.close()


def pytest_collection_modifyitems(config, items):
    """A hostile input that hangs ferryd fails its test after 60 s rather than the suite."""
    here = str(config.rootpath / "hostile")
    for item in items:
        if str(item.path).startswith(here) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(60))


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
    # pika's close() waits for close-ok with no deadline: a stuck broker must not hang the
    # teardown (the ferryd fixture then reports it), so each close gets 5 s in a thread.
    import threading
    for c in opened:
        if c.is_open:
            t = threading.Thread(target=lambda c=c: _quiet_close(c), daemon=True)
            t.start()
            t.join(5)


def _quiet_close(c):
    try:
        c.close()
    except Exception:
        pass


@pytest.fixture
def conn_b(broker):
    """A pika connection to the session broker and an exclusive server-named queue on it;
    closed at teardown."""
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=broker.host, port=broker.port))
    q = conn.channel().queue_declare("", exclusive=True).method.queue
    yield conn, q
    if conn.is_open:
        conn.close()
