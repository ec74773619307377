#!/usr/bin/env python3
"""Does the loop thread stall on disk? (issue 9, defect 5 / must-show 3)

Measures the round trip of an unrelated client — a raw-socket connection that does
basic.get on an empty transient queue every --probe-interval ms and times each get-empty —
while the broker does disk work for someone else:

  drain     a deep persistent backlog (--count x --size, one durable queue; big enough that
            most bodies are paged out beyond --memory-budget) is drained by `ferry bench
            --drain` right after `sync; echo 3 > /proc/sys/vm/drop_caches` (needs root), so
            every paged body is read back from a cold disk
  declare   another connection declares --declares durable queues (pipelined --window at a
            time, each declare waits for its declare-ok), then deletes them the same way

Prints p50 / p99 / max / count of the probe's round trip per phase (and a quiet baseline),
and the load's own figures; --json prints one JSON object too. Bounded: every phase has a
timeout; the broker is started on a private port and data directory and killed at the end.

usage: latency_offloop.py --ferryd PATH --ferry PATH [--count N] [--size B]
                          [--memory-budget BYTES] [--declares N] [--window N]
                          [--only drain,declare] [--data-root DIR] [--json]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "malformed"))
import rawamqp as A  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def connect(port):
    c = A.Connection("127.0.0.1", port, timeout=30)
    c.handshake()
    c.open_channel(1)
    return c


class Probe(threading.Thread):
    """basic.get on an empty queue, one at a time, every `interval` seconds; records each
    round trip (seconds) into the current bucket."""

    def __init__(self, port, interval):
        super().__init__(daemon=True)
        self.c = connect(port)
        self.c.send(A.method_frame(1, A.QUEUE_DECLARE, A.queue_declare_args("latency-probe", auto_delete=False)))
        self.c.expect(A.QUEUE_DECLARE_OK)
        self.interval = interval
        self.samples = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error = None

    def take(self):
        with self.lock:
            out, self.samples = self.samples, []
        return out

    def run(self):
        get = A.method_frame(1, A.BASIC_GET, A.basic_get_args("latency-probe"))
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                self.c.send(get)
                self.c.expect(A.BASIC_GET_EMPTY, timeout=60)
                dt = time.perf_counter() - t0
                with self.lock:
                    self.samples.append(dt)
                time.sleep(self.interval)
        except Exception as e:  # reported by the main thread
            self.error = repr(e)


def stats(samples):
    if not samples:
        return {"n": 0}
    v = sorted(samples)

    def pct(p):
        return v[min(len(v) - 1, int(p * len(v)))] * 1000

    return {"n": len(v), "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2),
            "max_ms": round(v[-1] * 1000, 2), "over_20ms": sum(1 for x in v if x > 0.020),
            "over_100ms": sum(1 for x in v if x > 0.100)}


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def declare_flood(port, n, window, delete):
    """Declares (or deletes) durable queues offloop-0..n-1 on one connection, `window`
    pipelined at a time; returns the seconds it took."""
    c = connect(port)
    t0 = time.monotonic()
    i = 0
    while i < n:
        k = min(window, n - i)
        out = b""
        for j in range(i, i + k):
            if delete:
                out += A.method_frame(1, A.QUEUE_DELETE, A.queue_delete_args(f"offloop-{j}"))
            else:
                out += A.method_frame(1, A.QUEUE_DECLARE, A.queue_declare_args(f"offloop-{j}", durable=True))
        c.send(out)
        for j in range(k):
            c.expect(A.QUEUE_DELETE_OK if delete else A.QUEUE_DECLARE_OK, timeout=120)
        i += k
    dt = time.monotonic() - t0
    c.close()
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferryd", required=True)
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--count", type=int, default=2000000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--memory-budget", type=int, default=128 << 20)
    ap.add_argument("--declares", type=int, default=1000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--probe-interval", type=float, default=0.002)
    ap.add_argument("--only", default="drain,declare")
    ap.add_argument("--data-root", default="/tmp/ferry-latency")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    only = set(a.only.split(","))

    shutil.rmtree(a.data_root, ignore_errors=True)
    os.makedirs(a.data_root)
    port = free_port()
    log = open(os.path.join(a.data_root, "ferryd.log"), "wb")
    proc = subprocess.Popen([a.ferryd, "--port", str(port), "--http-port", "0", "--data-dir",
                             os.path.join(a.data_root, "data"), "--memory-budget", str(a.memory_budget)],
                            stdout=log, stderr=subprocess.STDOUT)
    result = {"ferryd": a.ferryd, "count": a.count, "size": a.size, "memory_budget": a.memory_budget,
              "declares": a.declares, "window": a.window}
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        uri = f"amqp://guest:guest@127.0.0.1:{port}/"
        probe = Probe(port, a.probe_interval)
        probe.start()
        time.sleep(2)
        result["idle"] = stats(probe.take())

        if "drain" in only:
            t0 = time.monotonic()
            subprocess.run([a.ferry, "bench", "--uri", uri, "--persistent", "--confirm", "1000",
                            "--size", str(a.size), "--count", str(a.count), "--no-consume",
                            "--queue-prefix", "deep-", "--quiet", "--timeout", "60"],
                           check=True, timeout=3600, stdout=subprocess.DEVNULL)
            result["fill_s"] = round(time.monotonic() - t0, 1)
            time.sleep(2)
            probe.take()
            drop_caches()
            probe.take()
            t0 = time.monotonic()
            out = subprocess.run([a.ferry, "bench", "--uri", uri, "--drain", "--producers", "0",
                                  "--ack-every", "100", "--queue-prefix", "deep-", "--json", "--quiet",
                                  "--timeout", "60"],
                                 check=True, timeout=3600, capture_output=True, text=True)
            result["drain_s"] = round(time.monotonic() - t0, 1)
            try:
                d = json.loads(out.stdout.strip().splitlines()[-1])
                result["drain_consumed"] = d.get("consumed", d.get("received"))
            except (ValueError, IndexError):
                pass
            result["drain"] = stats(probe.take())

        if "declare" in only:
            probe.take()
            result["declare_s"] = round(declare_flood(port, a.declares, a.window, False), 2)
            result["declare"] = stats(probe.take())
            result["delete_s"] = round(declare_flood(port, a.declares, a.window, True), 2)
            result["delete"] = stats(probe.take())

        probe.stop.set()
        probe.join(70)
        if probe.error:
            result["probe_error"] = probe.error
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    print(f"ferryd {a.ferryd}; probe: basic.get on an empty queue every {a.probe_interval * 1000:g} ms")
    for ph in ("idle", "drain", "declare", "delete"):
        if ph in result:
            s = result[ph]
            extra = ""
            if ph == "drain":
                extra = f"  ({a.count} x {a.size} B cold, drained in {result.get('drain_s')} s)"
            elif ph in ("declare", "delete"):
                extra = f"  ({a.declares} durable queues, window {a.window}, {result.get(ph + '_s')} s)"
            print(f"{ph:8} n={s['n']:6} p50={s.get('p50_ms', '-')} ms p99={s.get('p99_ms', '-')} ms "
                  f"max={s.get('max_ms', '-')} ms >20ms={s.get('over_20ms', '-')} >100ms={s.get('over_100ms', '-')}{extra}")
    if "probe_error" in result:
        print("probe error:", result["probe_error"])
    if a.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
