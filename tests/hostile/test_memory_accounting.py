"""Every byte a client can make ferryd hold counts toward --memory-high-watermark (issue 8
item 11): memory that is not message bodies (a consistent-hash ring, a queue's priority
levels, consumers' output buffers, records waiting for a slow disk) raises the alarm
(connection.blocked) like messages do, and releasing it clears it. Each test fails when its
kind is not counted."""
import pytest
import rawamqp as R
from rawclient import CONNECTION_BLOCKED, CONNECTION_UNBLOCKED, declare, expect, open_conn, purge, wait_method

pytestmark = pytest.mark.ferry_only

EXCHANGE_DECLARE_OK = (40, 11)
QUEUE_BIND = (50, 20)
QUEUE_BIND_OK = (50, 21)
QUEUE_UNBIND = (50, 50)
QUEUE_UNBIND_OK = (50, 51)
WATERMARK = 4 << 20


def test_a_consistent_hash_ring_counts_toward_the_watermark(ferryd_factory):
    d = ferryd_factory("--memory-high-watermark", str(WATERMARK))
    c = open_conn(d.host, d.port)
    c.send(R.method_frame(1, R.EXCHANGE_DECLARE, R.short(0) + R.shortstr("ring") + R.shortstr("x-consistent-hash") +
                          R.bits(False, False, False, False, False) + R.table({})))
    expect(c, EXCHANGE_DECLARE_OK)
    declare(c, "ring-q")
    # One binding of weight 1,000,000: a ring of a million buckets (8 MB), no message at all.
    c.send(R.method_frame(1, QUEUE_BIND, R.short(0) + R.shortstr("ring-q") + R.shortstr("ring") +
                          R.shortstr("1000000") + R.bits(False) + R.table({})))
    assert wait_method(c, CONNECTION_BLOCKED, 10) is not None, "an 8 MB ring did not raise a 4 MiB memory alarm"
    c.send(R.method_frame(1, QUEUE_UNBIND, R.short(0) + R.shortstr("ring-q") + R.shortstr("ring") +
                          R.shortstr("1000000") + R.table({})))
    assert wait_method(c, CONNECTION_UNBLOCKED, 10) is not None, "the alarm stayed after the ring was gone"
    c.close()


def test_priority_levels_count_toward_the_watermark(ferryd_factory):
    d = ferryd_factory("--memory-high-watermark", str(WATERMARK))
    c = open_conn(d.host, d.port)
    declare(c, "levels", arguments={"x-max-priority": 255})
    # 256 messages of 1 byte, one per priority: each level gets its own block of entries.
    pubs = b""
    for p in range(256):
        pubs += (R.method_frame(1, R.BASIC_PUBLISH, R.basic_publish_args("", "levels")) +
                 R.header_frame(1, 1, flags=1 << 11, props=R.octet(p)) + R.body_frame(1, b"x"))
    c.send(pubs)
    assert wait_method(c, CONNECTION_BLOCKED, 10) is not None, "256 priority levels in use did not raise the alarm"
    admin = open_conn(d.host, d.port)  # the blocked publisher's input is paused
    admin.send(R.method_frame(1, R.QUEUE_DELETE, R.queue_delete_args("levels")))
    expect(admin, R.QUEUE_DELETE_OK)
    assert wait_method(c, CONNECTION_UNBLOCKED, 10) is not None, "the alarm stayed after the queue was deleted"
    admin.close()
    c.close()


BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
EXCHANGE_DECLARE = (40, 10)


def consume_args(queue, tag):
    return (R.short(0) + R.shortstr(queue) + R.shortstr(tag) + R.bits(False, True, False, False) + R.table({}))


def fanout_to_non_readers(d, n):
    """A publisher connection, a fanout exchange "fan" bound to n queues, and n no-ack
    consumers (one connection each) that never read."""
    pub = open_conn(d.host, d.port)
    pub.send(R.method_frame(1, EXCHANGE_DECLARE, R.short(0) + R.shortstr("fan") + R.shortstr("fanout") +
                            R.bits(False, False, False, False, False) + R.table({})))
    expect(pub, EXCHANGE_DECLARE_OK)
    readers = []
    for i in range(10):
        declare(pub, f"fan-{i}")
        pub.send(R.method_frame(1, QUEUE_BIND, R.short(0) + R.shortstr(f"fan-{i}") + R.shortstr("fan") +
                                R.shortstr("") + R.bits(False) + R.table({})))
        expect(pub, QUEUE_BIND_OK)
        c = open_conn(d.host, d.port)
        c.send(R.method_frame(1, BASIC_CONSUME, consume_args(f"fan-{i}", f"c{i}")))  # no-ack: nothing held unacked
        expect(c, BASIC_CONSUME_OK)
        readers.append(c)  # from here on never read
    return pub, readers


def publish_fan(pub, body, n):
    pub.send(b"".join(R.method_frame(1, R.BASIC_PUBLISH, R.basic_publish_args("fan", "")) +
                      R.header_frame(1, len(body)) + R.body_frame(1, body) for _ in range(n)))


def test_output_buffers_of_consumers_that_do_not_read_count_toward_the_watermark(ferryd_factory):
    """A fanout message is stored once but a small body (under 16 KiB) is copied into the
    output buffer of every consumer it goes to: ten consumers that never read hold ten
    copies. 8 MiB of messages alone stay under a 16 MiB watermark; beyond the ~3 MiB the
    kernel's socket buffers take per connection, their buffered copies (up to the 4 MiB
    output cap, ten times) must raise the alarm, and closing the non-readers must clear it."""
    d = ferryd_factory("--memory-high-watermark", str(16 << 20))
    pub, readers = fanout_to_non_readers(d, 10)
    publish_fan(pub, b"b" * 8192, 1024)
    assert wait_method(pub, CONNECTION_BLOCKED, 15) is not None, (
        "ten consumers' output buffers holding ~40 MiB did not raise a 16 MiB memory alarm")
    for c in readers:
        c.close()
    assert wait_method(pub, CONNECTION_UNBLOCKED, 15) is not None, "the alarm stayed after the non-readers left"
    pub.close()


def test_large_bodies_to_non_readers_are_held_once_and_counted_until_written(ferryd_factory):
    """Bodies of 16 KiB and more are written from the shared message (writev), not copied
    per consumer (issue 14, row 13): 8 MiB of 64 KiB messages fanned out to ten consumers
    that never read hold 8 MiB, not ten copies, so a 16 MiB watermark is not reached (before
    the change: ~40 MiB of copies raised it). What the output still references stays counted:
    the queues are empty (no-ack, everything delivered), yet 12 MiB more raises the alarm,
    and it clears only once the non-readers are gone and their references given back."""
    d = ferryd_factory("--memory-high-watermark", str(16 << 20))
    pub, readers = fanout_to_non_readers(d, 10)
    body = b"b" * 65536
    publish_fan(pub, body, 128)
    assert wait_method(pub, CONNECTION_BLOCKED, 4) is None, (
        "8 MiB of large bodies to ten non-readers raised a 16 MiB alarm: the bodies were copied per consumer")
    publish_fan(pub, body, 192)
    assert wait_method(pub, CONNECTION_BLOCKED, 15) is not None, (
        "20 MiB of large messages held for non-readers did not raise a 16 MiB memory alarm")
    admin = open_conn(d.host, d.port)
    for c in readers:
        c.close()
    for i in range(10):  # what the consumers did not take is still queued: drop it
        purge(admin, f"fan-{i}")
    assert wait_method(pub, CONNECTION_UNBLOCKED, 15) is not None, "the alarm stayed after the non-readers left"
    admin.close()
    pub.close()


def test_a_pending_store_batch_on_a_slow_disk_counts_toward_the_watermark(ferryd_factory):
    """Persistent publishes without confirms on a disk whose fdatasync takes 3 s: the records
    waiting for the writer are a second copy of every message. 12 MiB of messages stay under
    a 20 MiB watermark; with their 12 MiB of records waiting it must be raised, and once the
    slow sync is done and they are consumed it must clear."""
    d = ferryd_factory("--memory-high-watermark", str(20 << 20),
                       env={"FERRY_IO_FAULTS": "op=fdatasync,p=1,delay=3000"})
    c = open_conn(d.host, d.port)
    declare(c, "slow", durable=True)
    body = b"s" * 65536
    frames = b"".join(R.method_frame(1, R.BASIC_PUBLISH, R.basic_publish_args("", "slow")) +
                      R.header_frame(1, len(body), flags=1 << 12, props=R.octet(2)) + R.body_frame(1, body)
                      for _ in range(192))
    c.send(frames)
    assert wait_method(c, CONNECTION_BLOCKED, 20) is not None, (
        "12 MiB of records waiting for a slow fdatasync did not raise a 20 MiB memory alarm")
    admin = open_conn(d.host, d.port)
    purge(admin, "slow")
    assert wait_method(c, CONNECTION_UNBLOCKED, 30) is not None, "the alarm stayed after the batch was written"
    admin.close()
    c.close()
