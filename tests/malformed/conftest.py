"""Fixtures for the malformed-input tests: a raw AMQP socket to the broker under test."""
import pytest

from rawamqp import Connection


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes longer than 5 s (waits for a broker timeout)")


@pytest.fixture
def raw(broker):
    """A raw TCP connection to the broker under test (no handshake done yet)."""
    conn = Connection(broker.host, broker.port)
    yield conn
    conn.close()
