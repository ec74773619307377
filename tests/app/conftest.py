"""Fixtures of issue 12's application-side tests (tests/app/): every test that takes `app_broker`
runs once per broker — ferryd, a single RabbitMQ, and a 3-node RabbitMQ cluster with quorum
queues (tests/app/brokers.py) — and `pg_url` gives a test a fresh database on a private
PostgreSQL 15.

Selecting brokers:
  FERRY_APP_BROKERS=ferryd,rabbitmq,cluster   which brokers (default: all three)
  FERRY_APP_CLUSTER=all|short                 `short` (what `make test` uses, to keep it
      short) runs on the two RabbitMQs (single node and cluster) only the tests marked
      @pytest.mark.cluster_short, and every test on ferryd; `all` (`make test-app-cluster`, and
      the default of a plain pytest run) runs every test on all three.
Each broker is started once per session (session-scoped, one kind at a time: pytest groups the
tests by broker and stops one before starting the next) and stopped by PID at the end; ferryd
must also exit cleanly with no sanitizer report.
"""
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokers import KINDS, ROOT, Postgres, start_broker  # noqa: E402


def _kinds():
    want = [k.strip() for k in os.environ.get("FERRY_APP_BROKERS", ",".join(KINDS)).split(",") if k.strip()]
    bad = [k for k in want if k not in KINDS]
    if bad:
        raise pytest.UsageError(f"FERRY_APP_BROKERS: unknown broker {bad[0]!r} (one of {', '.join(KINDS)})")
    # The very objects of KINDS: pytest 7 keeps a session fixture's value only while the next
    # test's param `is` the cached one; fresh strings from split() restarted the broker per test.
    return [KINDS[KINDS.index(k)] for k in want]


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster_short: also runs on the RabbitMQs (single, cluster) in `make test`'s short run")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FERRY_APP_CLUSTER", "all") == "all":
        return
    keep, drop = [], []
    for item in items:
        cs = getattr(item, "callspec", None)
        on_rabbit = cs is not None and cs.params.get("app_broker") in ("rabbitmq", "cluster")
        (drop if on_rabbit and "cluster_short" not in item.keywords else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=_kinds())
def app_broker(request):
    """The broker under test: .kind ("ferryd" | "rabbitmq" | "cluster"), .url, .urls (every
    node), .ferry (True on ferryd), .queue_args(args) (adds x-queue-type=quorum on the cluster)."""
    tmp = tempfile.mkdtemp(prefix=f"ferry-app-{request.param}-")
    b, stop = start_broker(request.param, tmp)
    try:
        yield b
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """One private PostgreSQL 15 for the session (Postgres in brokers.py)."""
    p = Postgres().start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def pg_url(pg_server):
    """postgresql://… of a new, empty database for this test."""
    return pg_server.create_db()


@pytest.fixture(scope="session")
def ferry_cli():
    """The `ferry` command line under test (FERRY_CLI overrides build/ferry)."""
    path = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")
    assert os.access(path, os.X_OK), f"{path} is not built (make)"
    return path
