"""Fixtures for broker-held cron: a pika connection to the session ferryd, unique names
(cron_util.py has the helpers)."""
import uuid

import pytest

from cron_util import connect


@pytest.fixture
def name():
    prefix = "cron-" + uuid.uuid4().hex[:10]
    return lambda s: f"{prefix}.{s}"


@pytest.fixture
def conn(broker):
    c = connect(broker)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


