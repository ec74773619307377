"""Every byte a client can make ferryd hold counts toward --memory-high-watermark (issue 8
item 11): memory that is not message bodies (a consistent-hash ring, a queue's priority
levels) raises the alarm (connection.blocked) like messages do, and releasing it clears it."""
import pytest
import rawamqp as R
from rawclient import CONNECTION_BLOCKED, CONNECTION_UNBLOCKED, declare, expect, open_conn, wait_method

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
