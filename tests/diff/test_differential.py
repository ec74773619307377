"""Differential test: every scenario in scenarios.py runs against a private RabbitMQ and
against the broker under test; what the client observed must be the same.

A difference is a real difference: the scenarios are deterministic (checked by running
them RabbitMQ against RabbitMQ) and the traces are normalised only for server-generated
names and timestamps.
"""
import difflib
import json
import time

import pika
import pytest

import rabbitmq
import scenarios


def _wait_amqp(url, timeout=60.0):
    """RabbitMQ listens a little before it accepts logins; wait until a client can connect."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pika.BlockingConnection(pika.URLParameters(url)).close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def reference():
    """A private RabbitMQ: the reference behaviour."""
    if not rabbitmq.available():
        pytest.skip(f"rabbitmq-server is not installed ({rabbitmq.RABBIT_BIN}); "
                    "scripts/install-deps.sh installs it")
    r = rabbitmq.RabbitMQ(plugins=["rabbitmq_consistent_hash_exchange"])
    r.start()
    try:
        _wait_amqp(r.url)
        yield r
    finally:
        r.stop()


def readable_diff(expected, actual):
    a = json.dumps(expected, indent=1, sort_keys=True, default=repr).splitlines()
    b = json.dumps(actual, indent=1, sort_keys=True, default=repr).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "RabbitMQ", "broker under test", lineterm="", n=4))


@pytest.mark.parametrize("fn", scenarios.SCENARIOS, ids=[f.__name__ for f in scenarios.SCENARIOS])
def test_broker_behaves_like_rabbitmq(reference, broker, fn):
    expected = scenarios.run(fn, reference.url)
    assert expected and not any(e and e[0] == "scenario aborted" for e in expected), \
        f"the scenario itself failed against RabbitMQ: {expected}"
    actual = scenarios.run(fn, broker.url)
    if actual != expected:
        pytest.fail(f"{fn.__name__}: the broker under test differs from RabbitMQ "
                    f"(- RabbitMQ, + broker under test):\n{readable_diff(expected, actual)}",
                    pytrace=False)
