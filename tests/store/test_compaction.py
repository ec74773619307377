"""Compaction of the message log (issue 9, defect 6): one message left unacknowledged must
not pin every later segment. Segments are deleted oldest first; without compaction the one
segment holding the old message keeps every segment after it on disk, and the data
directory grows by everything that passes through the queue.

Scaled down from the bench (bench/store/compaction_bench.py, 3 GiB): 64 KiB segments and
about 20 MiB of 4 KiB messages through one durable queue while one message stays delivered
and unacknowledged on another channel. The bound asserted is the README's: segment bytes at
most 2 x live data + 8 segments."""
import os
import random
import signal
import time

import pytest

from . import helpers
from .helpers import connect, drain, segment_files

SEG = 65536
BODY = 4096
ROUNDS = 10
PER_ROUND = 500  # 10 x 500 x 4 KiB = 20 MiB through the queue
FACTOR, FEW = 2, 8  # the README's bound: segments <= FACTOR x live + FEW segments


def seg_bytes(data_dir):
    return sum(s for _, s in segment_files(data_dir))


def hold_one(d, queue, mid, size=BODY):
    """Publish `mid` and take it on a channel of its own (prefetch 1) that never acks it.
    Returns the open connection: the message stays delivered and unacknowledged while it is."""
    helpers.publish_all(d, "", queue, [mid], size=size)
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


def test_a_segment_that_comes_back_after_compaction_duplicates_nothing(ferryd_factory, tmp_path):
    """The state a crash leaves between the MOVE record's fsync and the old segment's
    deletion: both copies of the held message on disk. It must come back once, with
    redelivered (its delivery is in the old segment and in the MOVE record).

    With 4 KiB segments the held 3000-byte message and its DELIVERED record fill the first
    segment alone; a copy of that file taken then is put back after compaction deleted it."""
    seg = 4096
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(seg))
    conn = connect(d)
    conn.channel().queue_declare("q", durable=True)
    conn.close()
    holder = hold_one(d, "q", "held", 3000)
    time.sleep(0.3)  # the DELIVERED record's batch is written
    old_path = segment_files(d.data_dir)[0][0]
    with open(old_path, "rb") as f:
        old_bytes = f.read()
    assert b"held:3000:" in old_bytes, "the held message is not in the first segment"
    for r in range(4):
        ids = [f"t{r}-{i}" for i in range(20)]
        helpers.publish_all(d, "", "q", ids, size=3000)
        assert sorted(drain(d, "q").ids) == sorted(ids)
    deadline = time.monotonic() + 3 * helpers.TIMEOUT
    while os.path.exists(old_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(old_path), "the held message's segment was never compacted away"
    holder.close()
    assert d.stop() == 0
    with open(old_path, "wb") as f:  # the deletion did not reach the disk
        f.write(old_bytes)
    d = helpers.start(ferryd_factory, d.data_dir, *d.args)
    got = drain(d, "q")
    assert got.ids == ["held"], f"with both copies on disk the queue gave {got.ids}"
    assert got.redelivered["held"], "the held message came back without redelivered"



def test_paged_out_messages_in_old_segments_are_compacted_too(ferryd_factory, tmp_path):
    """A queue deeper than --memory-budget, published first: its bodies beyond the first 512
    are paged out (their entries point into the oldest segments). Traffic through another
    queue must not pile up behind them: their records are read back (on the helper thread)
    and moved like the others; after a kill -9 every one is there, intact and in order."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--segment-size", str(SEG), "--memory-budget", "65536")
    conn = connect(d)
    conn.channel().queue_declare("deep", durable=True)
    conn.channel().queue_declare("q", durable=True)
    conn.close()
    deep = [f"deep-{i}" for i in range(1500)]
    helpers.publish_all(d, "", "deep", deep, size=2000, timeout=120)
    live = 1500 * 2100
    sizes = pass_through(d, "q", ROUNDS, "r")
    limit = FACTOR * live + FEW * SEG
    final = wait_bytes_at_most(d.data_dir, limit)
    assert final <= limit, (
        f"{ROUNDS * PER_ROUND * BODY >> 20} MiB passed through behind {len(deep)} paged-out messages "
        f"({live} bytes): the log holds {final} bytes (bound {limit}); after each round: {sizes}")
    d.kill9()
    d = helpers.start(ferryd_factory, d.data_dir, *d.args)
    got = drain(d, "deep", timeout=60)
    assert got.ids == deep, f"after kill -9: {got.count()} of {len(deep)}, in order: {got.ids[:3]}..."

class Holder:
    """Takes every message of a queue and never acks (its connection stays open)."""

    def __init__(self, d, queue, expect):
        self.conn = connect(d, heartbeat=0)
        ch = self.conn.channel()
        ch.basic_qos(prefetch_count=0)
        self.got = []
        ch.basic_consume(queue, lambda c, m, p, b: self.got.append(helpers.check_body(b)))
        deadline = time.monotonic() + helpers.TIMEOUT
        while len(self.got) < expect and time.monotonic() < deadline:
            self.conn.process_data_events(0.1)
        assert len(self.got) >= expect, f"holder of {queue} got {len(self.got)} of {expect}"


FAULTS = "op=pwrite|fdatasync,p=0.01,err=any,short;op=unlink|dirsync,p=0.05,err=EIO"


def start_under_faults(ferryd_factory, data, args, seed, tries=5):
    """Starts ferryd with injected faults. A fault during recovery may make it refuse to
    start (a failed directory sync, say): allowed, as long as it exits on its own with no
    sanitizer report; then it is tried again with the next seed, and at last without
    faults. Returns the running ferryd and how many starts were refused."""
    for attempt in range(tries + 1):
        env = ({"FERRY_IO_FAULTS": FAULTS, "FERRY_IO_SEED": str(seed + attempt)} if attempt < tries
               else {"FERRY_IO_VOLATILE": "1"})
        log_path = data.rstrip("/") + ".log"
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        try:
            d = ferryd_factory(*args, data_dir=data, env=env)
            d.log_offset = offset
            return d, attempt
        except (RuntimeError, TimeoutError) as e:
            text = helpers._tail(log_path, offset, limit=1 << 20)
            assert not any(m in text for m in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")), text[-3000:]
            assert "exited with" in str(e), f"ferryd hung starting with faults {env}: {e}\n{text[-2000:]}"
    raise AssertionError("unreachable")


@pytest.mark.timeout(3600 if helpers.SOAK else 240)
@pytest.mark.parametrize("how", ["kill9", "power_cut", "io_faults"])
def test_no_confirmed_message_is_lost_or_doubled_when_ferryd_dies_during_compaction(ferryd_factory, tmp_path, how):
    """Every cycle, on a clean broker: a few more messages are published to `held` and to
    `keep`. Then on a broker that will die: all of `held` is taken and never acked
    (delivered), `keep` is never consumed (ready), and traffic flows through `flow`
    (published with confirms, consumed with acks) with 64 KiB segments, so the oldest segments
    are compacted again and again, until ferryd is killed (kill -9) or loses power
    (FERRY_IO_VOLATILE=1, SIGUSR2) at a random moment; io_faults also fails 1% of writes and
    fdatasyncs (EIO, ENOSPC, EMFILE, short writes) and 5% of unlinks and directory syncs
    before the power cut. After each restart every confirmed message of `held` and `keep` is
    there exactly once, every `held` one with redelivered (not checked under io_faults: a
    failed DELIVERED write is issue 9's defect 2, not compaction's); every confirmed, unacked
    message of `flow` is there. Compaction must have run more than once per planned cycle: the
    random run lengths (and, under io_faults, failed writes) sometimes leave too few old
    segments, so up to twice the planned cycles are run until it has."""
    cycles = 40 if helpers.SOAK else 3
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    data = str(tmp_path / "data")
    args = ("--segment-size", str(SEG))
    env = {"power_cut": {"FERRY_IO_VOLATILE": "1"},
           "io_faults": {"FERRY_IO_FAULTS": FAULTS, "FERRY_IO_SEED": str(seed)}}.get(how)
    d = helpers.start(ferryd_factory, data, *args)
    conn = connect(d)
    ch = conn.channel()
    for q in ("held", "keep", "flow"):
        ch.queue_declare(q, durable=True)
    conn.close()
    held, keep, flow = [], [], set()
    flow_acked = set()
    steps = faults = refused_starts = 0
    ran = 0
    for cycle in range(2 * cycles):  # more cycles (up to twice as many) if compaction ran too seldom
        if cycle >= cycles and steps > cycles:
            break
        ran += 1
        new_held = [f"h{cycle}-{i}" for i in range(5)]
        new_keep = [f"k{cycle}-{i}" for i in range(5)]
        helpers.publish_all(d, "", "held", new_held, size=rng.choice([100, 3000]))
        helpers.publish_all(d, "", "keep", new_keep, size=rng.choice([100, 3000]))
        held += new_held
        keep += new_keep
        assert d.stop() == 0
        if how == "io_faults":
            d, refused = start_under_faults(ferryd_factory, data, args, seed * 100 + cycle)
            refused_starts += refused
        else:
            d = helpers.start(ferryd_factory, data, *args, env=env)
        holder = Holder(d, "held", len(held))
        run = helpers.Run(d, tag=f"c{cycle}-")
        p = run.publisher("p", "", "flow", ["flow"], sizes=[1000, 4000], window=rng.choice([10, 100]))
        consumer = run.consumer("flow", ack_every=rng.choice([1, 25]))
        if how == "kill9":
            run.go(rng.uniform(0.5, 2.0), kill=d.kill9)
        else:
            run.go(rng.uniform(0.5, 2.0), kill=lambda: d.proc.send_signal(signal.SIGUSR2))
            helpers.wait_power_cut(d)
        assert not run.errors, f"cycle {cycle}: {run.errors}"
        try:
            holder.conn.close()
        except Exception:  # the broker is gone
            pass
        log = helpers.log_since_start(d)
        steps += log.count("store: compacted segment")
        faults += log.count("injected")
        flow.update(p.confirmed)
        flow_acked.update(consumer.acked)
        flow -= flow_acked
        d = helpers.start(ferryd_factory, data, *args)
        got = drain(d, "held", ack=False)
        assert sorted(got.ids) == sorted(held), (
            f"cycle {cycle} (seed {seed}): held: missing {sorted(set(held) - set(got.ids))[:5]}, "
            f"{got.duplicates()} duplicates, unexpected {sorted(set(got.ids) - set(held))[:5]}")
        no_flag = [m for m in held if not got.redelivered[m]]
        assert how == "io_faults" or not no_flag, (
            f"cycle {cycle} (seed {seed}): delivered, unacked messages without redelivered: {no_flag[:5]}")
        got = drain(d, "keep", ack=False)
        assert sorted(got.ids) == sorted(keep), (
            f"cycle {cycle} (seed {seed}): keep: missing {sorted(set(keep) - set(got.ids))[:5]}, "
            f"{got.duplicates()} duplicates")
        got = drain(d, "flow")
        missing = flow - set(got.ids)
        assert not missing, f"cycle {cycle} (seed {seed}): {len(missing)} confirmed, unacked flow messages lost"
        flow_acked.update(got.ids)
        flow = set()
    assert steps > cycles, f"only {steps} compaction steps in {ran} cycles: the test did not exercise compaction"
    helpers.report(f"compaction, {how}: {ran} cycles, {len(held)} held and {len(keep)} kept messages back "
                   f"every time, 0 lost, 0 doubled; {steps} compaction steps, {faults} injected-fault log lines "
                   f"(seed {seed})")
