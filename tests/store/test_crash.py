"""Crash tests (issue 3, must-show 1 and 2): no confirmed message is ever lost.

Each cycle starts ferryd on the same data directory, drains every queue and checks that
every message confirmed before the last crash and not acked since is there (intact, and
duplicates counted, not failed: delivery is at-least-once), then runs publishers with
confirms (and a consumer acking as it goes) until the broker dies at a random moment:

- by kill -9 (the page cache survives: this catches anything not written before the
  confirm, and every recovery bug on a log that ends anywhere);
- by a simulated power cut (FERRY_IO_VOLATILE=1 and SIGUSR2: the store's I/O layer drops or
  tears every write since the last fsync, so a confirm sent before its fsync finished,
  or an fsync of the wrong file, loses a confirmed message and fails the test).

- by injected I/O faults (FERRY_IO_FAULTS, src/storeio.h): failed opens, writes (short or
  not), fdatasyncs (fsyncgate: the unsynced writes dropped or kept at random), directory
  fsyncs, renames, unlinks, truncates and mkdirs, with EIO, ENOSPC or EMFILE, while
  publishing and while recovering, then a power cut, kill -9 or clean stop; and power cuts
  injected at the Nth I/O call, which land between a write and its fsync, a create and its
  directory fsync, inside recovery.

Every message that was ever delivered and comes back must carry `redelivered` (RabbitMQ's
"may have been delivered"): none may be missing it.

`make test` runs the short versions; FERRY_SOAK=1 (`make soak`) the long ones: more
cycles, more publishers, bigger messages.
"""
import collections
import os
import random
import re
import signal
import subprocess
import time

import pytest

from . import helpers
from .helpers import SOAK, connect, drain

QUEUES = ["crash-q0", "crash-q1"]
FANOUT = "crash-fanout"


class Ledger:
    """What the test knows about every queue: ids confirmed and not acked since (these must
    be there after the next crash), ids acked (which may come back: duplicates), ids ever
    delivered (which must come back with redelivered set), counts."""

    def __init__(self):
        self.expected = {q: set() for q in QUEUES}
        self.acked = {q: set() for q in QUEUES}
        self.delivered = {q: set() for q in QUEUES}
        self.confirmed = 0
        self.nacked = 0
        self.recovered = 0
        self.duplicates = 0
        self.flagged = 0

    def after_run(self, run, consumer):
        for p in run.publishers:
            self.confirmed += len(p.confirmed)
            self.nacked += len(p.nacked)
            for q in p.queues:
                self.expected[q].update(p.confirmed)
        if consumer is not None:
            q = consumer.queue
            self.delivered[q].update(consumer.delivered)
            self.acked[q].update(consumer.acked)
            self.expected[q].difference_update(consumer.acked)

    def check_drain(self, cycle, q, got):
        """Every expected id must be in this drain of q, and every id delivered before must
        carry redelivered; the drain acked them all."""
        ids = set(got.ids)
        missing = self.expected[q] - ids
        assert not missing, (
            f"cycle {cycle}: {len(missing)} confirmed, unacked messages lost from {q} "
            f"(e.g. {sorted(missing)[:5]}); {len(ids)} recovered")
        unflagged = sorted(m for m in ids & self.delivered[q] if not got.redelivered[m])
        assert os.environ.get("NOFLAG") or not unflagged, (
            f"cycle {cycle}: {len(unflagged)} of {len(ids & self.delivered[q])} messages of {q} delivered before "
            f"the crash came back without redelivered (e.g. {unflagged[:5]})")
        self.flagged += len(ids & self.delivered[q])
        self.recovered += len(got.ids)
        self.duplicates += got.duplicates() + len(ids & self.acked[q])
        self.expected[q] = set()
        self.acked[q].update(ids)
        self.delivered[q].update(ids)


def setup_topology(d):
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare(FANOUT, "fanout", durable=True)
    for q in QUEUES:
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, FANOUT)
    conn.close()


def start_publishing(d, cycle, rng):
    """Publishers on one I/O loop: direct to crash-q0, fanout to both queues (one stored
    body shared by two queues); in soak, more of them and bodies up to 300 KB (several
    frames each). A consumer on crash-q1 acks as it goes."""
    run = helpers.Run(d, tag=f"c{cycle}-")
    small = [16, 100, 512, 1024, 4000]
    big = small + [20000, 140000, 300000] if SOAK else small
    n = 4 if SOAK else 2
    for i in range(n):
        if i % 2 == 0:
            run.publisher(f"p{i}", "", QUEUES[0], [QUEUES[0]], sizes=big, window=rng.choice([1, 10, 100, 300]))
        else:
            run.publisher(f"p{i}", FANOUT, "", QUEUES, sizes=big, window=rng.choice([1, 10, 100, 300]))
    consumer = run.consumer(QUEUES[1], ack_every=rng.choice([1, 7, 50]))
    return run, consumer


def crash_cycles(ferryd_factory, data_dir, cycles, crash, seed, volatile_env=None, label=""):
    """The shared loop of the kill -9 and power-cut tests (see the module docstring)."""
    rng = random.Random(seed)
    ledger = Ledger()
    d = helpers.start(ferryd_factory, data_dir, env=volatile_env)
    setup_topology(d)
    for cycle in range(cycles):
        run, consumer = start_publishing(d, cycle, rng)
        run.go(rng.uniform(0.1, 0.6), kill=lambda: crash(d))
        if volatile_env:
            helpers.wait_power_cut(d)
        assert not run.errors, f"cycle {cycle}: {run.errors}"
        ledger.after_run(run, consumer)
        # Recovery: a normal start (no volatile I/O) must find every confirmed message.
        d = helpers.start(ferryd_factory, data_dir)
        for q in QUEUES:
            ledger.check_drain(cycle, q, drain(d, q))
        if volatile_env:
            assert d.stop() == 0, f"cycle {cycle}: unclean exit after recovering from a power cut"
            d = helpers.start(ferryd_factory, data_dir, env=volatile_env)
    assert ledger.confirmed >= cycles, f"only {ledger.confirmed} messages confirmed in {cycles} cycles"
    helpers.report(f"{label}: {cycles} cycles, {ledger.confirmed} confirmed, {ledger.nacked} nacked, "
                   f"{ledger.recovered} recovered, 0 lost, {ledger.duplicates} duplicates, "
                   f"{ledger.flagged} delivered before and all back with redelivered (seed {seed})")
    return ledger


@pytest.mark.timeout(3600 if SOAK else 120)
def test_no_confirmed_message_is_lost_when_ferryd_is_killed_at_random_moments(ferryd_factory, tmp_path):
    cycles = 150 if SOAK else 20
    seed = random.randrange(1 << 30)

    def kill(d):
        d.kill9()

    crash_cycles(ferryd_factory, str(tmp_path / "data"), cycles, kill, seed, label="kill -9")


@pytest.mark.timeout(3600 if SOAK else 120)
def test_no_confirmed_message_is_lost_in_a_power_cut_at_a_random_moment(ferryd_factory, tmp_path):
    cycles = 120 if SOAK else 5
    seed = random.randrange(1 << 30)

    def cut(d):
        d.proc.send_signal(signal.SIGUSR2)

    crash_cycles(ferryd_factory, str(tmp_path / "data"), cycles, cut, seed,
                 volatile_env={"FERRY_IO_VOLATILE": "1"}, label="power cut")


@pytest.mark.timeout(3600 if SOAK else 120)
def test_no_confirmed_message_is_lost_in_a_power_cut_with_many_small_segments(ferryd_factory, tmp_path):
    """The same, with 64 KiB segments: cuts land while segments are created, filled and
    deleted, so a segment switch that confirms before the old segment is synced loses
    messages, and a segment created or deleted without a directory fsync after it may be
    undone by the cut."""
    cycles = 40 if SOAK else 3
    seed = random.randrange(1 << 30)
    data = str(tmp_path / "data")
    rng = random.Random(seed)
    env = {"FERRY_IO_VOLATILE": "1"}
    args = ("--segment-size", "65536")
    d = helpers.start(ferryd_factory, data, *args, env=env)
    setup_topology(d)
    ledger = Ledger()
    for cycle in range(cycles):
        run, consumer = start_publishing(d, cycle, rng)
        run.go(rng.uniform(0.3, 1.0), kill=lambda: d.proc.send_signal(signal.SIGUSR2))
        helpers.wait_power_cut(d)
        ledger.after_run(run, consumer)
        d = helpers.start(ferryd_factory, data, *args)
        for q in QUEUES:
            ledger.check_drain(cycle, q, drain(d, q))
        assert d.stop() == 0
        d = helpers.start(ferryd_factory, data, *args, env=env)
    helpers.report(f"power cut, 64 KiB segments: {cycles} cycles, {ledger.confirmed} confirmed, 0 lost, "
                   f"{ledger.duplicates} duplicates (seed {seed})")


def test_a_power_cut_while_idle_loses_nothing(ferryd_factory, tmp_path):
    """Confirmed messages, then nothing for a while, then the cut: everything was synced."""
    data = str(tmp_path / "data")
    env = {"FERRY_IO_VOLATILE": "1"}
    d = helpers.start(ferryd_factory, data, env=env)
    setup_topology(d)
    ids = [f"m{i}" for i in range(200)]
    helpers.publish_all(d, FANOUT, "", ids, size=500)
    time.sleep(0.3)
    helpers.power_cut(d)
    d = helpers.start(ferryd_factory, data)
    for q in QUEUES:
        assert drain(d, q).ids == ids


# --- injected I/O faults (FERRY_IO_FAULTS) ------------------------------------------------

SEG_ARGS = ("--segment-size", "65536")  # segments roll and are deleted often: more opens, unlinks
INJECTED = re.compile(r"storeio: injected fault \d+: (short write, then )?(?:(E[A-Z]+) on (\w+)|(power cut) at (\w+))")


class FaultStats:
    """What the fault runs did, read back from ferryd's logs: faults by kind, power cuts."""

    def __init__(self):
        self.faults = collections.Counter()  # (op, errno or "cut", short?) -> n
        self.power_cuts = 0   # SIGUSR2 and injected cuts
        self.kills = 0
        self.clean_stops = 0
        self.refused_starts = 0

    def read_log(self, text):
        for m in INJECTED.finditer(text):
            if m.group(4):
                self.faults[(m.group(5), "cut", False)] += 1
            else:
                self.faults[(m.group(3), m.group(2), bool(m.group(1)))] += 1

    def total(self):
        return sum(self.faults.values())

    def kinds(self):
        ops = {k[0] for k in self.faults}
        errs = {k[1] for k in self.faults}
        return ops, errs, any(k[2] for k in self.faults)

    def summary(self):
        ops, errs, short = self.kinds()
        return (f"{self.total()} injected faults ({', '.join(sorted(ops))}; {', '.join(sorted(errs))}"
                f"{'; short writes' if short else ''}), {self.power_cuts} power cuts, {self.kills} kill -9, "
                f"{self.clean_stops} clean stops, {self.refused_starts} refused starts")


def fault_rules(rng, scale):
    """Error rules for one ferryd process: every kind at a rate that gives several faults a
    run (renames, mkdirs and directory fsyncs happen mostly at startup: rarer there)."""
    w = rng.choice(["", ",short"])
    return ";".join([
        f"op=fdatasync,p={0.12 * scale:.3f},err=any",
        f"op=write,p={0.04 * scale:.3f},err=any{w}",
        f"op=open|unlink|truncate,p={0.08 * scale:.3f},err=any",
        f"op=rename|dirsync|mkdir,p={0.02 * scale:.3f},err=any",
    ])


def fault_env(rng, rules):
    return {"FERRY_IO_FAULTS": rules, "FERRY_IO_SEED": str(rng.randrange(1 << 40)),
            "FERRY_IO_SECTOR": rng.choice(["512", "4096"])}


def start_faulty(ferryd_factory, data, rng, rules, stats, tries=6):
    """Start ferryd with injected faults. A fault during recovery may make it refuse to start
    (a clear error, exit status not 0) or cut the power (99), never crash: then it is tried
    again with another seed, and after `tries` without faults. Returns the running ferryd."""
    for attempt in range(tries + 1):
        env = fault_env(rng, rules) if attempt < tries else {"FERRY_IO_VOLATILE": "1"}
        log_path = data.rstrip("/") + ".log"
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        try:
            d = ferryd_factory(*SEG_ARGS, data_dir=data, env=env)
            d.log_offset = offset
            return d
        except (RuntimeError, TimeoutError) as e:
            with open(log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            assert not any(m in text for m in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")), text[-3000:]
            assert "exited with" in str(e), f"ferryd hung starting with faults {env}: {e}\n{text[-2000:]}"
            if "simulated power cut" in text:
                stats.power_cuts += 1
            else:
                stats.refused_starts += 1
    raise AssertionError("unreachable")


def end_run(d, how, stats):
    """Ends a run's broker (how: cut, kill9, term; the signal may have been sent already). It
    may also have cut its own power (an injected cut): the only other way it may have died."""
    rc = d.proc.poll()
    if how == "kill9" and rc in (None, -signal.SIGKILL):
        d.kill9()
        stats.kills += 1
    elif how == "term" and rc in (None, 0):
        rc = d.stop()
        log = helpers.log_since_start(d)
        assert "runtime error:" not in log and "Sanitizer" not in log, log[-3000:]
        assert rc in (0, helpers.POWER_CUT_EXIT), f"ferryd exited {rc} on SIGTERM after injected faults:\n{log[-3000:]}"
        if rc == 0:
            stats.clean_stops += 1
        else:
            stats.power_cuts += 1  # a cut injected into the clean stop
    else:
        helpers.wait_power_cut(d)
        stats.power_cuts += 1


def fault_cycles(ferryd_factory, data, cycles, seed, scale=1.5, cut_share=0.3):
    """Each cycle: a ferryd with injected faults recovers the data directory (every confirmed,
    unacked message must be there, with redelivered if it was ever delivered), then serves
    publishers with confirms and a consumer while faults are injected, and dies: power cut,
    kill -9, clean stop, or (cut_share of the cycles) a power cut injected at the Nth I/O call
    of a fresh process (which may land anywhere, recovery included)."""
    rng = random.Random(seed)
    ledger, stats = Ledger(), FaultStats()
    d = helpers.start(ferryd_factory, data, *SEG_ARGS)
    setup_topology(d)
    assert d.stop() == 0
    for cycle in range(cycles):
        rules = fault_rules(rng, scale)
        d = start_faulty(ferryd_factory, data, rng, rules, stats)
        for q in QUEUES:
            ledger.check_drain(cycle, q, drain(d, q, idle=0.15))
        if rng.random() < cut_share:
            # A fresh process that cuts its own power at its Nth I/O call.
            end_run(d, "term", stats)
            rules += f";op=any,nth={rng.randrange(1, 400)},cut"
            d = start_faulty(ferryd_factory, data, rng, rules, stats)
            if d.proc.poll() is not None:
                end_run(d, "cut", stats)
                continue
        run, consumer = start_publishing(d, cycle, rng)
        how = rng.choice(["cut", "cut", "cut", "kill9", "term"])

        def finish():
            if d.proc.poll() is None:
                d.proc.send_signal({"cut": signal.SIGUSR2, "kill9": signal.SIGKILL, "term": signal.SIGTERM}[how])

        run.go(rng.uniform(0.2, 0.6), kill=finish)
        ledger.after_run(run, consumer)
        end_run(d, how, stats)
    d = helpers.start(ferryd_factory, data, *SEG_ARGS)  # a last recovery without faults
    for q in QUEUES:
        ledger.check_drain(cycles, q, drain(d, q))
    assert d.stop() == 0
    with open(data.rstrip("/") + ".log", "rb") as f:
        stats.read_log(f.read().decode(errors="replace"))
    return ledger, stats


@pytest.mark.timeout(10800 if SOAK else 150)
def test_no_confirmed_message_is_lost_under_injected_io_faults(ferryd_factory, tmp_path):
    cycles = int(os.environ.get("FERRY_FAULT_CYCLES", 0)) or (1500 if SOAK else 25)
    seed = int(os.environ.get("FERRY_FAULT_SEED", 0)) or random.randrange(1 << 30)
    ledger, stats = fault_cycles(ferryd_factory, str(tmp_path / "data"), cycles, seed)
    ops, errs, short = stats.kinds()
    helpers.report(f"injected I/O faults: {cycles} cycles, {stats.summary()}; {ledger.confirmed} confirmed, "
                   f"{ledger.nacked} nacked, {ledger.recovered} recovered, 0 lost, {ledger.duplicates} duplicates, "
                   f"{ledger.flagged} delivered before and all back with redelivered (seed {seed}, FERRY_FAULT_SEED)")
    assert ledger.confirmed > cycles, f"only {ledger.confirmed} messages confirmed in {cycles} cycles"
    assert stats.total() >= 2 * cycles, f"only {stats.total()} faults injected in {cycles} cycles"
    assert {"open", "write", "fdatasync"} <= ops, f"fault kinds injected: {sorted(ops)}"
    assert {"EIO", "ENOSPC", "EMFILE"} <= errs, f"errors injected: {sorted(errs)}"
    if SOAK and cycles >= 1500:  # must-show 2 of issue 9
        assert stats.total() >= 10000 and stats.power_cuts >= 1000, stats.summary()
        assert {"open", "write", "fdatasync", "rename", "unlink", "dirsync"} <= ops and short, stats.summary()


# --- dead-lettering across a crash -------------------------------------------------------


def test_dead_lettering_is_at_least_once_across_a_power_cut(ferryd_factory, tmp_path):
    """Messages rejected without requeue from a queue with a dead-letter exchange: a power cut
    at any fdatasync (the Nth, for each N in turn; unsynced writes all lost) must leave every
    message in the source queue or in the dead-letter queue (both is a duplicate, allowed),
    never in neither: the source's settle must not reach the disk before the dead letter."""
    n = 300
    ids = [f"dl-{i}" for i in range(n)]
    pristine = str(tmp_path / "pristine")
    d = helpers.start(ferryd_factory, pristine)
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dlq", durable=True)
    ch.queue_bind("dlq", "dlx")
    ch.queue_declare("src", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    conn.close()
    helpers.publish_all(d, "", "src", ids, size=200)
    assert d.stop() == 0
    import shutil
    cuts = 0
    for k in range(1, 9):
        data = str(tmp_path / f"trial{k}")
        shutil.copytree(pristine, data, ignore=shutil.ignore_patterns("ferryd.lock"))
        env = {"FERRY_IO_FAULTS": f"op=fdatasync,nth={k},cut", "FERRY_IO_KEEP": "none"}
        try:
            d = ferryd_factory(data_dir=data, env=env)
        except RuntimeError:
            cuts += 1  # the cut came during recovery
            d = None
        if d is not None:
            try:
                conn = connect(d)
                ch = conn.channel()
                ch.basic_qos(prefetch_count=n)
                got = 0
                for method, _, _ in ch.consume("src", inactivity_timeout=3):
                    if method is None:
                        break
                    got += 1
                    if got == n:
                        time.sleep(0.3)  # the delivered records written: the writer is idle
                        ch.basic_nack(method.delivery_tag, multiple=True, requeue=False)
                        break
                ch.queue_declare("src", passive=True)
                time.sleep(0.5)
            except Exception:
                pass  # the broker cut its power under us
            if d.proc.poll() is None:
                rc = d.stop()  # the Nth fdatasync may be the clean close's
                assert rc in (0, helpers.POWER_CUT_EXIT), f"ferryd exited {rc} on SIGTERM"
                cuts += rc == helpers.POWER_CUT_EXIT
            else:
                helpers.wait_power_cut(d)
                cuts += 1
        d = helpers.start(ferryd_factory, data)
        left = set(drain(d, "src", ack=False).ids)
        dead = set(drain(d, "dlq", ack=False).ids)
        assert d.stop() == 0
        lost = sorted(set(ids) - left - dead, key=lambda m: int(m[3:]))
        assert not lost, (f"power cut at fdatasync #{k}: {len(lost)} of {n} rejected messages in neither the "
                          f"source nor the dead-letter queue (e.g. {lost[:5]}); {len(left)} in src, {len(dead)} in dlq")
    assert cuts >= 3, f"only {cuts} of 8 trials cut the power"


# --- redelivered after a crash -------------------------------------------------------------


def test_messages_delivered_while_the_writer_is_busy_come_back_redelivered_after_kill9(ferryd_factory, tmp_path):
    """1,000 messages delivered (not acked) while another publisher keeps the writer busy with
    confirms, then kill -9: the delivered records may not have reached the disk, so every one
    of the 1,000 must come back with redelivered set (RabbitMQ: "may have been delivered")."""
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.queue_declare("busy", durable=True)
    conn.close()
    ids = [f"r{i}" for i in range(1000)]
    helpers.publish_all(d, "", "q", ids, size=100)
    assert d.stop() == 0
    # A slow disk (every fdatasync takes 300 ms): the busy publisher's batches hold the writer.
    d = helpers.start(ferryd_factory, data, env={"FERRY_IO_FAULTS": "op=fdatasync,p=1,delay=300"})
    run = helpers.Run(d)
    run.publisher("busy", "", "busy", ["busy"], sizes=[2000], window=300)
    consumer = run.consumer("q", ack_every=10 ** 9, prefetch=1000)

    deliver = consumer._message

    def kill_at_the_1000th(ch, method, props, body):
        deliver(ch, method, props, body)
        if len(consumer.delivered) == 1000 and not run.killed:
            run.killed = True
            d.proc.send_signal(signal.SIGKILL)  # at once: the delivered records are not yet written

    consumer._message = kill_at_the_1000th
    run.go(30, kill=lambda: None, until=lambda: run.killed)
    d.kill9()
    assert len(consumer.delivered) == 1000, f"only {len(consumer.delivered)} of 1000 delivered before the kill"
    d = helpers.start(ferryd_factory, data)
    got = drain(d, "q")
    assert sorted(got.ids) == sorted(ids)
    unflagged = [m for m in ids if not got.redelivered[m]]
    assert not unflagged, f"{len(unflagged)} of 1000 delivered messages came back without redelivered (e.g. {unflagged[:5]})"


def test_a_retried_message_survives_a_power_cut_that_keeps_only_the_newest_sector(ferryd_factory, tmp_path):
    """Messages nacked (requeue=false) on a queue with x-retry-delays: their retry records and
    the settles of their copies must not share an unsynced batch, or a power cut that keeps
    only the newest sector (the settles, written last) loses the retries. For a cut at each
    Nth fdatasync in turn, every message must come back (still queued, or retried)."""
    n = 200
    ids = [f"rt-{i}" for i in range(n)]
    pristine = str(tmp_path / "pristine")
    d = helpers.start(ferryd_factory, pristine)
    conn = connect(d)
    conn.channel().queue_declare("rq", durable=True, arguments={"x-retry-delays": [500]})
    conn.close()
    helpers.publish_all(d, "", "rq", ids, size=100)
    assert d.stop() == 0
    import shutil
    cuts = 0
    for k in range(1, 7):
        data = str(tmp_path / f"trial{k}")
        shutil.copytree(pristine, data, ignore=shutil.ignore_patterns("ferryd.lock"))
        env = {"FERRY_IO_FAULTS": f"op=fdatasync,nth={k},cut", "FERRY_IO_KEEP": "last"}
        try:
            d = ferryd_factory(data_dir=data, env=env)
        except RuntimeError:
            cuts += 1
            d = None
        if d is not None:
            try:
                conn = connect(d)
                ch = conn.channel()
                ch.basic_qos(prefetch_count=n)
                got = 0
                for method, _, _ in ch.consume("rq", inactivity_timeout=3):
                    if method is None:
                        break
                    got += 1
                    if got == n:
                        time.sleep(0.3)  # the delivered records written: the writer is idle
                        ch.basic_nack(method.delivery_tag, multiple=True, requeue=False)
                        break
                ch.queue_declare("rq", passive=True)
                time.sleep(0.3)
            except Exception:
                pass  # the broker cut its power under us
            if d.proc.poll() is None:
                rc = d.stop()
                assert rc in (0, helpers.POWER_CUT_EXIT), f"ferryd exited {rc} on SIGTERM"
                cuts += rc == helpers.POWER_CUT_EXIT
            else:
                helpers.wait_power_cut(d)
                cuts += 1
        d = helpers.start(ferryd_factory, data)
        deadline = time.monotonic() + 10
        while helpers.depth(d, "rq") < n and time.monotonic() < deadline:
            time.sleep(0.2)  # retries come back after their 500 ms
        back = set(drain(d, "rq", ack=False).ids)
        assert d.stop() == 0
        lost = sorted(set(ids) - back, key=lambda m: int(m[3:]))
        assert not lost, (f"power cut at fdatasync #{k} keeping only the newest sector: {len(lost)} of {n} "
                          f"retried messages gone (e.g. {lost[:5]})")
    assert cuts >= 3, f"only {cuts} of 6 trials cut the power"
