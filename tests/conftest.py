"""Shared pytest fixtures: a real ferryd (or an external broker) for every test.

By default the session starts one ferryd built by `make` (FERRYD overrides the binary, e.g.
the sanitizer build) on a free loopback port with a temporary data directory, and checks at
the end that it shut down cleanly on SIGTERM with no sanitizer report.

FERRY_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:PORT/ points the same tests at another
broker, e.g. a RabbitMQ, to check that a test asserts RabbitMQ's behaviour.
"""
import os
import sys
import urllib.parse

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from ferryd import Ferryd, ExternalBroker  # noqa: E402


def _external():
    url = os.environ.get("FERRY_TEST_AMQP_URL")
    if not url:
        return None
    u = urllib.parse.urlparse(url)
    return ExternalBroker(u.hostname or "127.0.0.1", u.port or 5672)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The broker under test, shared by the whole session: .host, .port, .url."""
    ext = _external()
    if ext:
        yield ext
        return
    d = Ferryd(data_dir=str(tmp_path_factory.mktemp("ferryd-data")))
    d.start()
    yield d
    d.stop_and_check()


@pytest.fixture
def ferryd_factory(tmp_path):
    """Starts private ferryd processes for tests that restart, kill or configure one.
    Each is stopped (and checked for a clean exit) when the test ends."""
    started = []

    def make(*args, **kw):
        kw.setdefault("data_dir", str(tmp_path / f"data{len(started)}"))
        d = Ferryd(args=list(args), **kw)
        d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        if d.running():
            d.stop_and_check()


def pytest_configure(config):
    config.addinivalue_line("markers", "ferry_only: behaviour that only ferryd has (skipped against an external broker)")


def pytest_collection_modifyitems(config, items):
    if not _external():
        return
    skip = pytest.mark.skip(reason="ferry-only behaviour; FERRY_TEST_AMQP_URL points at another broker")
    for item in items:
        if "ferry_only" in item.keywords or "ferryd_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
