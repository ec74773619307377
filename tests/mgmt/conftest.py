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
from ferryd import free_port, on_free_port, wait_port  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from mgmtlib import Api  # noqa: E402


@pytest.fixture
def mgmt(ferryd_factory):
    """A private ferryd with its management port: .api (Api), .broker (Ferryd), .http_port."""
    class M:
        pass

    m = M()
    port, m.broker = on_free_port(lambda p: ferryd_factory("--http-port", str(p)))
    m.http_port = port
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
    for attempt in range(2):  # a free port can be taken by someone else before RabbitMQ binds it: once more
        http_port, prom_port = free_port(), free_port()
        r = rabbitmq.RabbitMQ(plugins=["rabbitmq_management", "rabbitmq_prometheus"],
                              extra_conf=f"management.tcp.port = {http_port}\nmanagement.tcp.ip = 127.0.0.1\n"
                                         f"prometheus.tcp.port = {prom_port}\nprometheus.tcp.ip = 127.0.0.1\n")
        try:
            r.start()
            wait_port("127.0.0.1", http_port, 90, r.proc)
            break
        except (RuntimeError, TimeoutError):
            r.stop()
            if attempt:
                raise
    r.api = Api("127.0.0.1", http_port)
    r.http_port = http_port
    r.prometheus_port = prom_port
    yield r
    r.stop()
