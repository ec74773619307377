"""Fixtures for the hostile-client tests: clients that flood, stall, never read or leave
abruptly, against a real ferryd over real sockets (raw AMQP from tests/malformed/rawamqp.py)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
sys.path.insert(0, os.path.dirname(__file__))

from rawamqp import Connection  # noqa: E402


@pytest.fixture
def raw(broker):
    """A raw TCP connection to the shared broker under test (no handshake done yet)."""
    conn = Connection(broker.host, broker.port)
    yield conn
    conn.close()
