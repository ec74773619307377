#!/usr/bin/env python3
"""Disk use of the message log with one message left unacknowledged (issue 9, must-show 4).

One persistent message is published to a durable queue and delivered to a consumer that
never acks it (prefetch 1, its connection stays open); then N GiB of persistent messages are
published (pipelined confirms) and consumed with acks through the same queue. The data
directory's size (allocated blocks) is sampled once a second, and once more after the
traffic, when the broker has had --settle seconds to reclaim. Without compaction the one
held message pins every segment after its own and the directory grows by everything that
passed through; with it, the log stays near a few segments.

The held message is then given back (its holder closes) and must come back with
redelivered set. The run appends a section to --out (bench/store/results.md); it never fails
on a number.

usage: compaction_bench.py [--ferryd PATH] [--gib 3] [--size 65536] [--segment-size N]
                           [--label TEXT] [--data-root DIR] [--out FILE]
"""
import argparse
import datetime
import os
import platform
import sys
import time

import pika
from pika import spec
from pika.adapters.select_connection import IOLoop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from store_bench import ROOT, Broker, du_mib, fresh  # noqa: E402

QUEUE = "compact-q"


def params(b):
    return pika.ConnectionParameters("127.0.0.1", b.port, credentials=pika.PlainCredentials("guest", "guest"),
                                     heartbeat=0, blocked_connection_timeout=300, socket_timeout=30)


def hold_one(b, size):
    """Publish one message and take it, unacked, on a connection that stays open."""
    c = pika.BlockingConnection(params(b))
    ch = c.channel()
    ch.queue_declare(QUEUE, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", QUEUE, b"held:" + os.urandom(size), pika.BasicProperties(delivery_mode=2))
    holder = pika.BlockingConnection(params(b))
    hch = holder.channel()
    hch.basic_qos(prefetch_count=1)
    got = []
    hch.basic_consume(QUEUE, lambda ch_, m, p, body: got.append(body[:5]))
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        holder.process_data_events(0.1)
    if got != [b"held:"]:
        raise RuntimeError(f"the holder did not get the held message: {got}")
    c.close()
    return holder


class Traffic:
    """One publisher (confirms, at most `window` unconfirmed) and one acking consumer on one
    I/O loop, until `total` bytes were published and consumed; samples the data dir size."""

    def __init__(self, b, total, size, window=64, sample=1.0, backlog=128):
        self.b, self.size, self.window, self.backlog = b, size, window, backlog
        self.count = (total + size - 1) // size
        self.body = os.urandom(size)
        self.sent = self.confirmed = self.consumed = 0
        self.pending = 0
        self.samples = []  # (seconds, MiB)
        self.t0 = time.monotonic()
        self.loop = IOLoop()
        self.sample_every = sample
        self.open = 2
        self.pub = pika.SelectConnection(params(b), on_open_callback=self._pub_open,
                                         on_close_callback=self._closed, custom_ioloop=self.loop)
        self.con = pika.SelectConnection(params(b), on_open_callback=self._con_open,
                                         on_close_callback=self._closed, custom_ioloop=self.loop)

    def _closed(self, c, reason):
        self.open -= 1
        if self.open == 0:
            self.loop.stop()

    def _pub_open(self, c):
        c.channel(on_open_callback=self._pub_channel)

    def _pub_channel(self, ch):
        self.pch = ch
        ch.confirm_delivery(ack_nack_callback=self._confirm, callback=lambda _: self._pump())

    def _pump(self):
        while self.sent < self.count and self.pending < self.window and self.sent - self.consumed < self.backlog:
            self.pch.basic_publish("", QUEUE, self.body, pika.BasicProperties(delivery_mode=2))
            self.sent += 1
            self.pending += 1

    def _confirm(self, frame):
        m = frame.method
        if isinstance(m, spec.Basic.Nack):
            raise RuntimeError("a publish was nacked")
        n = m.delivery_tag - self.confirmed if m.multiple else 1
        self.confirmed += n
        self.pending -= n
        self._pump()

    def _con_open(self, c):
        c.channel(on_open_callback=self._con_channel)

    def _con_channel(self, ch):
        ch.basic_qos(prefetch_count=256, callback=lambda _: ch.basic_consume(QUEUE, self._message))

    def _message(self, ch, method, props, body):
        self.consumed += 1
        if self.sent < self.count and self.sent - self.consumed < self.backlog // 2:
            self._pump()
        if self.consumed % 64 == 0 or self.consumed == self.count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if self.consumed == self.count:
            self.elapsed = time.monotonic() - self.t0
            self.pub.close()
            self.con.close()

    def _sample(self):
        self.samples.append((time.monotonic() - self.t0, du_mib(self.b.data_dir)))
        print(f"  {self.samples[-1][0]:6.1f} s  {self.consumed * self.size / (1 << 30):5.2f} GiB through  "
              f"data dir {self.samples[-1][1]:8.1f} MiB", file=sys.stderr)
        self.loop.call_later(self.sample_every, self._sample)

    def run(self):
        self.loop.call_later(0, self._sample)
        self.loop.start()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferryd", default=os.path.join(ROOT, "build", "ferryd"))
    ap.add_argument("--gib", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=65536, help="message body bytes")
    ap.add_argument("--segment-size", type=int, default=0, help="ferryd --segment-size (0: its default)")
    ap.add_argument("--backlog", type=int, default=128,
                    help="the publisher waits while this many messages are published and not yet consumed")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to wait after the traffic")
    ap.add_argument("--label", default="")
    ap.add_argument("--data-root", default="/tmp/ferry-bench-compact")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"))
    o = ap.parse_args()
    os.makedirs(o.data_root, exist_ok=True)
    args = ["--segment-size", str(o.segment_size)] if o.segment_size else []
    b = Broker(o.ferryd, fresh(o.data_root, "compact"), args)
    b.start()
    load = os.getloadavg()[0]
    holder = hold_one(b, o.size)
    t = Traffic(b, int(o.gib * (1 << 30)), o.size, backlog=o.backlog)
    t.run()
    peak = max(mib for _, mib in t.samples)
    deadline = time.monotonic() + o.settle
    while time.monotonic() < deadline:
        time.sleep(1)
    final = du_mib(b.data_dir)
    holder.close()
    c = pika.BlockingConnection(params(b))
    ch = c.channel()
    for _ in range(50):  # the holder's close reaches the broker a moment later
        m, _, body = ch.basic_get(QUEUE, auto_ack=True)
        if m:
            break
        time.sleep(0.1)
    back = "yes, redelivered" if m and body[:5] == b"held:" and m.redelivered else f"NO ({m})"
    c.close()
    rc = b.stop()
    fs = os.popen(f"findmnt -n -o FSTYPE,SOURCE -T {o.data_root}").read().strip()
    through = t.consumed * o.size / (1 << 30)
    print(f"{o.label}: {through:.2f} GiB through, data dir peak {peak:.1f} MiB, final {final:.1f} MiB, "
          f"held message back: {back}", file=sys.stderr)
    lines = [
        f"\n## Disk use with one message left unacked: {o.label or o.ferryd}\n",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        f"`bench/store/compaction_bench.py --gib {o.gib:g} --size {o.size} --backlog {o.backlog}"
        f"{' --segment-size ' + str(o.segment_size) if o.segment_size else ''}` with {o.ferryd}; "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the start, {platform.system()} {platform.release()}, "
        f"data on {fs or o.data_root}. One persistent message delivered and never acked on its own "
        f"connection; then {t.consumed} persistent {o.size}-byte messages published with confirms and consumed "
        f"with acks through the same durable queue, at most {o.backlog} of them published and not yet "
        f"consumed at a time (so live data stays near {o.backlog * o.size >> 20} MiB).\n",
        "| measure | value |",
        "|---|---:|",
        f"| passed through and acked | {through:.2f} GiB in {t.elapsed:.0f} s |",
        f"| data directory, peak while running (sampled each second) | {peak:.1f} MiB |",
        f"| data directory {o.settle:g} s after the traffic | {final:.1f} MiB |",
        f"| the held message given back | {back} |",
        f"| clean stop exit status | {rc} |",
        "",
        "Samples (seconds, MiB): " + ", ".join(f"{s:.0f}:{mib:.0f}" for s, mib in t.samples[::max(1, len(t.samples) // 40)]),
        "",
    ]
    with open(o.out, "a") as f:
        f.write("\n".join(lines))
    print(f"appended to {o.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
