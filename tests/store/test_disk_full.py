"""A full disk (issue 3, must-show 3): on a 4 MiB tmpfs, publishing persistent messages with
confirms until space runs out gets the publishers told (basic.nack, or connection.blocked)
without a crash or a corrupt log; once space returns (a filler file deleted, or the queue
drained and its segments reclaimed), the same publisher's messages are confirmed again; and
after a restart every confirmed message is there.

Also the disk alarm: with less free space than --disk-free-limit, publishing connections get
connection.blocked, and connection.unblocked when space is freed."""
import os
import time

from pika import exceptions

from . import helpers
from .helpers import connect, drain

SEG = "262144"
BODY = 8000


def write_filler(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def declare_queue(d, q="q"):
    conn = connect(d)
    conn.channel().queue_declare(q, durable=True)
    conn.close()


def fill_then_free(d, free_space, max_seconds=60):
    """Publish (one connection, confirms, window 20) until the publisher is told the disk is
    full (a nack or connection.blocked) or stalls; then call free_space() and go on until 50
    more messages are confirmed. Returns the publisher and how many were confirmed when the
    space was freed (or raises with what happened)."""
    run = helpers.Run(d)
    p = run.publisher("full", "", "q", ["q"], sizes=[BODY], window=20)
    state = {"phase": "filling", "last": 0, "since": time.monotonic(), "at_free": None}

    def until():
        now = time.monotonic()
        if len(p.confirmed) != state["last"]:
            state["last"], state["since"] = len(p.confirmed), now
        if state["phase"] == "filling":
            told = p.nacked or p.blocked
            stalled = now - state["since"] > 3.0
            if told or stalled:
                state["told"] = bool(told)
                state["phase"], state["at_free"] = "freed", len(p.confirmed)
                state["nacked_at_free"] = len(p.nacked)
                free_space()
            return False
        return len(p.confirmed) >= state["at_free"] + 50

    run.go(max_seconds, until=until)
    assert not run.errors, run.errors
    return p, state


def check_fill_and_recovery(d, p, state, ferryd_factory, args, acked=()):
    assert d.running(), f"ferryd died when the disk filled:\n{helpers.log_since_start(d)[-3000:]}"
    assert state.get("told"), (
        f"the disk filled ({len(p.confirmed)} confirmed) but publishes stalled for 3 s with neither "
        f"a nack nor connection.blocked: publishers were not told")
    assert state["at_free"] is not None
    assert len(p.confirmed) >= state["at_free"] + 50, (
        f"after space was freed only {len(p.confirmed) - state['at_free']} more messages were confirmed "
        f"(nacked {len(p.nacked)}, blocked {p.blocked}, unblocked {p.unblocked})")
    helpers.report(f"disk full: {state['at_free']} confirmed before the disk filled, "
                   f"{state['nacked_at_free']} nacked, connection.blocked {p.blocked} time(s), "
                   f"unblocked {p.unblocked}; {len(p.confirmed) - state['at_free']} confirmed after space returned")
    # Every confirmed message not acked survives a restart, intact; the log has no bad record.
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir, *args)
    log = helpers.log_since_start(d)
    bad = helpers.bad_record_lines(log)
    assert not bad, f"the log was damaged by the full disk: {bad[:5]}"
    got = set(drain(d, "q").ids)
    acked = set(acked)
    lost = [m for m in p.confirmed if m not in got and m not in acked]
    assert not lost, f"{len(lost)} confirmed messages lost after the disk filled (first {lost[:3]})"
    return d


def test_a_full_disk_tells_publishers_and_service_resumes_when_a_file_is_deleted(
        small_disk, ferryd_factory):
    filler = str(small_disk / "filler")
    write_filler(filler, 1 << 20)
    args = ("--segment-size", SEG, "--disk-free-limit", "1")
    d = helpers.start(ferryd_factory, str(small_disk / "data"), *args)
    declare_queue(d)
    p, state = fill_then_free(d, lambda: os.unlink(filler))
    check_fill_and_recovery(d, p, state, ferryd_factory, args)


def test_a_full_disk_tells_publishers_and_service_resumes_when_the_queue_is_drained(
        small_disk, ferryd_factory):
    """The space comes back from the log itself: acked segments are deleted even though
    the disk was full when the acks arrived."""
    args = ("--segment-size", SEG, "--disk-free-limit", "1")
    d = helpers.start(ferryd_factory, str(small_disk / "data"), *args)
    declare_queue(d)
    drained = []

    def drain_queue():
        # A consumer on its own connection; the publisher's connection stays as it is.
        drained.extend(drain(d, "q").ids)

    p, state = fill_then_free(d, drain_queue)
    assert len(drained) >= state["at_free"]
    check_fill_and_recovery(d, p, state, ferryd_factory, args, acked=drained)


def test_publishers_are_blocked_below_the_disk_free_limit_and_unblocked_when_space_returns(
        small_disk, ferryd_factory):
    filler = str(small_disk / "filler")
    write_filler(filler, 3 << 20)
    limit = 2 << 20
    assert free_bytes(str(small_disk)) < limit
    args = ("--disk-free-limit", str(limit), "--segment-size", "65536")
    d = helpers.start(ferryd_factory, str(small_disk / "data"), *args)
    declare_queue(d)
    run = helpers.Run(d)
    p = run.publisher("blocked", "", "q", ["q"], sizes=[1000], window=10)
    state = {"freed": False}

    def until():
        if p.blocked and not state["freed"]:
            state["freed"] = True
            state["confirmed_when_blocked"] = len(p.confirmed)
            os.unlink(filler)
        return p.unblocked and len(p.confirmed) >= state.get("confirmed_when_blocked", 0) + 20

    run.go(30, until=until)
    assert p.blocked, "no connection.blocked with free disk below --disk-free-limit"
    assert p.unblocked, "no connection.unblocked after the space was freed"
    assert len(p.confirmed) >= state["confirmed_when_blocked"] + 20
    assert d.running()


def fill_completely(path):
    """Write a file until the filesystem is full (ENOSPC); the filler is left in place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_durable_queue_declared_on_a_full_disk_is_refused_or_kept_with_its_messages(
        small_disk, ferryd_factory):
    """A queue.declare-ok for a durable queue is a promise like a confirm: if its definition
    cannot be written, the declare must fail; if it succeeded, the queue (and the messages
    confirmed on it once space returned) must survive a restart."""
    args = ("--disk-free-limit", "1")
    d = helpers.start(ferryd_factory, str(small_disk / "data"), *args)
    filler = str(small_disk / "filler")
    fill_completely(filler)
    conn = connect(d)
    try:
        conn.channel().queue_declare("declared-when-full", durable=True)
        declared = True
    except exceptions.ChannelClosedByBroker:
        declared = False
    finally:
        if conn.is_open:
            conn.close()
    os.unlink(filler)
    if not declared:
        return
    ids = [f"m{i}" for i in range(10)]
    helpers.publish_all(d, "", "declared-when-full", ids, timeout=20)
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir, *args)
    assert drain(d, "declared-when-full").ids == ids, "declare-ok and confirms were given, then lost"


def test_ferryd_starts_on_a_full_disk_with_its_definitions_and_messages(small_disk, ferryd_factory):
    """A restart on a completely full disk must not be refused: meta.log is rewritten
    (compacted) at every start, and when that rewrite cannot be written the meta.log that was
    read is kept and appended to. (Before: 'cannot write .../meta.log: No space left on
    device', exit 1 — the broker could not come back until a person freed space.)"""
    args = ("--disk-free-limit", "1")
    d = helpers.start(ferryd_factory, str(small_disk / "data"), *args)
    # Definitions worth several pages: the rewrite needs more than the one page that
    # removing the clean-shutdown marker at start gives back.
    names = [f"kept-{i}-" + "n" * 200 for i in range(60)]
    conn = connect(d)
    ch = conn.channel()
    for name in names:
        ch.queue_declare(name, durable=True)
    conn.close()
    declare_queue(d, "kept")
    ids = [f"m{i}" for i in range(20)]
    helpers.publish_all(d, "", "kept", ids, timeout=20)
    assert d.stop() == 0
    filler = str(small_disk / "filler")
    fill_completely(filler)
    assert free_bytes(str(small_disk)) < 4096
    d = helpers.start(ferryd_factory, d.data_dir, *args)
    log = helpers.log_since_start(d)
    assert "cannot rewrite" in log and "appending to it as it is" in log, log[-2000:]
    assert drain(d, "kept").ids == ids
    # Space returns: a definition appended to the kept meta.log survives the next restart.
    os.unlink(filler)
    declare_queue(d, "later")
    assert d.stop() == 0
    d = helpers.start(ferryd_factory, d.data_dir, *args)
    conn = connect(d)
    ch = conn.channel()
    assert ch.queue_declare("kept", passive=True).method.message_count == 0
    assert ch.queue_declare("later", passive=True).method.message_count == 0
    for name in names:
        ch.queue_declare(name, passive=True)
    conn.close()
    assert not helpers.bad_record_lines(helpers.log_since_start(d))
