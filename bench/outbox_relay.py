#!/usr/bin/python3
"""Outbox relay throughput: events/s from PostgreSQL into ferryd (issue 12, must-show 3).

Each run: a fresh database on a private PostgreSQL 15 (tests/app/brokers.py) with
`ferry outbox schema`, N pending events (16 aggregates, 128-byte JSON bodies) inserted in one
transaction, a durable queue on a private ferryd (build/ferryd, the optimised build); then
`ferry outbox relay` starts and the clock runs until the last row is marked sent (every event
was confirmed by ferryd, persistent, into a durable queue). The rate is N / that time, so it
includes the relay's start (connect, LISTEN) — a few ms.

Repeats the run R times (default 3) per batch size and reports the median and the spread
(min-max). Writes its own section of bench/results/latest.md (between the outbox-relay
markers; the rest of the file is left as it is).

  /usr/bin/python3 bench/outbox_relay.py [--events N] [--runs R] [--batch 500,2000] [--no-write]
"""
import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "app"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from brokers import Postgres  # noqa: E402
from ferryd import Ferryd  # noqa: E402

FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")
RESULTS = os.path.join(ROOT, "bench", "results", "latest.md")
BEGIN, END = "<!-- outbox-relay:begin -->", "<!-- outbox-relay:end -->"


def one_run(pg, broker_url, n, batch, queue):
    import pika
    import psycopg2
    from psycopg2.extras import execute_values
    url = pg.create_db("bench")
    subprocess.run([FERRY, "outbox", "schema", "--db", url], check=True, capture_output=True)
    c = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = c.channel()
    ch.queue_declare(queue, durable=True)
    ch.queue_purge(queue)
    c.close()
    body = b'{"order_id": 123456, "customer": "ada", "sku": "widget", "qty": 2, "note": "' + b"x" * 60 + b'"}'
    db = psycopg2.connect(url)
    with db, db.cursor() as cur:
        execute_values(cur, "INSERT INTO ferry_outbox (event_id, aggregate_id, routing_key, headers, content_type, body) "
                            "VALUES %s",
                       [(f"ev-{i}", f"agg-{i % 16}", queue, '{"type": "order.placed"}', "application/json", body)
                        for i in range(n)], page_size=5000)
    t0 = time.monotonic()
    relay = subprocess.Popen([FERRY, "outbox", "relay", "--db", url, "--uri", broker_url, "--batch", str(batch)],
                             stderr=subprocess.PIPE, text=True)
    cur = db.cursor()
    while True:
        cur.execute("SELECT count(*) FROM ferry_outbox WHERE sent_at IS NULL")
        left = cur.fetchone()[0]
        db.commit()
        if left == 0:
            break
        if relay.poll() is not None:
            raise RuntimeError(f"relay exited: {relay.stderr.read()}")
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    relay.terminate()
    relay.wait(20)
    db.close()
    c = pika.BlockingConnection(pika.URLParameters(broker_url))
    got = c.channel().queue_declare(queue, passive=True).method.message_count
    c.close()
    assert got == n, f"queue has {got} messages, expected {n}"
    return n / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", default="500,2000")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    batches = [int(x) for x in a.batch.split(",")]
    pg = Postgres().start()
    d = Ferryd(binary=os.path.join(ROOT, "build", "ferryd"), data_dir=tempfile.mkdtemp(prefix="bench-outbox-"))
    d.start()
    results = {}
    try:
        for b in batches:
            rates = []
            for r in range(a.runs):
                rate = one_run(pg, d.url, a.events, b, f"bench-outbox-{b}")
                rates.append(rate)
                print(f"batch {b} run {r + 1}: {rate:,.0f} events/s", flush=True)
            results[b] = rates
    finally:
        d.stop()
        pg.stop()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[0]
    lines = [BEGIN, "## Outbox relay: PostgreSQL → ferryd (`bench/outbox_relay.py`)", "",
             f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC at commit {commit}; machine shared with other "
             f"work (2 cores, load average {load} at the end). Each run: {a.events:,} pending rows in `ferry_outbox` "
             "(16 aggregates, 128-byte JSON bodies) on a private PostgreSQL 15 (fsync off, as in the tests), "
             "drained by `build/ferry outbox relay` into a durable queue on `build/ferryd` with publisher "
             "confirms (persistent messages, one confirm round trip per batch), until the last row was marked "
             f"sent. {a.runs} runs per batch size: median and spread (min–max).", "",
             "| batch (rows per round) | events/s median | spread (min–max) | runs |", "|---:|---:|---:|---:|"]
    for b, rates in results.items():
        lines.append(f"| {b} | {statistics.median(rates):,.0f} | {min(rates):,.0f} – {max(rates):,.0f} | "
                     f"{', '.join(f'{x:,.0f}' for x in rates)} |")
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    if a.no_write:
        return
    text = open(RESULTS).read() if os.path.exists(RESULTS) else ""
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
