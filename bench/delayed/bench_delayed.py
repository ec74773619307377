#!/usr/bin/env python3
"""Benchmark: N delayed messages pending in an x-delayed-message exchange (issue 4,
must-show 4). Reports ferryd's RSS with everything pending and the lateness of delivery
(receive time minus due time) at p50 / p99 / max when they fall due.

Each message carries its absolute due time (header "due", epoch ms) and x-delay = due -
now, so lateness is measured against the time the publisher asked for. Due times are
spread evenly over --window seconds starting --lead seconds after the run starts, long
enough for all messages to be published (and pending) before the first falls due.
Lateness includes the consumer's own lag (one pika consumer, auto-ack).

    bench/delayed/bench_delayed.py                # 1,000,000 messages, starts build/ferryd
    bench/delayed/bench_delayed.py -n 100000 --url amqp://guest:guest@127.0.0.1:5672/
"""
import argparse
import os
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


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--lead", type=float, default=None, help="seconds until the first message is due")
    ap.add_argument("--window", type=float, default=None,
                    help="seconds over which messages fall due (default n / 5000: one pika consumer keeps up)")
    ap.add_argument("--body", type=int, default=64)
    ap.add_argument("--url", help="use a running broker instead of starting build/ferryd")
    a = ap.parse_args()
    a.window = a.window if a.window is not None else max(5.0, a.n / 5000)
    lead = a.lead if a.lead is not None else 20 + a.n / 7000  # pika publishes ~9k/s
    proc, pid = None, None
    url = a.url
    if not url:
        port = free_port()
        data = tempfile.mkdtemp(prefix="ferry-bench-")
        proc = subprocess.Popen([os.path.join(ROOT, "build", "ferryd"), "--port", str(port), "--data-dir", data,
                                 "--http-port", "0"], stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", port, 10, proc)
        url, pid = f"amqp://guest:guest@127.0.0.1:{port}/", proc.pid
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.exchange_declare("bench.delayed", "x-delayed-message", arguments={"x-delayed-type": "direct"})
        ch.queue_declare("bench.due")
        ch.queue_purge("bench.due")
        ch.queue_bind("bench.due", "bench.delayed", "due")
        rss0 = rss_kb(pid) if pid else 0
        start = time.time()
        first_due = start + lead
        body = b"x" * a.body
        for i in range(a.n):
            due = first_due + a.window * i / a.n
            delay = int((due - time.time()) * 1000)
            ch.basic_publish("bench.delayed", "due", body,
                             pika.BasicProperties(headers={"x-delay": delay, "due": int(due * 1000)}))
            if i % 20000 == 0:
                conn.process_data_events(time_limit=0)
        conn.process_data_events(time_limit=0.5)
        published = time.time()
        if published >= first_due:
            print(f"warning: publishing took {published - start:.1f}s, past the first due time; raise --lead")
        rss_pending = rss_kb(pid) if pid else 0
        print(f"published {a.n} delayed messages in {published - start:.1f}s "
              f"({a.n / (published - start):.0f}/s); ferryd RSS {rss0 / 1024:.0f} MiB idle, "
              f"{rss_pending / 1024:.0f} MiB with all pending "
              f"({(rss_pending - rss0) * 1024 / a.n:.0f} bytes per pending message)")
        late = []

        def on(c, m, p, b):
            late.append(time.time() * 1000 - p.headers["due"])

        ch.basic_consume("bench.due", on, auto_ack=True)
        deadline = first_due + a.window + 60
        while len(late) < a.n and time.time() < deadline:
            conn.process_data_events(time_limit=0.1)
        late.sort()
        print(f"delivered {len(late)}/{a.n}; lateness from due time: p50 {pct(late, 0.5):.1f} ms, "
              f"p99 {pct(late, 0.99):.1f} ms, max {late[-1]:.1f} ms, min {late[0]:.1f} ms")
        conn.close()
    finally:
        if proc:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
