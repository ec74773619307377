"""Compaction of the message log (issue 9, defect 6): one message left unacknowledged must
not pin every later segment. Segments are deleted oldest first; without compaction the one
segment holding the old message keeps every segment after it on disk, and the data
directory grows by everything that passes through the queue.

Scaled down from the bench (bench/store/compaction_bench.py, 3 GiB): 64 KiB segments and
about 20 MiB of 4 KiB messages through one durable queue while one message stays delivered
and unacknowledged on another channel. The bound asserted is the README's: segment bytes at
most 2 x live data + 8 segments."""
import time

from . import helpers
from .helpers import connect, drain, segment_files

SEG = 65536
BODY = 4096
ROUNDS = 10
PER_ROUND = 500  # 10 x 500 x 4 KiB = 20 MiB through the queue
FACTOR, FEW = 2, 8  # the README's bound: segments <= FACTOR x live + FEW segments


def seg_bytes(data_dir):
    return sum(s for _, s in segment_files(data_dir))


def hold_one(d, queue, mid):
    """Publish `mid` and take it on a channel of its own (prefetch 1) that never acks it.
    Returns the open connection: the message stays delivered and unacknowledged while it is."""
    helpers.publish_all(d, "", queue, [mid], size=BODY)
    conn = connect(d)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append(helpers.check_body(b)))
    deadline = time.monotonic() + helpers.TIMEOUT
    while not got and time.monotonic() < deadline:
        conn.process_data_events(0.1)
    assert got == [mid], f"the holder got {got}, not [{mid}]"
    return conn


def pass_through(d, queue, rounds, tag):
    """Publish and drain (acking) rounds x PER_ROUND messages; returns segment bytes after each."""
    sizes = []
    for r in range(rounds):
        ids = [f"{tag}{r}-{i}" for i in range(PER_ROUND)]
        helpers.publish_all(d, "", queue, ids, size=BODY, timeout=120)
        got = drain(d, queue, timeout=60)
        assert sorted(got.ids) == sorted(ids), f"round {r}: drained {got.count()} of {len(ids)}"
        sizes.append(seg_bytes(d.data_dir))
    return sizes


def wait_bytes_at_most(data_dir, limit, timeout=3 * helpers.TIMEOUT):
    deadline = time.monotonic() + timeout
    while seg_bytes(data_dir) > limit and time.monotonic() < deadline:
        time.sleep(0.2)
    return seg_bytes(data_dir)


def test_one_unacked_message_does_not_pin_the_log(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    conn = connect(d)
    conn.channel().queue_declare("q", durable=True)
    conn.close()
    holder = hold_one(d, "q", "held")
    sizes = pass_through(d, "q", ROUNDS, "r")
    limit = FACTOR * (BODY + 200) + FEW * SEG
    final = wait_bytes_at_most(d.data_dir, limit)
    assert final <= limit, (
        f"{ROUNDS * PER_ROUND * BODY >> 20} MiB passed through and was acked, one {BODY}-byte message "
        f"left unacked: the log holds {final} bytes in {len(segment_files(d.data_dir))} segments "
        f"(bound {limit}); after each round: {sizes}")
    # The held message is still there, delivered: given back, it comes with redelivered set.
    holder.close()
    got = drain(d, "q")
    assert got.ids == ["held"], f"after closing the holder the queue gave {got.ids}"
    assert got.redelivered["held"], "the held message came back without redelivered"


def test_a_compacted_message_survives_a_crash_and_comes_back_redelivered(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    conn = connect(d)
    conn.channel().queue_declare("q", durable=True)
    conn.close()
    holder = hold_one(d, "q", "held")
    pass_through(d, "q", 3, "a")
    limit = FACTOR * (BODY + 200) + FEW * SEG
    assert wait_bytes_at_most(d.data_dir, limit) <= limit, "the log was not compacted"
    d.kill9()
    try:
        holder.close()
    except Exception:  # its broker is gone: the socket is already dead
        pass
    d = helpers.start(ferryd_factory, d.data_dir, *d.args)
    got = drain(d, "q")
    assert got.ids == ["held"], f"after kill -9 the queue gave {got.ids}"
    assert got.redelivered["held"], "the compacted, delivered message came back without redelivered"
