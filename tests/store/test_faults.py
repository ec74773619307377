"""Fault tests (issue 3, must-show 3): a damaged message log never stops the broker and
never costs more than the records it damaged.

A data directory is written once per module (300 persistent messages with self-checking
bodies, on 64 KiB segments), then each trial corrupts a fresh copy of it and starts ferryd
on the copy:

- the log truncated at a random byte offset X: every message whose record lies entirely
  before X is recovered (a record ends before the next message's body begins);
- a single flipped bit: at most one message is lost, and if the bit is inside a body, only
  that body's message; the bad record is logged;
- a torn tail cut on recovery is not in the way of later appends;
- an incompatible VERSION is refused (non-zero exit, the version named) and nothing in the
  data directory is rewritten.

Every recovered body must be intact: a checksum that lets a damaged body through fails too.
FERRY_SOAK=1 runs many more trials.
"""
import hashlib
import os
import random
import re
import shutil
import subprocess

import pytest

from . import helpers
from .helpers import SOAK, drain, segment_files

N = 300
SEG = ("--segment-size", "65536")
IDS = [f"fault-{i:06d}" for i in range(N)]
TRIALS = 40 if SOAK else 6
FLIPS = 100 if SOAK else 8


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A stopped data directory holding N persistent messages on queue q, and the position
    of every body in the log: [(id, segment index, start, end)], in log order."""
    data = str(tmp_path_factory.mktemp("fault-base") / "data")
    from ferryd import Ferryd  # tests/lib, on sys.path via tests/conftest.py
    d = Ferryd(data_dir=data, args=list(SEG)).start()
    try:
        conn = helpers.connect(d)
        conn.channel().queue_declare("q", durable=True)
        conn.close()
        helpers.publish_all(d, "", "q", IDS, sizes=[100, 300, 700, 1200, 2000], window=20)
    finally:
        d.stop_and_check()
    return data, locate_bodies(data)


def locate_bodies(data):
    where = []
    for index, (path, _) in enumerate(segment_files(data)):
        with open(path, "rb") as f:
            blob = f.read()
        for m in re.finditer(rb"(fault-\d{6}):(\d+):", blob):
            mid, size = m.group(1).decode(), int(m.group(2))
            end = m.start() + len(m.group(0)) + size
            if blob[m.start():end] == helpers.body_for(mid, size):
                where.append((mid, index, m.start(), end))
    found = [w[0] for w in where]
    assert sorted(set(found)) == IDS, (
        f"the fault tests find each body verbatim in the segments; found {len(set(found))} of {N} "
        f"in {len(segment_files(data))} segment files (bodies split or encoded?)")
    return where


def copy_of(pristine, tmp_path, name):
    data = str(tmp_path / name)
    shutil.copytree(pristine[0], data, ignore=shutil.ignore_patterns("ferryd.lock"))
    return data


def recover(ferryd_factory, data):
    """Start ferryd on a damaged copy; return (ids recovered in order, its log), stopped."""
    d = helpers.start(ferryd_factory, data, *SEG)
    got = drain(d, "q", ack=False)
    log = helpers.log_since_start(d)
    assert d.stop() == 0, f"unclean exit after recovering a damaged log:\n{log[-2000:]}"
    return got.ids, log


def truncate_log_at(data, where, x):
    """Cut the log (its segments end to end) at byte x: the segment holding x is truncated
    and every later one deleted. Returns the ids whose record is entirely before x."""
    segs = segment_files(data)
    pos = 0
    for index, (path, size) in enumerate(segs):
        if pos + size > x:
            os.truncate(path, x - pos)
            for later, _ in segs[index + 1:]:
                os.unlink(later)
            cut = (index, x - pos)
            break
        pos += size
    else:
        raise AssertionError(f"offset {x} beyond the log ({pos} bytes)")
    # A body's record ends before the next body starts (its header comes first).
    kept = []
    for (mid, seg, _, _), nxt in zip(where, where[1:] + [None]):
        if seg < cut[0]:
            kept.append(mid)
        elif seg == cut[0] and nxt is not None and nxt[1] == seg and nxt[2] <= cut[1]:
            kept.append(mid)
    return kept


def log_size(data):
    return sum(s for _, s in segment_files(data))


def test_pristine_log_recovers_every_message(ferryd_factory, tmp_path, pristine):
    ids, _ = recover(ferryd_factory, copy_of(pristine, tmp_path, "copy"))
    assert ids == IDS


@pytest.mark.parametrize("trial", range(TRIALS))
def test_log_truncated_at_a_random_offset_keeps_every_record_before_it(ferryd_factory, tmp_path, pristine, trial):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    data = copy_of(pristine, tmp_path, "copy")
    x = rng.randrange(log_size(data))
    kept = truncate_log_at(data, pristine[1], x)
    ids, log = recover(ferryd_factory, data)
    missing = [m for m in kept if m not in ids]
    assert not missing, (f"log cut at byte {x} of {log_size(pristine[0])} (seed {seed}): "
                         f"{len(missing)} intact messages lost, first {missing[:3]}\n{log[-1500:]}")
    assert ids == sorted(ids), "recovered messages out of order"


def test_log_truncated_inside_a_middle_segment_keeps_the_later_segments(ferryd_factory, tmp_path, pristine):
    """A middle segment that lost its tail (its later segments intact): the records before
    the cut and every record of the later segments are kept."""
    data = copy_of(pristine, tmp_path, "copy")
    segs = segment_files(data)
    assert len(segs) >= 3, f"expected several 64 KiB segments, got {len(segs)}"
    path, size = segs[1]
    x = random.randrange(size)
    os.truncate(path, x)
    where = pristine[1]
    later = [m for m, seg, _, _ in where if seg >= 2]
    earlier = [m for m, seg, _, _ in where if seg == 0]
    ids, log = recover(ferryd_factory, data)
    lost = [m for m in earlier + later if m not in ids]
    assert not lost, f"segment 1 cut at {x} of {size}: {len(lost)} messages of other segments lost\n{log[-1500:]}"


@pytest.mark.parametrize("trial", range(FLIPS))
def test_a_flipped_bit_loses_at_most_the_record_it_hits(ferryd_factory, tmp_path, pristine, trial):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    data = copy_of(pristine, tmp_path, "copy")
    segs = segment_files(data)
    x = rng.randrange(log_size(data))
    bit = rng.randrange(8)
    pos = 0
    for index, (path, size) in enumerate(segs):
        if pos + size > x:
            with open(path, "r+b") as f:
                f.seek(x - pos)
                b = f.read(1)[0]
                f.seek(x - pos)
                f.write(bytes([b ^ (1 << bit)]))
            hit = (index, x - pos)
            break
        pos += size
    in_body = [m for m, seg, s, e in pristine[1] if seg == hit[0] and s <= hit[1] < e]
    ids, log = recover(ferryd_factory, data)
    lost = [m for m in IDS if m not in ids]
    where = f"bit {bit} of byte {hit[1]} of segment {hit[0]} (seed {seed}), inside the body of {in_body or 'no message'}"
    assert len(lost) <= 1, f"{where}: {len(lost)} messages lost (first {lost[:5]})\n{log[-1500:]}"
    if in_body:
        assert lost == in_body or not lost, f"{where}: lost {lost} instead"
        if lost:
            assert helpers.bad_record_lines(log), f"{where}: the bad record is not logged\n{log[-1500:]}"
    assert ids == sorted(ids), "recovered messages out of order"


def test_several_flipped_bits_lose_at_most_one_record_each(ferryd_factory, tmp_path, pristine):
    data = copy_of(pristine, tmp_path, "copy")
    flips = 0
    for path, size in segment_files(data):
        with open(path, "r+b") as f:
            blob = bytearray(f.read())
            for _ in range(3):
                x = random.randrange(size)
                blob[x] ^= 1 << random.randrange(8)
                flips += 1
            f.seek(0)
            f.write(blob)
    ids, log = recover(ferryd_factory, data)
    lost = [m for m in IDS if m not in ids]
    assert len(lost) <= flips, f"{flips} flipped bits lost {len(lost)} messages\n{log[-1500:]}"


def test_corrupt_record_is_logged_with_its_position(ferryd_factory, tmp_path, pristine):
    data = copy_of(pristine, tmp_path, "copy")
    mid, seg, start, end = pristine[1][N // 2]
    path = segment_files(data)[seg][0]
    with open(path, "r+b") as f:
        f.seek((start + end) // 2)
        b = f.read(1)[0]
        f.seek((start + end) // 2)
        f.write(bytes([b ^ 0x10]))
    ids, log = recover(ferryd_factory, data)
    assert ids == [m for m in IDS if m != mid], "exactly the damaged message is lost, the rest kept in order"
    lines = helpers.bad_record_lines(log)
    assert lines, f"no log line about the corrupt record:\n{log[-1500:]}"
    name = os.path.basename(path)
    assert any(name[:-4] in ln or name in ln or re.search(r"\b\d{2,}\b", ln) for ln in lines), (
        f"the corrupt-record line does not say where it is: {lines}")


def test_a_torn_tail_is_cut_so_later_appends_are_recovered(ferryd_factory, tmp_path, pristine):
    """Garbage after the last record (a torn write) is cut on recovery; messages published
    after that must not end up behind the garbage, where the next recovery would stop."""
    data = copy_of(pristine, tmp_path, "copy")
    path, size = segment_files(data)[-1]
    with open(path, "ab") as f:
        f.write(os.urandom(777))
    d = helpers.start(ferryd_factory, data, *SEG)
    new = [f"fault-{i:06d}" for i in range(N, N + 100)]
    helpers.publish_all(d, "", "q", new, size=500)
    d.kill9()
    d = helpers.start(ferryd_factory, data, *SEG)
    assert drain(d, "q", ack=False).ids == IDS + new


def test_a_cut_in_the_middle_of_the_log_still_lets_later_appends_be_recovered(ferryd_factory, tmp_path, pristine):
    data = copy_of(pristine, tmp_path, "copy")
    x = log_size(data) * 2 // 3 + 5
    kept = truncate_log_at(data, pristine[1], x)
    d = helpers.start(ferryd_factory, data, *SEG)
    new = [f"fault-{i:06d}" for i in range(N, N + 100)]
    helpers.publish_all(d, "", "q", new, size=500)
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, data, *SEG)
    ids = drain(d, "q", ack=False).ids
    assert [m for m in kept + new if m not in ids] == []


def snapshot(data):
    """Every file of the data directory but the lock: path -> (size, mtime, sha256)."""
    out = {}
    for root, _, files in os.walk(data):
        for n in files:
            if n == "ferryd.lock":
                continue
            p = os.path.join(root, n)
            st = os.stat(p)
            with open(p, "rb") as f:
                out[os.path.relpath(p, data)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
    return out


@pytest.mark.parametrize("version", ["999", "0", "garbage"])
def test_a_data_dir_of_an_incompatible_version_is_refused_and_left_untouched(tmp_path, pristine, version):
    data = copy_of(pristine, tmp_path, "copy")
    vpath = os.path.join(data, "VERSION")
    assert os.path.isfile(vpath), "no VERSION file in the data directory"
    with open(vpath) as f:
        current = f.read()
    if version == "garbage":
        text = "this is not a ferry data directory\n"
        named = "this is not a ferry data directory"
    else:
        assert re.search(r"\d+", current), f"VERSION holds no version number: {current!r}"
        text = re.sub(r"\d+", version, current, count=1)
        named = text.strip()
    assert text != current
    with open(vpath, "w") as f:
        f.write(text)
    before = snapshot(data)
    binary = os.environ.get("FERRYD") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "ferryd")
    from ferryd import free_port
    try:
        p = subprocess.run([binary, "--port", str(free_port()), "--http-port", "0", "--data-dir", data, *SEG],
                           capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"ferryd started (ran 10 s) on a data dir with VERSION {text!r}") from None
    out = p.stdout + p.stderr
    assert p.returncode != 0, f"ferryd exited 0 on a data dir with VERSION {text!r}:\n{out[-1500:]}"
    assert "ERROR: AddressSanitizer" not in out and "runtime error:" not in out, out[-3000:]
    assert named in out, f"the refusal does not name the version ({text.strip()!r}):\n{out[-1500:]}"
    assert snapshot(data) == before, "the data directory was modified by a refused start"


def test_a_corrupt_definition_in_meta_log_never_deletes_the_message_log(ferryd_factory, tmp_path, pristine):
    """One flipped bit in the definitions (meta.log) must not turn into the loss of every
    intact message record of the queue it names: ferryd may refuse to start, or start
    without the queue, but it must not delete (reclaim) the segments that hold the
    queue's messages, or they are gone for good."""
    data = copy_of(pristine, tmp_path, "copy")
    meta = os.path.join(data, "meta.log")
    with open(meta, "r+b") as f:
        blob = bytearray(f.read())
        assert blob.find(b"\x01q") > 0, "queue q's definition not found in meta.log"
        at = blob.find(b"\x01q") + 1
        blob[at] ^= 0x01  # the queue's name: 'q' -> 'p'
        f.seek(0)
        f.write(blob)
    before = log_size(data)
    from ferryd import Ferryd
    d = Ferryd(data_dir=data, args=list(SEG))
    try:
        d.start()
    except RuntimeError:
        assert log_size(data) == before, "refused to start, but changed the message log"
        return
    try:
        helpers.connect(d).close()
    finally:
        assert d.stop() == 0
    after = log_size(data)
    assert after >= before, (
        f"a flipped bit in meta.log made ferryd delete the message log of queue q: {before} -> {after} bytes; "
        f"its log:\n{helpers.log_since_start(d)[-1500:]}")


def crc32c(data):
    """CRC-32C (Castagnoli), as the store frames its records."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def settle_record(qid, seq):
    """A well-formed SETTLE record (src/store.c: magic 'FERR' | crc32c | length | type | payload)."""
    payload = qid.to_bytes(4, "big") + seq.to_bytes(8, "big")
    framed = len(payload).to_bytes(4, "big") + bytes([2]) + payload
    return b"FERR" + crc32c(framed).to_bytes(4, "big") + framed


def test_a_record_inside_a_message_body_is_never_taken_for_a_real_one(ferryd_factory, tmp_path):
    """Bodies are the publishers' bytes: one that happens to (or is made to) contain a
    well-formed record must stay a body even when the record around it is damaged, or one
    flipped bit lets a publisher's bytes settle another queue's confirmed message."""
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = helpers.connect(d)
    ch = conn.channel()
    ch.queue_declare("victim", durable=True)  # the first queue of a new data dir
    ch.queue_declare("other", durable=True)
    ch.confirm_delivery()
    helpers.publish_confirmed(ch, "", "victim", ["v0", "v1", "v2"])
    body = b"PADDING-" + b"".join(settle_record(qid, seq) for qid in (1, 2, 3) for seq in range(5))
    ch.basic_publish("", "other", body, helpers.PERSISTENT)
    conn.close()
    assert d.stop() == 0
    for path, _ in segment_files(data):
        with open(path, "r+b") as f:
            blob = f.read()
            at = blob.find(body)
            if at >= 0:
                f.seek(at + 2)
                f.write(bytes([blob[at + 2] ^ 0x04]))  # damage the record that holds the body
                break
    else:
        raise AssertionError("the body is not stored verbatim in any segment")
    d = helpers.start(ferryd_factory, data)
    assert drain(d, "victim").ids == ["v0", "v1", "v2"], (
        "records embedded in a damaged message's body were applied as real records")
