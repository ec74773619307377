#!/usr/bin/env python3
"""Benchmarks of ferryd's durable store (issue 3, must-show 4). Not timed tests: they
measure and write bench/store/results.md, they never fail on a number.

  throughput  persistent messages + publisher confirms + manual acks through one durable
              queue (ferry bench --persistent --confirm 1000 --ack-every 100 --size 1024),
              1 and 4 producers, with the transient in-memory figure beside it
  recovery    1,000,000 queued persistent 1 KiB messages, kill -9, restart: time until the
              "recovered N messages" log line and until the port accepts; then a drain
              checks that every message is there
  rss         a backlog of 10,000,000 persistent 1 KiB messages (--no-consume): VmRSS and
              VmHWM of ferryd, before and after a restart, then the rate of a drain of the
              whole backlog, most of it paged out to the log (10 GiB of disk: off by default)

usage: store_bench.py [--only throughput,recovery,rss] [--recovery-count N] [--rss-count N]
                      [--duration S] [--ferryd PATH] [--ferry PATH] [--data-root DIR]
                      [--out FILE] [--append] [--built-from TEXT] [--rss-args 'FLAGS']
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Broker:
    """One ferryd on a data directory, stderr to DATA.log; start() returns the time the port
    took to accept and, if it logs one, the recovery line."""

    def __init__(self, binary, data_dir, args=()):
        self.binary, self.data_dir, self.args = binary, data_dir, list(args)
        self.log_path = data_dir.rstrip("/") + ".log"
        self.proc = None

    def start(self, timeout=3600):
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = free_port()
        self.uri = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--http-port", "0",
                                      "--data-dir", self.data_dir] + self.args,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        recovered_at, line = None, None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferryd exited {self.proc.returncode}; see {self.log_path}")
            if recovered_at is None:
                line = self._recovery_line(offset)
                if line:
                    recovered_at = time.monotonic() - t0
            if port_open(self.port):
                port_at = time.monotonic() - t0
                break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"ferryd not listening after {timeout}s")
            time.sleep(0.01)
        if recovered_at is None:
            line = self._recovery_line(offset)
            recovered_at = port_at if line else None
        return {"port_s": port_at, "recovered_line_s": recovered_at, "line": line}

    def _recovery_line(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            for ln in f.read().decode(errors="replace").splitlines():
                if "recovered" in ln:
                    return ln.strip()
        return None

    def memory(self):
        """VmRSS and VmHWM of the broker, in MiB."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for ln in f:
                if ln.startswith(("VmRSS:", "VmHWM:")):
                    k, v = ln.split(":")
                    out[k] = int(v.split()[0]) / 1024.0
        return out

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.kill9()
            return "timeout"


def bench(ferry, uri, *args, timeout=7200):
    p = subprocess.run([ferry, "bench", "--uri", uri, "--json", "--quiet", *args],
                       capture_output=True, text=True, timeout=timeout)
    try:
        r = json.loads(p.stdout)
    except ValueError:
        raise RuntimeError(f"ferry bench {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    r["exit"] = p.returncode
    return r


def du_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for n in files:
            try:
                total += os.stat(os.path.join(root, n)).st_blocks * 512
            except OSError:
                pass
    return total / (1 << 20)


def fresh(root, name):
    d = os.path.join(root, name)
    shutil.rmtree(d, ignore_errors=True)
    if os.path.exists(d + ".log"):
        os.unlink(d + ".log")
    return d


def run_throughput(o, out):
    rows = []
    for label, extra in [("persistent, 1 producer", ["--persistent", "--producers", "1"]),
                         ("persistent, 4 producers", ["--persistent", "--producers", "4", "--consumers", "4", "--queues", "4"]),
                         ("transient (no disk), 1 producer", ["--producers", "1"])]:
        b = Broker(o.ferryd, fresh(o.data_root, "throughput"))
        b.start()
        try:
            r = bench(o.ferry, b.uri, "--confirm", "1000", "--ack-every", "100", "--size", "1024",
                      "--duration", str(o.duration), *extra)
        finally:
            b.stop()
        rows.append((label, r))
        print(f"throughput {label}: {r['publish_rate']:.0f} msg/s published+confirmed, "
              f"{r['consume_rate']:.0f} msg/s consumed, confirm p50 {r['confirm_latency_ms']['p50']:.2f} ms",
              file=sys.stderr)
    out.append("## Persistent + confirms throughput\n")
    out.append(f"`ferry bench --confirm 1000 --ack-every 100 --size 1024 --duration {o.duration}` against "
               "`build/ferryd` on a fresh data directory; persistent rows add `--persistent` (durable "
               "queues, delivery-mode 2, every confirm after fsync).\n")
    out.append("| run | published+confirmed msg/s | consumed msg/s | confirm p50 ms | confirm p99 ms | "
               "e2e p50 ms | e2e p99 ms | lost |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        c, lat = r["confirm_latency_ms"] or {}, r["latency_ms"] or {}
        out.append(f"| {label} | {r['publish_rate']:.0f} | {r['consume_rate']:.0f} | {c.get('p50', 0):.2f} | "
                   f"{c.get('p99', 0):.2f} | {lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | "
                   f"{r['published'] - r['consumed'] if r['ok'] else r['error']} |")
    out.append("")


def fill(o, b, count):
    t = time.monotonic()
    r = bench(o.ferry, b.uri, "--persistent", "--confirm", "1000", "--size", "1024", "--count", str(count),
              "--no-consume", "--queue-prefix", "backlog-", "--timeout", "60")
    if r["confirmed"] != count:
        raise RuntimeError(f"only {r['confirmed']} of {count} confirmed: {r.get('error')}")
    return r, time.monotonic() - t


def run_recovery(o, out):
    n = o.recovery_count
    b = Broker(o.ferryd, fresh(o.data_root, "recovery"))
    b.start()
    r, fill_s = fill(o, b, n)
    mem_before = b.memory()
    b.kill9()
    disk = du_mib(b.data_dir)
    t = b.start()
    mem_after = b.memory()
    try:
        d = bench(o.ferry, b.uri, "--drain", "--queue-prefix", "backlog-", "--ack-every", "100",
                  "--timeout", "60")
    except RuntimeError as e:  # the queue itself was lost: report it, do not hide it
        d = {"consumed": f"none ({str(e).splitlines()[-1][:120]})"}
    b.stop()
    m = re.search(r"recovered (\d+) messages", t["line"] or "")
    print(f"recovery of {n}: port after {t['port_s']:.2f} s, line {t['line']!r}, drained {d['consumed']}",
          file=sys.stderr)
    out.append(f"## Recovery of {n:,} queued persistent messages\n")
    out.append(f"Filled with `ferry bench --persistent --confirm 1000 --size 1024 --count {n} --no-consume` "
               f"({r['publish_rate']:.0f} msg/s, {fill_s:.1f} s), then `kill -9`, then a restart timed from "
               "exec to the log line and to the first accepted connection; then `ferry bench --drain`.\n")
    out.append("| measure | value |")
    out.append("|---|---:|")
    out.append(f"| data directory after the fill | {disk:.0f} MiB |")
    out.append(f"| restart → 'recovered' log line | {t['recovered_line_s'] or float('nan'):.2f} s |")
    out.append(f"| restart → port accepts | {t['port_s']:.2f} s |")
    out.append(f"| messages the log line reports | {m.group(1) if m else 'no such line'} |")
    out.append(f"| messages drained after recovery | {d['consumed']} of {n} |")
    out.append(f"| VmRSS before the kill / after recovery | {mem_before.get('VmRSS', 0):.0f} / "
               f"{mem_after.get('VmRSS', 0):.0f} MiB |")
    out.append(f"\nThe recovery line: `{t['line']}`\n")
    shutil.rmtree(b.data_dir, ignore_errors=True)


def run_rss(o, out):
    n = o.rss_count
    b = Broker(o.ferryd, fresh(o.data_root, "rss"), o.rss_args.split())
    b.start()
    r, fill_s = fill(o, b, n)
    time.sleep(2)  # the pager finishes its last passes
    mem = b.memory()
    rc = b.stop()
    disk = du_mib(b.data_dir)
    t = b.start()
    time.sleep(2)
    mem2 = b.memory()
    d = bench(o.ferry, b.uri, "--drain", "--queue-prefix", "backlog-", "--ack-every", "100",
              "--prefetch", "2000", "--timeout", "60")
    mem3 = b.memory()
    b.stop()
    print(f"rss with {n} backlog: {mem}, after restart {mem2}, drain {d.get('consume_rate')} msg/s, "
          f"after it {mem3}", file=sys.stderr)
    out.append(f"## RSS with a {n:,}-message backlog\n")
    out.append(f"ferryd {o.rss_args or '(default flags)'}; "
               f"`ferry bench --persistent --confirm 1000 --size 1024 --count {n} --no-consume` "
               f"({r['publish_rate']:.0f} msg/s, {fill_s:.0f} s); VmRSS/VmHWM from /proc/PID/status.\n")
    out.append("| measure | value |")
    out.append("|---|---:|")
    out.append(f"| VmRSS with the backlog | {mem.get('VmRSS', 0):.0f} MiB |")
    out.append(f"| VmHWM (peak) while filling | {mem.get('VmHWM', 0):.0f} MiB |")
    out.append(f"| data directory | {disk:.0f} MiB |")
    out.append(f"| clean stop exit status | {rc} |")
    out.append(f"| restart → port accepts | {t['port_s']:.1f} s |")
    out.append(f"| VmRSS / VmHWM after recovery | {mem2.get('VmRSS', 0):.0f} / {mem2.get('VmHWM', 0):.0f} MiB |")
    out.append(f"| drain after the restart (`ferry bench --drain --ack-every 100`) | {d.get('consumed')} msg, "
               f"{d.get('consume_rate', 0):.0f} msg/s |")
    out.append(f"| VmRSS / VmHWM after the drain | {mem3.get('VmRSS', 0):.0f} / {mem3.get('VmHWM', 0):.0f} MiB |")
    out.append(f"\nThe recovery line: `{t['line']}`\n")
    shutil.rmtree(b.data_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="throughput,recovery")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--recovery-count", type=int, default=1_000_000)
    ap.add_argument("--rss-count", type=int, default=10_000_000)
    ap.add_argument("--rss-args", default="", help="extra ferryd flags for the rss run (e.g. --memory-budget N)")
    ap.add_argument("--ferryd", default=os.path.join(ROOT, "build", "ferryd"))
    ap.add_argument("--ferry", default=os.path.join(ROOT, "build", "ferry"))
    ap.add_argument("--data-root", default="/tmp/ferry-bench-store")
    ap.add_argument("--append", action="store_true", help="add to --out instead of rewriting it")
    ap.add_argument("--built-from", help="what the binaries were built from (default: this checkout)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"))
    o = ap.parse_args()
    os.makedirs(o.data_root, exist_ok=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"], capture_output=True,
                           text=True).stdout.strip()
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", o.data_root], capture_output=True,
                        text=True).stdout.strip()
    out = ["# Store benchmarks\n" if not o.append else "",
           f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
           f"`bench/store/store_bench.py --only {o.only}` with {o.ferryd} (built from "
           f"{o.built_from or 'the working tree at commit ' + commit + (' with uncommitted changes in src/' if dirty else '')}"
           f"); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start, "
           f"{platform.system()} {platform.release()}, data on {fs or o.data_root}. "
           "Broker and load generator share the machine.\n"]
    for part in o.only.split(","):
        {"throughput": run_throughput, "recovery": run_recovery, "rss": run_rss}[part.strip()](o, out)
    with open(o.out, "a" if o.append else "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {o.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
