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
from rawamqp import Connection  # noqa: E402


def proc_status(pid):
    """/proc/PID/status as a dict of kB figures (VmRSS, VmSize, VmHWM, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            parts = v.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[k] = int(parts[0])
    return out


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


def still_serves(d, timeout=15.0):
    """A fresh connection can declare a queue, publish and get the message back within
    timeout seconds: the broker is alive and its loop is not stuck. Raw sockets with a
    deadline on every read, so a livelocked broker fails the test instead of hanging it."""
    import time

    import pipeline as p
    deadline = time.monotonic() + timeout
    try:
        c = Connection(d.host, d.port, timeout=timeout)
    except OSError:
        return False
    try:
        c.handshake()
        c.open_channel(1)
        c.send(p.queue_declare("still-serves", exclusive=True) + p.publish("", "still-serves", b"alive"))
        while time.monotonic() < deadline:
            if p.get(c, "still-serves", timeout=max(0.1, deadline - time.monotonic())) == b"alive":
                return True
        return False
    except Exception:
        return False
    finally:
        c.close()
