"""Fixtures for the `ferry` CLI tests: a broker with a management API, and a runner for the
real build/ferry binary.

Every test that can runs against both brokers (the `mgmt_broker` fixture is parametrized):
ferryd with --http-port, and a private Debian RabbitMQ with the management plugin, whose
API the CLI must read the same way. RabbitMQ refreshes its queue statistics every
collect_statistics_interval (500 ms here); tests wait for the API to show a state (wait_queue)
before running the command that reads it.
"""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ferryd import Ferryd, ROOT, free_port, wait_port  # noqa: E402
import rabbitmq  # noqa: E402

FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")
BROKERS = ["ferryd", "rabbitmq"]


class MgmtBroker:
    """A running broker: AMQP and HTTP ports, URLs, and small API/AMQP helpers for setup."""

    def __init__(self, kind, amqp_port, http_port):
        self.kind = kind
        self.amqp_port = amqp_port
        self.http_port = http_port
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/"
        self.http_url = f"http://guest:guest@127.0.0.1:{http_port}"

    def api(self, method, path, body=None, user="guest", password="guest"):
        """(status, parsed JSON or None) of one API request."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, None

    def channel(self):
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.amqp_port))
        return conn, conn.channel()

    def queue(self, name, messages=(), arguments=None, durable=True, properties=None):
        """Declares a queue and publishes `messages` (bytes or str) to it; waits until the API
        shows them."""
        conn, ch = self.channel()
        try:
            ch.queue_declare(name, durable=durable, arguments=arguments)
            for m in messages:
                ch.basic_publish("", name, m.encode() if isinstance(m, str) else m,
                                 properties or pika.BasicProperties(delivery_mode=2))
        finally:
            conn.close()
        self.wait_queue(name, messages=len(messages))

    def wait_queue(self, name, timeout=15, vhost="/", **fields):
        """Polls GET /api/queues/{vhost}/{name} until every field has the given value."""
        deadline = time.time() + timeout
        q = None
        while time.time() < deadline:
            st, q = self.api("GET", f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}")
            if st == 200 and all(q.get(k) == v for k, v in fields.items()):
                return q
            time.sleep(0.1)
        raise AssertionError(f"queue {name} never showed {fields} in the API; last: {q}")

    def delete_queue(self, name):
        conn, ch = self.channel()
        try:
            ch.queue_delete(name)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def rabbit_mgmt():
    """A private RabbitMQ with the management plugin on free loopback ports."""
    assert rabbitmq.available(), "rabbitmq-server is not installed (scripts/install-deps.sh test)"
    http_port = free_port()
    r = rabbitmq.RabbitMQ(plugins=["rabbitmq_management"],
                          extra_conf=f"management.tcp.port = {http_port}\n"
                                     "management.tcp.ip = 127.0.0.1\n"
                                     "collect_statistics_interval = 500\n")
    r.start()
    try:
        wait_port("127.0.0.1", http_port, 60, r.proc)
        b = MgmtBroker("rabbitmq", r.port, http_port)
        deadline = time.time() + 60
        while b.api("GET", "/api/overview")[0] != 200:
            assert time.time() < deadline, "RabbitMQ's management API never answered"
            time.sleep(0.2)
        yield b
    finally:
        r.stop()


@pytest.fixture(scope="session")
def ferryd_mgmt(tmp_path_factory):
    """ferryd with its HTTP API on a free loopback port."""
    http_port = free_port()
    d = Ferryd(data_dir=str(tmp_path_factory.mktemp("ferryd-cli")), args=["--http-port", str(http_port)])
    d.start()
    wait_port("127.0.0.1", http_port, 10, d.proc)
    yield MgmtBroker("ferryd", d.port, http_port)
    d.stop_and_check()


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
        self.holder, hch = b.channel()
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
        self.holder.close()


@pytest.fixture(scope="session")
def world(mgmt_broker):
    w = World(mgmt_broker)
    yield w
    w.close()


@pytest.fixture
def name():
    """A queue name no other test uses."""
    return "cli-" + uuid.uuid4().hex[:10]


def ferry(*args, url=None, env=None, timeout=30, input=None):
    """Runs build/ferry; returns CompletedProcess (text). FERRY_URL is cleared unless given."""
    e = {k: v for k, v in os.environ.items() if k != "FERRY_URL"}
    if env:
        e.update(env)
    cmd = [FERRY] + list(args)
    if url:
        cmd += ["--url", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, input=input)


def ferry_until(pred, *args, timeout=10, **kw):
    """Runs ferry(*args) until pred(result) holds (the API's lists may be up to 1 s old, and
    RabbitMQ's up to 5 s); returns the last result either way, for the caller's asserts."""
    deadline = time.time() + timeout
    while True:
        r = ferry(*args, **kw)
        if pred(r) or time.time() > deadline:
            return r
        time.sleep(0.2)
