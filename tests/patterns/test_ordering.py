"""Ordering per entity (issue 4, must-show 3): 100 entities x 100 sequence-numbered events
through an x-consistent-hash exchange to 4 partition queues with x-single-active-consumer,
2 consumer processes per partition, consumers killed (SIGKILL) and restarted mid-run.

Delivery is at-least-once, so an event a crashed consumer processed but had not acked is
processed again by its successor. What must hold for every entity: an event is never
processed before every earlier event of the same entity was processed, and every event is
processed. (With 4 partitions and SAC this holds although 8 consumers run.)"""
import collections
import os
import signal
import subprocess
import sys
import time

import pika
import pytest

ENTITIES, EVENTS, PARTITIONS = 100, 100, 4
HERE = os.path.dirname(__file__)


def start_consumer(url, queue, log):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "ordering_consumer.py"), url, queue, log],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout.readline().strip() == b"ready"
    return p


def lines(log):
    with open(log) as f:
        return [l.split() for l in f.read().splitlines() if l]


def wait_lines(log, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = len(lines(log)) if os.path.exists(log) else 0
        if got >= n:
            return got
        time.sleep(0.02)
    return got


def test_events_of_every_entity_are_processed_in_sequence_order_across_consumer_crashes(broker, name, tmp_path):
    log = str(tmp_path / "processed.log")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    x = name("events")
    ch.exchange_declare(x, "x-consistent-hash")
    queues = []
    for i in range(PARTITIONS):
        q = name(f"partition-{i}")
        ch.queue_declare(q, arguments={"x-single-active-consumer": True})
        ch.queue_bind(q, x, "1")
        queues.append(q)
    ch.confirm_delivery()
    for seq in range(EVENTS):
        for e in range(ENTITIES):
            ch.basic_publish(x, f"entity-{e}", f"entity-{e} {seq}".encode())
    # The backlog is there before the consumers start, so a crash always hits a consumer
    # holding a full prefetch window of unacked events.
    consumers = {(q, r): start_consumer(broker.url, q, log) for q in queues for r in ("a", "b")}
    kills = 0
    total = ENTITIES * EVENTS
    # Crash the "a" consumers a quarter of the way in, then the "b" ones at 60%; each is
    # restarted at once (as a supervisor would), so both roles get killed while active.
    for role, at in (("a", total // 4), ("b", total * 6 // 10)):
        wait_lines(log, at)
        for q in queues:
            consumers[(q, role)].send_signal(signal.SIGKILL)
            consumers[(q, role)].wait()
            kills += 1
            consumers[(q, role)] = start_consumer(broker.url, q, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = {(l[0], int(l[1])) for l in lines(log)}
        if len(done) == total:
            break
        time.sleep(0.1)
    for p in consumers.values():
        p.kill()
        p.wait()
    processed = lines(log)
    seen = collections.defaultdict(set)
    violations = []
    for entity, seq, _ in processed:
        seq = int(seq)
        if any(s not in seen[entity] for s in range(seq)):
            violations.append((entity, seq))
        seen[entity].add(seq)
    duplicates = len(processed) - sum(len(s) for s in seen.values())
    redelivered = sum(1 for l in processed if l[2] == "1")
    print(f"\nordering: {len(processed)} processed ({duplicates} re-processed after {kills} crashes, "
          f"{redelivered} flagged redelivered), {len(violations)} out of order")
    assert all(seen[f"entity-{e}"] == set(range(EVENTS)) for e in range(ENTITIES)), "events lost"
    assert violations == []
    for q in queues:
        ch.queue_delete(q)
    ch.exchange_delete(x)
    conn.close()
