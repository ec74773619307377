"""A persistent message fanned out to more durable queues than 16 bits count (issue 9,
defect 3): its PUBLISH record names every queue, so 65,536 and more must be written and read
back. Before the fix the queue count was stored in 16 bits: 65,536 queues wrote a record that
recovery read as naming none, and every confirmed copy vanished at the restart.

The 65,537 queues and bindings are declared with nowait, pipelined over a raw connection (a
round trip each would take minutes), and the data directory is on tmpfs where there is one:
every durable declare and bind fsyncs meta.log, 131,074 fsyncs that would take minutes on a
disk. This test is about the record format, not about the disk.

About 15 s under ASan (65,537 queues); tests/unit/test_store.c covers the record itself (a
PUBLISH to 70,000 queues written, checked, decoded and recovered into a sink)."""
import os
import shutil
import sys
import tempfile

import pytest

from . import helpers
from .helpers import connect

from ferryd import Ferryd  # tests/lib, on sys.path via tests/conftest.py

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
import rawamqp as amqp  # noqa: E402

NQ = 65537
EXCHANGE_DECLARE_OK = (40, 11)
QUEUE_BIND = (50, 20)


def queue_name(i):
    return f"w{i:05d}"


def raw(d):
    c = amqp.Connection(d.host, d.port, timeout=30)
    c.handshake()
    c.open_channel(1)
    return c


def declare_and_bind_all(d):
    c = raw(d)
    try:
        c.send(amqp.method_frame(1, amqp.EXCHANGE_DECLARE, amqp.short(0) + amqp.shortstr("wide") +
                                 amqp.shortstr("fanout") + amqp.bits(False, True, False, False, False) +
                                 amqp.table({})))
        c.expect(EXCHANGE_DECLARE_OK, timeout=30)
        for start in range(0, NQ, 4096):
            out = bytearray()
            for i in range(start, min(NQ, start + 4096)):
                out += amqp.method_frame(1, amqp.QUEUE_DECLARE,
                                         amqp.queue_declare_args(queue_name(i), durable=True, nowait=True))
                out += amqp.method_frame(1, QUEUE_BIND, amqp.short(0) + amqp.shortstr(queue_name(i)) +
                                         amqp.shortstr("wide") + amqp.shortstr("") + amqp.bits(True) +
                                         amqp.table({}))
            c.send(bytes(out))
        # A declare that waits: every nowait one before it has been done.
        c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args(queue_name(NQ - 1), passive=True)))
        f = c.expect(amqp.QUEUE_DECLARE_OK, timeout=300)
        assert f.args["message_count"] == 0
    finally:
        c.close()


def depths(d):
    """The depth of every queue, by pipelined passive declares."""
    c = raw(d)
    out = {}
    try:
        for start in range(0, NQ, 4096):
            names = [queue_name(i) for i in range(start, min(NQ, start + 4096))]
            c.send(b"".join(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args(n, passive=True))
                            for n in names))
            for n in names:
                f = c.recv_frame(timeout=60)
                assert f.method == amqp.QUEUE_DECLARE_OK, f"passive declare of {n}: {f!r}"
                out[f.args["queue"]] = f.args["message_count"]
    finally:
        c.close()
    return out


@pytest.fixture
def fast_dir(tmp_path):
    """A data directory on tmpfs (/dev/shm) if the machine has one, else under tmp_path."""
    base = tempfile.mkdtemp(prefix="ferry-wide-", dir="/dev/shm") if os.path.isdir("/dev/shm") else str(tmp_path)
    try:
        yield os.path.join(base, "data")
    finally:
        if base != str(tmp_path):
            shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(300)
def test_a_confirmed_message_fanned_out_to_65537_durable_queues_is_in_every_one_after_a_crash(fast_dir):
    d = Ferryd(data_dir=fast_dir).start(timeout=120)
    try:
        declare_and_bind_all(d)
        conn = connect(d)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("wide", "", helpers.body_for("wide-1", 100), helpers.PERSISTENT)  # raises if nacked
        conn.close()
    finally:
        d.kill9()
    d = Ferryd(data_dir=fast_dir).start(timeout=300)  # recovery of 65,537 queues
    try:
        got = depths(d)
        log = d.log_text()
    finally:
        d.stop_and_check()
    empty = [n for n, k in got.items() if k != 1]
    assert len(got) == NQ, f"{NQ - len(got)} queues missing after the restart"
    assert not empty, (f"the confirmed message is missing from {len(empty)} of {NQ} queues "
                       f"(first {empty[:3]})\n{log[-1500:]}")
