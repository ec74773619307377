#!/usr/bin/env python3
"""Benchmark: broker-held cron with many schedules (issue 12). Starts build/ferryd on a
temporary data directory and reports:

  - how fast schedules are created (publishes with x-ferry-cron, the last one confirmed, so
    every schedule is on disk), ferryd's RSS and meta.log's size with them all;
  - firing: --fire schedules with the same 6-field expression (every --every seconds) route
    their copies at the same tick into one durable queue; for --ticks ticks, how many copies
    each tick routed and how long after the tick the queue held them all (depth polled every
    5 ms), while --idle other schedules (@yearly) wait in the same heap;
  - a restart (SIGTERM, start): time until the AMQP port answers with every schedule
    re-armed (meta.log is read and compacted).

    bench/cron/bench_cron.py                       # 100,000 idle + 10,000 firing every 5 s
    bench/cron/bench_cron.py --idle 1000000 --fire 20000
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import pika

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from ferryd import free_port, wait_port  # noqa: E402


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, port, data):
    p = subprocess.Popen([binary, "--port", str(port), "--data-dir", data, "--http-port", "0"],
                         stderr=open(data + ".log", "ab"))
    t0 = time.time()
    wait_port("127.0.0.1", port, 120, p)
    return p, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=100_000, help="schedules that do not fire (@yearly)")
    ap.add_argument("--fire", type=int, default=10_000, help="schedules that fire at the same ticks")
    ap.add_argument("--every", type=int, default=5, help="seconds between the firing schedules' ticks")
    ap.add_argument("--ticks", type=int, default=3)
    a = ap.parse_args()
    binary = os.path.join(ROOT, "build", "ferryd")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="ferry-bench-cron-")
    data = os.path.join(tmp, "data")
    proc, _ = start(binary, port, data)
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.exchange_declare("timers", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("ticks", durable=True)
    ch.queue_bind("ticks", "timers", "t")
    t0 = time.time()
    n = 0
    for i in range(a.idle):
        ch.basic_publish("timers", "idle", b"x" * 64, pika.BasicProperties(
            message_id=f"idle-{i}", delivery_mode=2, headers={"x-ferry-cron": "@yearly"}))
        n += 1
    # the firing ones start at a tick far enough ahead that all are in place
    for i in range(a.fire):
        ch.basic_publish("timers", "t", b"y" * 64, pika.BasicProperties(
            message_id=f"fire-{i}", delivery_mode=2, headers={"x-ferry-cron": f"*/{a.every} * * * * *"}))
        n += 1
    ch.confirm_delivery()  # one confirmed publish after all: every schedule before it is durable
    ch.basic_publish("timers", "idle", b"", pika.BasicProperties(message_id="last", delivery_mode=2,
                                                                 headers={"x-ferry-cron": "@yearly"}))
    n += 1
    ready = time.time()  # every schedule exists: ticks after this carry all of them
    created = ready - t0
    meta = os.path.getsize(os.path.join(data, "meta.log"))
    print(f"created {n:,} schedules in {created:.1f} s ({n / created:,.0f}/s, pika, one connection); "
          f"RSS {rss_kb(proc.pid) / 1024:.0f} MiB; meta.log {meta / 1e6:.1f} MB")
    ch.queue_purge("ticks")
    # Each tick: how long after it until all --fire copies are in the queue (depth polled
    # every 5 ms with a passive declare; no consumer), then the queue is emptied again.
    routed_ms, counts = [], []
    for _ in range(a.ticks):
        tick = (int(time.time()) // a.every + 1) * a.every
        while time.time() < tick - 0.2:
            time.sleep(0.05)
        depth, done = 0, None
        while time.time() < tick + 10:
            depth = ch.queue_declare("ticks", passive=True).method.message_count
            if depth >= a.fire:
                done = time.time()
                break
            time.sleep(0.005)
        counts.append(depth)
        routed_ms.append((done - tick) * 1000 if done else float("inf"))
        time.sleep(0.3)
        extra = ch.queue_declare("ticks", passive=True).method.message_count - depth
        counts[-1] += extra  # copies beyond --fire would be a double fire
        ch.queue_purge("ticks")
    print(f"firing: {a.fire:,} schedules every {a.every} s beside {a.idle:,} idle ones: copies per tick {counts}; "
          f"all routed (persistent, durable queue) {', '.join(f'{x:.0f}' for x in routed_ms)} ms after the tick")
    c.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    proc, took = start(binary, port, data)
    print(f"restart with {n:,} schedules: AMQP port open after {took:.2f} s (meta.log read, compacted, "
          f"every schedule re-armed); RSS {rss_kb(proc.pid) / 1024:.0f} MiB")
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
