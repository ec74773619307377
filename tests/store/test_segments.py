"""The segment log's shape on disk: a data directory with a VERSION, segment files of a
bounded size, and disk use that falls back to about one segment once the queues that
filled many segments are drained (fully acked segments are deleted, oldest first)."""
import os
import time

from . import helpers
from .helpers import connect, drain, segment_files

SEG = 65536
BODY = 1024


def fill(d, queue, n, size=BODY):
    conn = connect(d)
    conn.channel().queue_declare(queue, durable=True)
    conn.close()
    helpers.publish_all(d, "", queue, [f"{queue}-{i}" for i in range(n)], size=size)


def wait_segments_at_most(data_dir, n, timeout=helpers.TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        segs = segment_files(data_dir)
        if len(segs) <= n or time.monotonic() > deadline:
            return segs
        time.sleep(0.1)


def test_data_dir_holds_version_meta_log_and_segments(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    fill(d, "q", 10)
    assert os.path.isfile(os.path.join(d.data_dir, "VERSION")), "no VERSION file in the data dir"
    assert os.path.isfile(os.path.join(d.data_dir, "meta.log")), "no meta.log in the data dir"
    segs = segment_files(d.data_dir)
    assert segs, "no segments/*.seg after publishing persistent messages"
    for path, _ in segs:
        name = os.path.basename(path)[:-4]
        assert len(name) == 16 and all(c in "0123456789abcdef" for c in name.lower()), name


def test_segments_stay_within_the_segment_size(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    fill(d, "q", 1000)
    segs = segment_files(d.data_dir)
    assert len(segs) >= 1000 * BODY // SEG, f"1 MB of messages in only {len(segs)} segments of {SEG} bytes"
    # A segment may end with one record that starts before the limit; none is much bigger.
    too_big = [(os.path.basename(p), s) for p, s in segs if s > SEG + BODY + 4096]
    assert not too_big, f"segments over --segment-size {SEG}: {too_big}"


def test_draining_a_durable_queue_shrinks_the_log_back_to_about_one_segment(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    fill(d, "q", 2000)
    before = segment_files(d.data_dir)
    assert len(before) >= 20, f"2 MB of messages in only {len(before)} segments of {SEG} bytes"
    assert len(drain(d, "q").ids) == 2000
    after = wait_segments_at_most(d.data_dir, 2)
    assert len(after) <= 2 and sum(s for _, s in after) <= 2 * SEG + 8192, (
        f"after draining: {len(after)} segments, {sum(s for _, s in after)} bytes "
        f"(was {len(before)} segments)")
    # ...and stays small, and empty, after a restart.
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir, "--segment-size", str(SEG))
    assert helpers.depth(d, "q") == 0
    assert len(segment_files(d.data_dir)) <= 2


def test_acked_segments_are_reclaimed_while_other_queues_keep_theirs(ferryd_factory, tmp_path):
    """Reclaiming is per message, not per segment owner: draining one of two interleaved
    queues frees nothing the other still needs, and draining both frees everything."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("qa", durable=True)
    ch.queue_declare("qb", durable=True)
    conn.close()
    run = helpers.Run(d)  # two publishers at once: their messages interleave in the log
    pa = run.publisher("a", "", "qa", [], sizes=[BODY], window=20, ids=[f"a{i}" for i in range(600)])
    pb = run.publisher("b", "", "qb", [], sizes=[BODY], window=20, ids=[f"b{i}" for i in range(600)])
    run.go(60, until_done=True)
    assert len(pa.confirmed) == len(pb.confirmed) == 600
    assert len(drain(d, "qa").ids) == 600
    time.sleep(0.5)
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir, "--segment-size", str(SEG))
    assert drain(d, "qb").ids == [f"b{i}" for i in range(600)]
    assert len(wait_segments_at_most(d.data_dir, 2)) <= 2


def test_deleting_or_purging_a_durable_queue_reclaims_its_segments(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    fill(d, "qa", 600)
    fill(d, "qb", 600)
    assert len(segment_files(d.data_dir)) >= 15
    conn = connect(d)
    ch = conn.channel()
    ch.queue_purge("qa")
    ch.queue_delete("qb")
    conn.close()
    after = wait_segments_at_most(d.data_dir, 2)
    assert len(after) <= 2, f"{len(after)} segments left after purging one queue and deleting the other"


def test_segments_emptied_while_still_active_are_reclaimed(ferryd_factory, tmp_path):
    """Each message is consumed and acked right after it is published, so every segment's
    messages are gone while it is still the one being written: once the log has rolled past
    it, it is deleted all the same (it used to stay on disk, and held every later segment
    with it, until the next restart)."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG))
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    body = b"x" * 4096
    for i in range(200):  # 800 KiB: about 12 segments
        ch.basic_publish("", "q", body, helpers.PERSISTENT)
        method, _, got = ch.basic_get("q")
        assert method is not None and got == body, f"message {i} not in the queue right after its confirm"
        ch.basic_ack(method.delivery_tag)
    rolled = segment_files(d.data_dir)
    conn.close()
    assert rolled and max(int(os.path.basename(p)[:-4], 16) for p, _ in rolled) >= 5, (
        f"800 KiB in {SEG}-byte segments never rolled: {rolled}")
    after = wait_segments_at_most(d.data_dir, 1, timeout=5)
    assert len(after) <= 1, f"{len(after)} segments left with every message acked: {after}"
