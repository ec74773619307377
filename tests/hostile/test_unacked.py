"""The unacked ring cannot grow without bound while the client keeps settling: a client
that holds one delivery forever and acknowledges every later one makes ferryd keep only
the live entries (settled ones behind the held one are compacted away), not one entry per
delivery since the held one."""
import select
import struct
import threading

import rawamqp as amqp
from hostile_util import proc_status

MiB = 1 << 20


def drain(c, stop, state):
    """Reads what the broker sends until stop is set, frame by frame, keeping any close in
    state["closes"] and the unparsed tail in state["tail"] (the socket's own timeout is left
    alone: the main thread sends on it meanwhile)."""
    buf = b""
    while not stop.is_set():
        if not select.select([c.sock], [], [], 0.2)[0]:
            continue
        data = c.sock.recv(1 << 20)
        if not data:
            break
        buf += data
        pos = 0
        while len(buf) - pos >= 7:
            ftype, channel, size = struct.unpack_from(">BHI", buf, pos)
            if len(buf) - pos < 8 + size:
                break
            if ftype == amqp.FRAME_METHOD and buf[pos + 7:pos + 11] in (b"\x00\x14\x00\x28", b"\x00\x0a\x00\x32"):
                state["closes"].append(buf[pos:pos + 8 + size])
            pos += 8 + size
        buf = buf[pos:]
    state["tail"] = buf


def ack(tag):
    return amqp.method_frame(1, amqp.BASIC_ACK, struct.pack(">QB", tag, 0))


def test_holding_one_delivery_while_acking_the_rest_keeps_the_ring_small(ferryd_factory):
    # No ASan quarantine: freed memory is reused at once, so RSS shows what ferryd holds
    # (with nothing held back, RSS then grows by under 1 MiB here).
    d = ferryd_factory(env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=0"})
    c = amqp.Connection(d.host, d.port, timeout=60)
    c.handshake()
    c.open_channel(1)
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("held")))
    c.expect(amqp.QUEUE_DECLARE_OK)
    stop = threading.Event()
    state = {"closes": [], "tail": b""}
    reader = threading.Thread(target=drain, args=(c, stop, state))
    reader.start()
    one = (amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "held")) +
           amqp.header_frame(1, 1) + amqp.body_frame(1, b"x") +
           amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args("held", no_ack=False)))
    tag = 0

    def rounds(n):
        nonlocal tag
        out = []
        for _ in range(n):
            tag += 1
            out.append(one if tag == 1 else one + ack(tag))  # delivery 1 is never acked
        c.send(b"".join(out))

    def settled():
        """A synchronous round trip on another channel: everything before it was handled."""
        probe = amqp.Connection(d.host, d.port, timeout=60)
        probe.handshake()
        probe.open_channel(1)
        probe.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("held", passive=True)))
        for _ in range(600):
            f = probe.expect(amqp.QUEUE_DECLARE_OK, timeout=60)
            if f.args["message_count"] == 0:
                break
            probe.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("held", passive=True)))
        probe.close()

    try:
        for _ in range(5):
            rounds(10000)  # warm up the allocator
        settled()
        before = proc_status(d.proc.pid)["VmRSS"] * 1024
        for _ in range(25):
            rounds(10000)
        settled()
        after = proc_status(d.proc.pid)["VmRSS"] * 1024
    finally:
        stop.set()
        reader.join()
    grown = after - before
    print(f"250,000 deliveries behind one held delivery: ferryd RSS +{grown // 1024} KiB")
    assert grown < 8 * MiB, f"ferryd RSS grew by {grown // MiB} MiB (one ring entry per delivery)"
    # The held delivery survived every compaction: acking it works, and a second ack of it
    # is RabbitMQ's unknown delivery tag (the first error the broker sent on this channel).
    assert state["closes"] == [], "the broker closed something during the flood"
    c.buf = state["tail"]
    c.send(ack(1) + ack(1))
    close = c.read_close(timeout=60)
    assert (close.level, close.code) == ("channel", amqp.PRECONDITION_FAILED), close
    assert close.text == "PRECONDITION_FAILED - unknown delivery tag 1", close
    c.close()
