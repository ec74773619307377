"""Fixtures shared by the client-compatibility tests (real clients against the broker under test).

Every queue and exchange a test makes gets a unique name (uuid) and is deleted when the test
ends, so the tests can share one broker (ferryd, or a RabbitMQ via FERRY_TEST_AMQP_URL) with
each other and with anyone else.
"""
import time

import pika
import pytest

from names import unique_name


@pytest.fixture(scope="session", autouse=True)
def broker_speaks_amqp(broker):
    """One bounded AMQP handshake before anything else: if the broker is down or mute, every
    client test fails at once with this reason instead of each waiting out its own timeouts."""
    params = pika.URLParameters(broker.url + "?heartbeat=0&socket_timeout=5&connection_attempts=1"
                                "&stack_timeout=8")
    try:
        conn = pika.BlockingConnection(params)
        conn.channel().close()
        conn.close()
    except Exception as e:  # any failure here means no client test can say anything useful
        pytest.fail(f"broker at {broker.host}:{broker.port} did not complete an AMQP handshake: {e!r}")


@pytest.fixture
def amqp_params(broker):
    """pika connection parameters for the broker under test (no heartbeats, short timeouts)."""
    return pika.URLParameters(broker.url + "?heartbeat=0&socket_timeout=5&blocked_connection_timeout=10"
                              "&connection_attempts=1&stack_timeout=10")


class Cleanup:
    """Names of queues and exchanges to delete when the test ends (whether it passed or not)."""

    def __init__(self):
        self.queues, self.exchanges = [], []

    def queue(self, name=None):
        name = name or unique_name("q")
        self.queues.append(name)
        return name

    def exchange(self, name=None):
        name = name or unique_name("x")
        self.exchanges.append(name)
        return name


@pytest.fixture
def cleanup(amqp_params):
    c = Cleanup()
    yield c
    if not (c.queues or c.exchanges):
        return
    conn = pika.BlockingConnection(amqp_params)
    try:
        for kind, names in (("queue", c.queues), ("exchange", c.exchanges)):
            for name in names:
                ch = conn.channel()
                try:
                    if kind == "queue":
                        ch.queue_delete(name)
                    else:
                        ch.exchange_delete(name)
                    ch.close()
                except pika.exceptions.ChannelClosed:
                    pass  # already gone
    finally:
        conn.close()


@pytest.fixture
def inspect(amqp_params):
    """A separate pika connection that reports queue depths and fetches messages, to check what
    another client did through the broker rather than through that client's own view."""

    class Inspector:
        def __init__(self):
            self.conn = pika.BlockingConnection(amqp_params)

        def depth(self, queue):
            """Ready messages in `queue` (queue.declare-ok message-count, passive)."""
            ch = self.conn.channel()
            try:
                return ch.queue_declare(queue, passive=True).method.message_count
            finally:
                ch.close()

        def wait_depth(self, queue, n, timeout=5.0):
            """Wait (bounded) until `queue` holds n ready messages; publishes are asynchronous."""
            deadline = time.monotonic() + timeout
            while (d := self.depth(queue)) != n:
                assert time.monotonic() < deadline, f"queue {queue} holds {d} messages, expected {n}"
                time.sleep(0.02)

        def consumers(self, queue):
            ch = self.conn.channel()
            try:
                return ch.queue_declare(queue, passive=True).method.consumer_count
            finally:
                ch.close()

        def get(self, queue):
            """basic.get one message with auto-ack: (method, properties, body) or None."""
            ch = self.conn.channel()
            try:
                method, props, body = ch.basic_get(queue, auto_ack=True)
                return None if method is None else (method, props, body)
            finally:
                ch.close()

        def close(self):
            if self.conn.is_open:
                self.conn.close()

    i = Inspector()
    yield i
    i.close()
