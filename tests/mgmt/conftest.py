"""Fixtures for the management API tests (issue 11): a real ferryd with its HTTP port on,
and a small HTTP client (urllib: no third-party HTTP library needed)."""
import base64
import json
import os
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ferryd import free_port, wait_port  # noqa: E402


class Api:
    """HTTP calls against one management port; answers are (status, parsed JSON or text)."""

    def __init__(self, host, port, user="guest", password="guest"):
        self.base = f"http://{host}:{port}"
        self.auth = (user, password)

    def call(self, method, path, body=None, auth=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        user, pw = auth if auth is not None else self.auth
        if user is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, _parse(r.read(), r.headers), r.headers
        except urllib.error.HTTPError as e:
            return e.code, _parse(e.read(), e.headers), e.headers

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body if body is not None else {}, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body if body is not None else {}, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


def _parse(data, headers):
    ctype = headers.get("Content-Type", "")
    if "json" in ctype and data:
        return json.loads(data)
    return data.decode(errors="replace")


@pytest.fixture
def mgmt(ferryd_factory):
    """A private ferryd with its management port: .api (Api), .broker (Ferryd), .http_port."""
    port = free_port()

    class M:
        pass

    m = M()
    m.http_port = port
    m.broker = ferryd_factory("--http-port", str(port))
    wait_port("127.0.0.1", port, 10, m.broker.proc)
    m.api = Api("127.0.0.1", port)
    return m


@pytest.fixture(scope="session")
def rabbit():
    """A private RabbitMQ (Debian's rabbitmq-server) with the management and prometheus
    plugins, on free loopback ports: .api (Api), .url (AMQP), .prometheus_port."""
    import rabbitmq
    if not rabbitmq.available():
        pytest.skip("rabbitmq-server is not installed")
    http_port, prom_port = free_port(), free_port()
    r = rabbitmq.RabbitMQ(plugins=["rabbitmq_management", "rabbitmq_prometheus"],
                          extra_conf=f"management.tcp.port = {http_port}\nmanagement.tcp.ip = 127.0.0.1\n"
                                     f"prometheus.tcp.port = {prom_port}\nprometheus.tcp.ip = 127.0.0.1\n")
    r.start()
    wait_port("127.0.0.1", http_port, 90, r.proc)
    r.api = Api("127.0.0.1", http_port)
    r.http_port = http_port
    r.prometheus_port = prom_port
    yield r
    r.stop()
