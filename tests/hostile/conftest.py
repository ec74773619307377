"""Fixtures for the hostile-client tests (issue 8: no client can crash, stall or exhaust
ferryd): raw AMQP sockets (tests/malformed/rawamqp.py) and a look at ferryd's memory.

Tests here act as a hostile or unlucky client would, against a real ferryd over a real
socket, and assert that the broker stays up, bounded and fair. Tests that measure the
broker's memory, restart it or configure limits start their own ferryd (ferryd_factory),
so that other tests' traffic does not disturb the figures.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
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
