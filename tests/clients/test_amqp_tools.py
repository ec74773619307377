"""amqp-tools (rabbitmq-c's command line clients), unchanged, against the broker.

Each tool runs as a subprocess with --server/--port; what it did is checked through the tools
themselves and, for properties the tools cannot print, through a separate pika connection.
"""
import subprocess
import time

import pika
import pytest

from names import unique_name


def tool_cmd(broker, name, *args):
    return [f"/usr/bin/{name}", "--server", broker.host, "--port", str(broker.port), *args]


@pytest.fixture
def tool(broker):
    """tool("amqp-publish", "-r", "q", input=b"...") -> CompletedProcess (bounded: 20 s)."""

    def run(name, *args, input=None, check=True, timeout=20):
        cmd = tool_cmd(broker, name, *args)
        r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        if check:
            assert r.returncode == 0, \
                f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout!r}\n{r.stderr.decode(errors='replace')}"
        return r

    return run


def test_declare_queue_prints_the_name_and_creates_a_durable_queue(tool, cleanup, inspect, amqp_params):
    q = cleanup.queue()
    r = tool("amqp-declare-queue", "-q", q, "-d")
    assert r.stdout.decode().strip() == q
    assert inspect.depth(q) == 0
    # it really is durable: a non-durable redeclare is refused (406)
    conn = pika.BlockingConnection(amqp_params)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare(q, durable=False)
        assert e.value.reply_code == 406
    finally:
        conn.close()


def test_declare_queue_with_empty_name_prints_a_server_generated_name(tool, cleanup, inspect):
    r = tool("amqp-declare-queue", "-q", "")
    name = r.stdout.decode().strip()
    cleanup.queue(name)
    assert name.startswith("amq.gen-"), name
    assert inspect.depth(name) == 0   # it exists (not exclusive, so it outlived the tool)


def test_redeclaring_a_durable_queue_as_transient_fails(tool, cleanup):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q, "-d")
    r = tool("amqp-declare-queue", "-q", q, check=False)
    assert r.returncode != 0
    assert b"406" in r.stderr and b"PRECONDITION_FAILED" in r.stderr, r.stderr


def test_publish_sets_routing_key_persistence_content_type_and_headers(tool, cleanup, inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q, "-d")
    tool("amqp-publish", "-r", q, "-p", "-C", "application/json", "-E", "utf-8", "-t", "replies",
         "-H", "x-tenant: acme", "-H", "trace-id: 0af7651916cd43dd",
         "-b", '{"order": 17}')
    method, props, body = inspect.get(q)
    assert body == b'{"order": 17}'
    assert method.routing_key == q and method.exchange == ""
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.content_encoding == "utf-8"
    assert props.reply_to == "replies"
    assert props.headers == {"x-tenant": "acme", "trace-id": "0af7651916cd43dd"}


def test_publish_without_persistent_flag_is_transient(tool, cleanup, inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    tool("amqp-publish", "-r", q, "-b", "fleeting")
    _, props, body = inspect.get(q)
    assert (body, props.delivery_mode) == (b"fleeting", 1)


def test_publish_line_buffered_sends_one_message_per_line(tool, cleanup):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    tool("amqp-publish", "-r", q, "-l", input=b"alpha\nbeta\ngamma")
    # each body is one line as read, newline included; the consumer command marks the ends
    r = tool("amqp-consume", "-q", q, "-c", "3", "--", "sh", "-c", "cat; echo '|'")
    assert r.stdout == b"alpha\n|\nbeta\n|\ngamma|\n"


def test_binary_body_of_one_mebibyte_from_stdin_arrives_intact(tool, cleanup):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    body = bytes(range(256)) * 4096 + b"\x00tail\xff"   # > frame_max: many body frames
    tool("amqp-publish", "-r", q, input=body)
    r = tool("amqp-get", "-q", q)
    assert len(r.stdout) == len(body)
    assert r.stdout == body


def test_consume_with_count_acks_that_many_and_leaves_the_rest(tool, cleanup, inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    for i in range(5):
        tool("amqp-publish", "-r", q, "-b", f"job-{i}")
    r = tool("amqp-consume", "-q", q, "-c", "3", "-p", "1", "--", "sh", "-c", "cat; echo")
    assert r.stdout.decode().split() == ["job-0", "job-1", "job-2"]
    # the three consumed were acked; anything delivered but unacked went back on exit
    inspect.wait_depth(q, 2)
    assert [inspect.get(q)[2] for _ in range(2)] == [b"job-3", b"job-4"]


def test_consume_without_ack_removes_messages_on_delivery(tool, cleanup, inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    for i in range(2):
        tool("amqp-publish", "-r", q, "-b", f"fire-and-forget-{i}")
    inspect.wait_depth(q, 2)
    r = tool("amqp-consume", "-q", q, "-c", "2", "-A", "--", "sh", "-c", "cat; echo")
    assert r.stdout.decode().split() == ["fire-and-forget-0", "fire-and-forget-1"]
    assert inspect.depth(q) == 0


def test_consume_from_exclusive_queue_bound_to_topic_exchange(broker, cleanup, amqp_params):
    x = cleanup.exchange()
    q = unique_name("excl")
    conn = pika.BlockingConnection(amqp_params)
    ch = conn.channel()
    ch.exchange_declare(x, "topic", durable=False)
    consumer = subprocess.Popen(
        tool_cmd(broker, "amqp-consume", "-q", q, "-x", "-e", x, "-r", "audit.#", "-c", "2", "-A",
                 "--", "sh", "-c", "cat; echo"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # publish mandatory with confirms until the consumer's binding exists (bounded)
        ch.confirm_delivery()
        deadline = time.monotonic() + 10
        while True:
            try:
                ch.basic_publish(x, "audit.login.ok", b"first", mandatory=True)
                break
            except pika.exceptions.UnroutableError:
                assert consumer.poll() is None, consumer.communicate()
                assert time.monotonic() < deadline, "amqp-consume never bound its queue"
                time.sleep(0.05)
        ch.basic_publish(x, "billing.paid", b"not for audit", mandatory=False)
        ch.basic_publish(x, "audit.logout", b"second", mandatory=True)
        out, err = consumer.communicate(timeout=10)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        conn.close()
    assert consumer.returncode == 0, err
    assert out.decode().split() == ["first", "second"]
    # exclusive: the queue went away with the consumer's connection
    conn = pika.BlockingConnection(amqp_params)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare(q, passive=True)
        assert e.value.reply_code == 404
    finally:
        conn.close()


def test_get_prints_one_message_and_removes_it(tool, cleanup, inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    tool("amqp-publish", "-r", q, "-b", "first")
    tool("amqp-publish", "-r", q, "-b", "second")
    inspect.wait_depth(q, 2)
    assert tool("amqp-get", "-q", q).stdout == b"first"
    assert inspect.depth(q) == 1
    assert tool("amqp-get", "-q", q).stdout == b"second"
    assert inspect.depth(q) == 0


def test_get_on_empty_queue_exits_2_and_prints_nothing(tool, cleanup):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    r = tool("amqp-get", "-q", q, check=False)
    assert (r.returncode, r.stdout) == (2, b"")


def test_get_on_missing_queue_reports_404(tool):
    r = tool("amqp-get", "-q", unique_name("missing"), check=False)
    assert r.returncode == 1
    assert b"404" in r.stderr and b"NOT_FOUND" in r.stderr, r.stderr


def test_delete_queue_prints_the_messages_it_dropped_and_removes_the_queue(tool, cleanup, amqp_params,
                                                                          inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    for i in range(3):
        tool("amqp-publish", "-r", q, "-b", str(i))
    inspect.wait_depth(q, 3)
    r = tool("amqp-delete-queue", "-q", q)
    assert r.stdout.decode().strip() == "3"
    conn = pika.BlockingConnection(amqp_params)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare(q, passive=True)
        assert e.value.reply_code == 404
    finally:
        conn.close()


def test_delete_queue_if_empty_refuses_a_queue_with_messages(tool, cleanup, inspect):
    q = cleanup.queue()
    tool("amqp-declare-queue", "-q", q)
    tool("amqp-publish", "-r", q, "-b", "still here")
    inspect.wait_depth(q, 1)
    r = tool("amqp-delete-queue", "-q", q, "-e", check=False)
    assert r.returncode != 0
    assert b"406" in r.stderr and b"PRECONDITION_FAILED" in r.stderr, r.stderr
    assert inspect.depth(q) == 1


def test_delete_of_a_missing_queue_succeeds_with_zero(tool):
    """RabbitMQ (3.x and later) treats queue.delete of a missing queue as done: delete-ok, 0."""
    r = tool("amqp-delete-queue", "-q", unique_name("never-declared"))
    assert r.stdout.decode().strip() == "0"
