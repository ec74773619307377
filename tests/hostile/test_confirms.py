"""Issue 8, item 13: publisher confirms that wait for the store, mixed with publishes a
full x-overflow reject-publish queue refuses (nacks), in one pipelined burst. Each publish
gets exactly its own answer, in order; ferryd (ASan build in `make test`) survives."""
import struct
import time

import rawamqp as amqp

CONFIRM_SELECT = (85, 10)
CONFIRM_SELECT_OK = (85, 11)
BASIC_NACK = (60, 120)
PERSISTENT = 1 << 12  # delivery-mode property flag


def read_confirms(c, n, timeout=20.0):
    """{seq: 'ack' | 'nack'} for publishes 1..n, expanding multiple=true answers."""
    got = {}
    deadline = time.monotonic() + timeout
    while len(got) < n:
        f = c.recv_frame(max(0.1, deadline - time.monotonic()))
        assert f.method in (amqp.BASIC_ACK, BASIC_NACK), f
        tag, bits = struct.unpack(">QB", f.payload[4:13])
        kind = "ack" if f.method == amqp.BASIC_ACK else "nack"
        first = max(got, default=0) + 1 if bits & 1 else tag
        for seq in range(first, tag + 1):
            assert seq not in got, f"publish {seq} confirmed twice"
            got[seq] = kind
    return got


def test_persistent_publishes_alternating_with_refused_ones_are_each_confirmed(ferryd_factory):
    d = ferryd_factory()
    c = amqp.Connection(d.host, d.port, timeout=20)
    c.handshake()
    c.open_channel(1)
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("kept", durable=True)))
    c.expect(amqp.QUEUE_DECLARE_OK)
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args(
        "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})))
    c.expect(amqp.QUEUE_DECLARE_OK)
    c.send(amqp.method_frame(1, CONFIRM_SELECT, amqp.bits(False)))
    c.expect(CONFIRM_SELECT_OK)
    n = 64
    burst = b""
    for i in range(1, n + 1):
        q = "kept" if i % 2 else "full"
        burst += amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", q))
        burst += amqp.header_frame(1, 1, flags=PERSISTENT, props=amqp.octet(2))
        burst += amqp.body_frame(1, b"x")
    c.send(burst)
    got = read_confirms(c, n)
    assert got == {i: "ack" if i % 2 else "nack" for i in range(1, n + 1)}
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("kept", passive=True)))
    assert c.expect(amqp.QUEUE_DECLARE_OK).args["message_count"] == n // 2
    c.close()


def test_a_publish_without_a_record_behind_one_waiting_for_a_slow_sync_is_confirmed(ferryd_factory):
    """Confirms go out in publish order, so a publish with nothing to store (transient, or
    unrouted) that follows one still waiting for its fdatasync waits too — for that
    publish's batch. It waited for the batch being built instead; when nothing else was
    written that batch stayed empty, was never synced, and the confirm never came (found by
    fuzz_conn: an input that waited 7.5 s for a confirm)."""
    d = ferryd_factory(env={"FERRY_IO_FAULTS": "op=fdatasync,p=1,delay=1000"})
    c = amqp.Connection(d.host, d.port, timeout=20)
    c.handshake()
    c.open_channel(1)
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("durable-q", durable=True)))
    c.expect(amqp.QUEUE_DECLARE_OK)
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("transient-q")))
    c.expect(amqp.QUEUE_DECLARE_OK)
    c.send(amqp.method_frame(1, CONFIRM_SELECT, amqp.bits(False)))
    c.expect(CONFIRM_SELECT_OK)
    # 1: persistent to a durable queue: its batch goes to the (slow) writer at once.
    c.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "durable-q")) +
           amqp.header_frame(1, 1, flags=PERSISTENT, props=amqp.octet(2)) + amqp.body_frame(1, b"p"))
    time.sleep(0.3)  # the fdatasync of publish 1's batch is under way
    # 2: transient, and 3: unroutable: no record; each waits only for publish 1's batch.
    c.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "transient-q")) +
           amqp.header_frame(1, 1) + amqp.body_frame(1, b"t") +
           amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "no-such-queue")) +
           amqp.header_frame(1, 1) + amqp.body_frame(1, b"u"))
    t0 = time.monotonic()
    got = read_confirms(c, 3, timeout=10)
    assert got == {1: "ack", 2: "ack", 3: "ack"}
    assert time.monotonic() - t0 < 5, "the confirms of publishes without a record waited for an unrelated sync"
    c.close()
