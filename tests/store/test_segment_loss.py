"""A lost segment costs its own records, never another's (issue 9, defect 1).

Segments are looked up by id. A segment that is missing or unreadable at recovery leaves a
gap in the ids; the segments after the gap must still count their live messages, so that
they are not reclaimed (deleted) once the segments before the gap are drained."""
import os
import re

from . import helpers
from .helpers import connect, drain, segment_files

SEG = ("--segment-size", "4096")  # the smallest: about three 1 KB messages per segment
N = 40
IDS = [f"gap-{i:03d}" for i in range(N)]


def ids_in(path):
    with open(path, "rb") as f:
        blob = f.read()
    return {m.group(1).decode() for m in re.finditer(rb"(gap-\d{3}):\d+:", blob)}


def ack_first(d, queue, n):
    """basic.get n messages and ack them; returns their ids (once the broker took the acks)."""
    conn = connect(d)
    try:
        ch = conn.channel()
        got = []
        for _ in range(n):
            method, _, body = ch.basic_get(queue, auto_ack=False)
            assert method is not None, f"{queue} ran dry after {len(got)} messages"
            got.append(helpers.check_body(body))
            ch.basic_ack(method.delivery_tag)
        ch.queue_declare(queue, passive=True)  # a round trip: the acks are in
        return got
    finally:
        conn.close()


def publish_and_stop(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), *SEG)
    conn = connect(d)
    conn.channel().queue_declare("q", durable=True)
    conn.close()
    helpers.publish_all(d, "", "q", IDS, size=1000, window=1)
    d.stop_and_check()
    segs = segment_files(d.data_dir)
    assert len(segs) >= 6, f"{N} 1 KB messages in only {len(segs)} segments of 4 KiB"
    return d.data_dir, segs


def test_a_missing_segment_costs_only_its_own_messages_across_acks_and_restarts(ferryd_factory, tmp_path):
    data, segs = publish_and_stop(ferryd_factory, tmp_path)
    lost_path = segs[1][0]
    lost = ids_in(lost_path)
    assert lost and len(lost) < 6, f"segment 2 holds {len(lost)} messages"
    os.unlink(lost_path)

    d = helpers.start(ferryd_factory, data, *SEG)
    acked = ack_first(d, "q", 6)  # drains the first segment, and some after the gap
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, data, *SEG)
    got = drain(d, "q", ack=False)
    log = helpers.log_since_start(d)
    d.stop_and_check()

    expected = [m for m in IDS if m not in lost and m not in acked]
    missing = [m for m in expected if m not in got.ids]
    assert not missing, (f"segment {os.path.basename(lost_path)} deleted ({len(lost)} messages); after acking "
                         f"{len(acked)} and a restart, {len(missing)} other confirmed messages are gone: "
                         f"{missing[:5]}...\n{log[-1500:]}")
    assert got.ids == expected, "recovered messages out of order, or acked/lost ones back"


def test_an_unreadable_segment_costs_only_its_own_messages_and_is_logged(ferryd_factory, tmp_path):
    """A segment that cannot be opened (here: a directory in its place, so open fails with
    EISDIR) is skipped with a log line naming it; every other segment's messages survive an
    ack of the ones before it and a restart."""
    data, segs = publish_and_stop(ferryd_factory, tmp_path)
    bad_path = segs[2][0]
    bad = ids_in(bad_path)
    os.unlink(bad_path)
    os.mkdir(bad_path)

    d = helpers.start(ferryd_factory, data, *SEG)
    acked = ack_first(d, "q", 8)  # past the bad segment
    log = helpers.log_since_start(d)
    assert d.stop() == 0
    assert os.path.basename(bad_path) in log, f"the unreadable segment is not named in the log:\n{log[-1500:]}"

    d = helpers.start(ferryd_factory, data, *SEG)
    got = drain(d, "q", ack=False)
    log2 = helpers.log_since_start(d)
    d.stop_and_check()
    expected = [m for m in IDS if m not in bad and m not in acked]
    missing = [m for m in expected if m not in got.ids]
    assert not missing, (f"{len(missing)} messages of other segments lost: {missing[:5]}\n{log2[-1500:]}")
