"""Fixtures for the async-pattern tests: a pika connection to the session broker, and
unique names so tests never collide (they also run against RabbitMQ via
FERRY_TEST_AMQP_URL, where the Ferry-only ones are skipped)."""
import uuid

import pika
import pytest


@pytest.fixture
def conn(broker):
    p = pika.URLParameters(broker.url)
    p.heartbeat = 0
    c = pika.BlockingConnection(p)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def name():
    """A name generator unique to the test: name("q") -> "pt-<hex>.q"."""
    prefix = "pt-" + uuid.uuid4().hex[:10]
    return lambda s: f"{prefix}.{s}"
