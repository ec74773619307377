"""Helpers shared by the `ferry` CLI tests (tests/cli): the broker handle and the runner for
build/ferry. A module of its own (not conftest.py): every test directory has a conftest, and
`from conftest import ...` picks whichever was imported first when the whole suite runs."""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pika

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ferryd import ROOT, free_port, wait_port  # noqa: E402,F401

FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")


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
