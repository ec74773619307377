"""Fixtures for the pika integration tests: connections that are always closed, and
names that are always deleted, so tests sharing one broker never see each other."""
import pytest

from . import helpers


@pytest.fixture
def connect(broker):
    """Factory: connect(**params) -> BlockingConnection, closed at teardown."""
    opened = []

    def make(**kw):
        c = helpers.connect(broker, **kw)
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
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


class Cleanup:
    """Names of queues and exchanges a test declared outside exclusive queues."""

    def __init__(self):
        self.queues, self.exchanges = [], []

    def queue(self, name):
        self.queues.append(name)
        return name

    def exchange(self, name):
        self.exchanges.append(name)
        return name


@pytest.fixture
def cleanup(broker):
    c = Cleanup()
    yield c
    if not (c.queues or c.exchanges):
        return
    conn = helpers.connect(broker)
    try:
        for kind, names in (("queue", c.queues), ("exchange", c.exchanges)):
            for name in names:
                ch = conn.channel()
                try:
                    getattr(ch, f"{kind}_delete")(name)
                    ch.close()
                except Exception:
                    pass
    finally:
        if conn.is_open:
            conn.close()


def pytest_collection_modifyitems(config, items):
    """Every integration test finishes in seconds; a stuck broker fails it after 30 s
    (pika's blocking calls have no timeout of their own)."""
    here = str(config.rootpath / "integration")
    for item in items:
        if str(item.path).startswith(here) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(30))
