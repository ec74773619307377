"""Fixtures for the `ferry` CLI tests: a broker with a management API, and a runner for the
real build/ferry binary.

Every test that can runs against both brokers (the `mgmt_broker` fixture is parametrized):
ferryd with --http-port, and a private Debian RabbitMQ with the management plugin, whose
API the CLI must read the same way. RabbitMQ refreshes its queue statistics every
collect_statistics_interval (500 ms here); tests wait for the API to show a state (wait_queue)
before running the command that reads it.
"""
import os
import sys
import time
import uuid

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ferryd import Ferryd, free_port, on_free_port, wait_port  # noqa: E402
import rabbitmq  # noqa: E402
from clilib import MgmtBroker  # noqa: E402

BROKERS = ["ferryd", "rabbitmq"]

# What the session fixtures started, stopped (newest first) as soon as the last test of this
# directory is done: the rest of `make test` should not share two cores with an idle RabbitMQ.
# The fixtures' own finalizers call the same functions; each runs once.
_cleanups = []


def _once(fn):
    done = []

    def run():
        if not done:
            done.append(1)
            fn()
    return run


def _cleanup_all():
    while _cleanups:
        _cleanups.pop()()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    here = os.path.dirname(os.path.abspath(__file__))
    if nextitem is None or os.path.dirname(os.path.abspath(str(nextitem.fspath))) != here:
        _cleanup_all()


@pytest.fixture(scope="session")
def rabbit_mgmt():
    """A private RabbitMQ with the management plugin on free loopback ports. A start that fails
    (a port taken between choosing and binding it, on a machine shared with other test runs)
    is retried on new ports, twice."""
    assert rabbitmq.available(), "rabbitmq-server is not installed (scripts/install-deps.sh test)"
    for attempt in range(3):
        http_port = free_port()
        r = rabbitmq.RabbitMQ(plugins=["rabbitmq_management"],
                              extra_conf=f"management.tcp.port = {http_port}\n"
                                         "management.tcp.ip = 127.0.0.1\n"
                                         "collect_statistics_interval = 500\n")
        try:
            r.start()
            wait_port("127.0.0.1", http_port, 60, r.proc)
            b = MgmtBroker("rabbitmq", r.port, http_port)
            deadline = time.time() + 60
            while b.api("GET", "/api/overview")[0] != 200:
                assert time.time() < deadline, "RabbitMQ's management API never answered"
                time.sleep(0.2)
            break
        except (RuntimeError, TimeoutError, AssertionError):
            r.stop()
            if attempt == 2:
                raise
    stop = _once(r.stop)
    _cleanups.append(stop)
    try:
        yield b
    finally:
        stop()


@pytest.fixture(scope="session")
def ferryd_mgmt(tmp_path_factory):
    """ferryd with its HTTP API on a free loopback port."""
    http_port, d = on_free_port(lambda p: Ferryd(data_dir=str(tmp_path_factory.mktemp("ferryd-cli")),
                                                 args=["--http-port", str(p)]).start())
    stop = _once(d.stop_and_check)  # a clean exit 0 and no sanitizer report, checked once
    _cleanups.append(stop)
    wait_port("127.0.0.1", http_port, 10, d.proc)
    yield MgmtBroker("ferryd", d.port, http_port)
    stop()


@pytest.fixture(scope="session", params=BROKERS)
def mgmt_broker(request):
    return request.getfixturevalue("rabbit_mgmt" if request.param == "rabbitmq" else "ferryd_mgmt")


class World:
    """Queues with known contents, built once per broker (RabbitMQ shows a new queue's
    counts only after ~5 s, so one wait serves every test that only reads):
      depth: 3 messages, 1 of them unacked by a consumer that holds it all session
      json:  1 message, argument x-max-length 10
      small: 1 message; big: 3 messages (sorting)
    """

    def __init__(self, b):
        self.b = b
        p = "cli-w-" + uuid.uuid4().hex[:6] + "-"
        self.prefix = p
        self.depth, self.json, self.small, self.big = p + "depth", p + "json", p + "small", p + "big"
        conn, ch = b.channel()
        for q, n, args in ((self.depth, 3, None), (self.json, 1, {"x-max-length": 10}), (self.small, 1, None),
                           (self.big, 3, None)):
            ch.queue_declare(q, durable=True, arguments=args)
            for i in range(n):
                ch.basic_publish("", q, f"{q}-{i}".encode(), pika.BasicProperties(delivery_mode=2))
        conn.close()
        # No heartbeats: this connection sits idle between tests and must not be dropped.
        self.holder = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.amqp_port, heartbeat=0))
        hch = self.holder.channel()
        hch.basic_qos(prefetch_count=1)
        hch.basic_consume(self.depth, lambda *a: None)  # takes one message and never acks it
        deadline = time.time() + 30
        while True:
            self.holder.process_data_events(0.1)
            st, qs = b.api("GET", "/api/queues")
            got = {q["name"]: q for q in qs or [] if q["name"].startswith(p)}
            want = {self.depth: (3, 1, 1), self.json: (1, 0, 0), self.small: (1, 0, 0), self.big: (3, 0, 0)}
            if all(n in got and (got[n].get("messages"), got[n].get("messages_unacknowledged"),
                                 got[n].get("consumers")) == w for n, w in want.items()):
                break
            assert time.time() < deadline, f"the API never showed the test queues: {got}"

    def close(self):
        if self.holder.is_open:
            self.holder.close()


@pytest.fixture(scope="session")
def world(mgmt_broker):
    w = World(mgmt_broker)
    close = _once(w.close)
    _cleanups.append(close)
    yield w
    close()


@pytest.fixture
def name():
    """A queue name no other test uses."""
    return "cli-" + uuid.uuid4().hex[:10]


