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

`make test` runs the short versions; FERRY_SOAK=1 (`make soak`) the long ones: more
cycles, more publishers, bigger messages.
"""
import random
import signal
import time

import pytest

from . import helpers
from .helpers import SOAK, connect, drain

QUEUES = ["crash-q0", "crash-q1"]
FANOUT = "crash-fanout"


class Ledger:
    """What the test knows about every queue: ids confirmed and not acked since (these must
    be there after the next crash), ids acked (which may come back: duplicates), counts."""

    def __init__(self):
        self.expected = {q: set() for q in QUEUES}
        self.acked = {q: set() for q in QUEUES}
        self.confirmed = 0
        self.nacked = 0
        self.recovered = 0
        self.duplicates = 0
        self.redelivery_flag_missing = 0
        self.delivered_live = {q: set() for q in QUEUES}

    def after_run(self, run, consumer):
        for p in run.publishers:
            self.confirmed += len(p.confirmed)
            self.nacked += len(p.nacked)
            for q in p.queues:
                self.expected[q].update(p.confirmed)
        if consumer is not None:
            q = consumer.queue
            self.delivered_live[q].update(consumer.delivered)
            self.acked[q].update(consumer.acked)
            self.expected[q].difference_update(consumer.acked)

    def check_drain(self, cycle, q, got):
        """Every expected id must be in this drain of q; the drain acked them all."""
        ids = set(got.ids)
        missing = self.expected[q] - ids
        assert not missing, (
            f"cycle {cycle}: {len(missing)} confirmed, unacked messages lost from {q} "
            f"(e.g. {sorted(missing)[:5]}); {len(ids)} recovered")
        self.recovered += len(got.ids)
        self.duplicates += got.duplicates() + len(ids & self.acked[q])
        self.redelivery_flag_missing += sum(
            1 for m in ids & (self.delivered_live[q] - self.acked[q]) if not got.redelivered[m])
        self.expected[q] = set()
        self.acked[q].update(ids)
        self.delivered_live[q] = set()


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
                   f"{ledger.redelivery_flag_missing} redelivered without the redelivered flag (seed {seed})")
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
    messages. (FERRY_IO_VOLATILE simulates lost file data only: a created, renamed or
    deleted file always survives the cut, so a missing directory fsync cannot show here.)"""
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
                assert d.stop() == 0
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
