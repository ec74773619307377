#!/usr/bin/python3
"""The `make bench` matrix: the same nine rows against a fresh ferryd and a private Debian
RabbitMQ, in one run, written to bench/results/latest.md (table with the ratio ferry/rabbitmq)
and bench/results/latest.png (gnuplot). Raw per-row JSON goes to bench/results/tmp/.

Rows (issue 5):
  1  1 producer / 1 consumer, 16 B, transient, auto-ack
  2  the same with 1 KiB
  3  persistent, durable queue, confirms (window 1,000), manual ack every 100, 1 KiB
  4  4 producers / 4 consumers over 4 queues, 256 B
  5  fanout to 8 queues, 256 B, 8 consumers
  6  fixed 10,000 msg/s (1P/1C, 256 B): end-to-end latency p50 / p99 / p99.9
  7  1,000,000 queued 256 B messages, no consumer: broker RSS (settled and peak), then drain rate
  8  10,000 idle connections with a channel each: broker RSS
  9  highest sustainable rate: fixed-rate sweep (1P/1C, 256 B) up to where p99 passes 10 ms
     or the consumer falls behind
 10-15  issue 14's growing loads (bench/scale_rows.py): topic bindings, 100,000 queues,
     10,000 consumers, large messages, recovery after kill -9, row 6 on a quiet machine
 16  row 1 over TLS (amqps; the broker's certificate verified by ferry bench --cacert)
 17  row 3 over TLS
 18  streams (x-queue-type stream): append rate with confirms (fsync) and replay rate from
     first, 10,000,000 events of 256 B (ferry bench --stream)
Both brokers get the same certificate, made with openssl at the start of the run
(tests/lib/certs.py). Rows 1, 3, 16 and 17 run BENCH_REPEAT times (default 3) and report the
median with the spread (min–max); the others run once.

BENCH_QUICK=1 runs every row briefly (about two minutes in all) for development; it writes
bench/results/tmp/latest-quick.{md,png} and leaves the committed latest.{md,png} alone.
BENCH_BROKERS=ferry or =rabbitmq runs one side only. BENCH_ROWS=1,3,16,17 runs only those rows
(written to bench/results/tmp/latest-rows.md, leaving latest.md alone). A broker that is missing or will not
start gets "n/a" in its column instead of failing the run; so does a row that fails.
"""
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from ferryd import Ferryd  # noqa: E402
import rabbitmq  # noqa: E402
from certs import Certs  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "bench"))
import scale_rows  # noqa: E402

FERRY = os.path.join(ROOT, "build", "ferry")
FERRYD = os.path.join(ROOT, "build", "ferryd")
RESULTS = os.path.join(ROOT, "bench", "results")
RAW = os.path.join(RESULTS, "tmp")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ONLY_ROWS = {int(x) for x in os.environ.get("BENCH_ROWS", "").split(",") if x.strip()}
REPEAT = int(os.environ.get("BENCH_REPEAT", "1" if QUICK else "3"))
REPEAT_ROWS = {1, 3, 16, 17, 18}   # medians of REPEAT runs, with their spread
# A quick or partial run is for development: it never overwrites the committed full-run results.
PARTIAL = QUICK or bool(ONLY_ROWS)
OUT_MD = os.path.join(RAW if PARTIAL else RESULTS,
                      "latest-quick.md" if QUICK else "latest-rows.md" if ONLY_ROWS else "latest.md")
OUT_PNG = os.path.join(RAW if PARTIAL else RESULTS,
                       "latest-quick.png" if QUICK else "latest-rows.png" if ONLY_ROWS else "latest.png")
CERTS = None  # made in main(): the TLS rows' CA and server certificate, shared by both brokers

# Durations and sizes: full run ~10-15 minutes for both brokers, quick ~1-2 minutes.
D_THROUGHPUT = 2 if QUICK else 10     # rows 1-5, seconds
D_LATENCY = 3 if QUICK else 10        # row 6
D_SWEEP_STEP = 1 if QUICK else 3      # row 9, per rate step
SWEEP_FACTOR = 2.0 if QUICK else 1.5
SWEEP_REFINE = 1 if QUICK else 2
BACKLOG = 100_000 if QUICK else 1_000_000   # row 7
IDLE_CONNS = 1_000 if QUICK else 10_000     # row 8
STREAM_EVENTS = 300_000 if QUICK else 10_000_000  # row 18
SETTLE_MAX = 5 if QUICK else 30             # seconds to wait for RSS to settle
QUIET_MAX = 5 if QUICK else 30              # seconds to wait for the broker to go idle between rows


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- brokers

def rss_kb(pid):
    """(VmRSS, VmHWM) of a process in KiB, or (None, None)."""
    vals = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    vals[k] = int(v.split()[0])
    except OSError:
        return None, None
    return vals.get("VmRSS"), vals.get("VmHWM")


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def wait_quiet(pid, max_s):
    """Waits until the broker uses under 10 % of a core (over half a second), so a row does
    not pay for the previous one's leftovers (RabbitMQ deletes a big backlog in the
    background). Returns the seconds waited."""
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.time()
    while time.time() - t0 < max_s:
        a = cpu_ticks(pid)
        time.sleep(0.5)
        b = cpu_ticks(pid)
        if a is None or b is None or (b - a) / hz < 0.05:
            break
    return time.time() - t0


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0), so a row's peak is its own."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class FerryBroker:
    name = "ferry"

    def __init__(self):
        self.d = None
        self.why = None

    def start(self):
        if not os.access(FERRYD, os.X_OK):
            self.why = "build/ferryd not built"
            return False
        try:
            from ferryd import free_port, wait_port
            self.tls_port = free_port()
            self.d = Ferryd(data_dir=tempfile.mkdtemp(prefix="ferry-bench-"), binary=FERRYD,
                            args=["--tls-port", str(self.tls_port), "--tls-cert", CERTS.server_cert,
                                  "--tls-key", CERTS.server_key])
            self.d.start(timeout=15)
            wait_port(self.d.host, self.tls_port, 15, self.d.proc)
        except Exception as e:  # noqa: BLE001
            self.why = f"ferryd did not start: {e}"
            self.d = None
            return False
        return True

    def alive(self):
        return self.d is not None and self.d.running()

    def restart(self):
        self.stop()
        return self.start()

    @property
    def url(self):
        return self.d.url

    @property
    def tls_url(self):
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def host_port(self):
        return self.d.host, self.d.port

    def pid(self):
        return self.d.proc.pid

    def stop(self):
        if self.d is None:
            return
        try:
            if self.d.running():
                self.d.stop(timeout=20)
        except Exception as e:  # noqa: BLE001
            log(f"ferryd stop: {e}")
        shutil.rmtree(self.d.data_dir, ignore_errors=True)
        self.d = None


class RabbitBroker:
    name = "rabbitmq"

    def __init__(self):
        self.r = None
        self.why = None

    def start(self):
        if not rabbitmq.available():
            self.why = "rabbitmq-server not installed"
            return False
        try:
            self.r = rabbitmq.RabbitMQ(tls={"cacert": CERTS.ca, "cert": CERTS.server_cert,
                                            "key": CERTS.server_key}).start(timeout=120)
            deadline = time.time() + 30
            while self.r.pid() is None and time.time() < deadline:
                time.sleep(0.2)
        except Exception as e:  # noqa: BLE001
            self.why = f"rabbitmq-server did not start: {e}"
            if self.r:
                self.r.stop()
            self.r = None
            return False
        return True

    def alive(self):
        return self.r is not None and self.r.proc.poll() is None

    def restart(self):
        self.stop()
        return self.start()

    @property
    def url(self):
        return self.r.url

    @property
    def tls_url(self):
        return self.r.tls_url.replace("127.0.0.1", "localhost")

    @property
    def host_port(self):
        return self.r.host, self.r.port

    def pid(self):
        return self.r.pid()

    def stop(self):
        if self.r is not None:
            self.r.stop()
            self.r = None


# ---------------------------------------------------------------- running ferry bench

class RowFailed(Exception):
    pass


def bench(broker, tag, *args, timeout=600, tls=False):
    """Runs `ferry bench --json` against the broker (over TLS: its amqps port, the certificate
    verified); returns the parsed result (raises RowFailed on a failed run). The raw output is
    kept under bench/results/tmp/."""
    uri = ["--uri", broker.tls_url, "--cacert", CERTS.ca] if tls else ["--uri", broker.url]
    cmd = [FERRY, "bench", *uri, "--json", "--quiet", "--queue-prefix", f"bench-{tag}-", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RowFailed(f"ferry bench timed out after {timeout}s")
    with open(os.path.join(RAW, f"{broker.name}-{tag}.json"), "a") as f:
        f.write(json.dumps({"cmd": cmd[1:], "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}) + "\n")
    try:
        res = json.loads(p.stdout)
    except ValueError:
        raise RowFailed((p.stderr.strip() or f"exit {p.returncode}").splitlines()[-1])
    if not res.get("ok"):
        raise RowFailed(res.get("error") or f"exit {p.returncode}")
    return res


def lat(res, key, p):
    v = res.get(key)
    return v[p] if v else None


# ---------------------------------------------------------------- rows
# Each row function returns {metric: value}; metrics are listed in METRICS below.

def tls_note(r):
    return {"_note": f"TLS version {r.get('tls')}"} if r.get("tls") else {}


def row1(b, tls=False):
    r = bench(b, "row16" if tls else "row1", "--size", "16", "--duration", str(D_THROUGHPUT), tls=tls)
    return {**tls_note(r), "consume": r["consume_rate"], "publish": r["publish_rate"], "p99": lat(r, "latency_ms", "p99"), "_cpu": cpu(r)}


def row2(b):
    r = bench(b, "row2", "--size", "1024", "--duration", str(D_THROUGHPUT))
    return {"consume": r["consume_rate"], "publish": r["publish_rate"], "p99": lat(r, "latency_ms", "p99"), "_cpu": cpu(r)}


def row3(b, tls=False):
    r = bench(b, "row17" if tls else "row3", "--size", "1024", "--persistent", "--confirm", "1000", "--ack-every",
              "100", "--prefetch", "1000", "--duration", str(D_THROUGHPUT), tls=tls)
    return {**tls_note(r), "consume": r["consume_rate"], "confirmed": r["confirmed"] / max(r["publish_s"], 1e-9),
            "confirm_p99": lat(r, "confirm_latency_ms", "p99"), "_cpu": cpu(r)}


def row16(b):
    return row1(b, tls=True)


def row17(b):
    return row3(b, tls=True)


def row4(b):
    r = bench(b, "row4", "--producers", "4", "--consumers", "4", "--queues", "4", "--size", "256",
              "--duration", str(D_THROUGHPUT))
    return {"consume": r["consume_rate"], "publish": r["publish_rate"], "p99": lat(r, "latency_ms", "p99"), "_cpu": cpu(r)}


def row5(b):
    r = bench(b, "row5", "--fanout", "8", "--size", "256", "--duration", str(D_THROUGHPUT))
    return {"consume": r["consume_rate"], "publish": r["publish_rate"], "p99": lat(r, "latency_ms", "p99"), "_cpu": cpu(r)}


def row6(b):
    r = bench(b, "row6", "--rate", "10000", "--size", "256", "--duration", str(D_LATENCY))
    behind = r["consumed"] < 0.99 * r["published"]
    return {"p50": lat(r, "latency_ms", "p50"), "p99": lat(r, "latency_ms", "p99"),
            "p999": lat(r, "latency_ms", "p999"), "_cpu": cpu(r),
            "_note": "consumer fell behind" if behind else None}


def row7(b):
    pid = b.pid()
    base, _ = rss_kb(pid)
    reset_peak(pid)
    # Sample RSS while the backlog arrives as well: VmHWM is the authority, the samples a check.
    peak_sampled = [base or 0]
    proc = subprocess.Popen([FERRY, "bench", "--uri", b.url, "--json", "--quiet", "--queue-prefix", "bench-row7-",
                             "--size", "256", "--count", str(BACKLOG), "--no-consume"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        cur, _ = rss_kb(pid)
        peak_sampled.append(cur or 0)
        time.sleep(0.1)
    out, err = proc.communicate()
    with open(os.path.join(RAW, f"{b.name}-row7.json"), "a") as f:
        f.write(json.dumps({"rc": proc.returncode, "stdout": out, "stderr": err}) + "\n")
    try:
        pub = json.loads(out)
    except ValueError:
        raise RowFailed((err.strip() or "publish failed").splitlines()[-1])
    if not pub.get("ok"):
        raise RowFailed(pub.get("error"))
    # Settled: RSS has changed by under 1 % over the last 2 seconds (or SETTLE_MAX passed).
    samples = []
    t0 = time.time()
    while time.time() - t0 < SETTLE_MAX:
        cur, _ = rss_kb(pid)
        samples.append(cur)
        peak_sampled.append(cur or 0)
        if len(samples) >= 5 and abs(samples[-1] - samples[-5]) <= 0.01 * samples[-1]:
            break
        time.sleep(0.5)
    settled, hwm = rss_kb(pid)
    peak = max(hwm or 0, max(peak_sampled))
    drain = bench(b, "row7", "--drain", "--timeout", "30", timeout=900)
    per_msg = (settled - base) * 1024 / BACKLOG
    return {"rss_settled": settled / 1024, "rss_peak": peak / 1024, "bytes_per_msg": per_msg,
            "beyond_body": per_msg - 256, "drain": drain["consume_rate"], "_cpu": cpu(drain),
            "_note": f"baseline RSS {base / 1024:.1f} MiB; drained {drain['consumed']:,} of {drain['expected']:,}"}


def row8(b):
    pid = b.pid()
    base, _ = rss_kb(pid)
    host, port = b.host_port
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "idle_connections.py"), host, str(port),
                             str(IDLE_CONNS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RowFailed(line or proc.stderr.read().strip()[-300:] or "idle connection helper failed")
        # Let the broker settle (RabbitMQ starts several processes per connection lazily).
        samples = []
        for _ in range(10 if QUICK else 20):
            time.sleep(0.5)
            cur, _ = rss_kb(pid)
            samples.append(cur)
            if len(samples) >= 4 and abs(samples[-1] - samples[-4]) <= 0.01 * samples[-1]:
                break
        held, _ = rss_kb(pid)
    finally:
        try:
            proc.stdin.close()
            proc.wait(60)
        except Exception:  # noqa: BLE001
            proc.kill()
    return {"rss_conns": held / 1024, "per_conn": (held - base) / IDLE_CONNS,
            "_note": f"baseline RSS {base / 1024:.1f} MiB"}


def sweep_step(b, rate):
    """One fixed-rate step: (passed, result). Passing = p99 <= 10 ms and the consumer kept up."""
    try:
        r = bench(b, "row9", "--rate", str(int(rate)), "--size", "256", "--duration", str(D_SWEEP_STEP))
    except RowFailed as e:
        return False, {"error": str(e)}
    want = rate * D_SWEEP_STEP
    p99 = lat(r, "latency_ms", "p99")
    ok = (p99 is not None and p99 <= 10.0 and r["published"] >= 0.97 * want
          and r["consumed"] >= 0.99 * r["published"])
    return ok, r


def row9(b):
    steps = []
    rate, best, best_res, bad = 10_000.0, None, None, None
    while rate <= 20_000_000:
        ok, r = sweep_step(b, rate)
        steps.append((rate, ok, lat(r, "latency_ms", "p99")))
        if not ok:
            bad = rate
            break
        best, best_res = rate, r
        rate *= SWEEP_FACTOR
    for _ in range(SWEEP_REFINE if best and bad else 0):
        mid = math.sqrt(best * bad)
        ok, r = sweep_step(b, mid)
        steps.append((mid, ok, lat(r, "latency_ms", "p99")))
        if ok:
            best, best_res = mid, r
        else:
            bad = mid
    trail = ", ".join(f"{int(s):,}{'' if ok else ' ✗'}" for s, ok, _ in steps)
    if best is None:
        return {"sustainable": 0.0, "_note": f"failed at the first step: {trail}"}
    return {"sustainable": best, "p99_at": lat(best_res, "latency_ms", "p99"), "_cpu": cpu(best_res),
            "_note": f"steps (msg/s): {trail}"}


def row18(b):
    """Streams: STREAM_EVENTS events of 256 B appended by one producer with confirms (a window
    of 1,000; each confirm waits for the fsync), then replayed from first by one consumer
    (prefetch 1,000, ack every 500)."""
    n = str(STREAM_EVENTS)
    # --timeout 120: a broker may pause for seconds (RabbitMQ once stopped delivering for more
    # than the default 10 s mid-replay on the shared machine); the rates still count the pause.
    a = bench(b, "row18", "--stream", "--no-consume", "--count", n, "--size", "256", "--confirm", "1000",
              "--timeout", "120", timeout=3600)
    r = bench(b, "row18", "--stream", "--drain", "--count", n, "--prefetch", "1000", "--ack-every", "500",
              "--timeout", "120", timeout=3600)
    return {"append": a["confirmed"] / max(a["publish_s"], 1e-9), "replay": r["consume_rate"],
            "_cpu": max(cpu(a), cpu(r))}


def cpu(res):
    c = res.get("bench_cpu") or {}
    return max(c.get("producer_max", 0), c.get("consumer_max", 0))


# (row, title, function, [(metric key, label, higher is better)])
ROWS = [
    (1, "1P/1C, 16 B, transient, auto-ack", row1,
     [("consume", "consume msg/s", True), ("publish", "publish msg/s", True), ("p99", "latency p99 ms", False)]),
    (2, "1P/1C, 1 KiB, transient, auto-ack", row2,
     [("consume", "consume msg/s", True), ("publish", "publish msg/s", True), ("p99", "latency p99 ms", False)]),
    (3, "persistent, confirms (1000), ack every 100, 1 KiB", row3,
     [("consume", "consume msg/s", True), ("confirmed", "confirmed msg/s", True),
      ("confirm_p99", "confirm p99 ms", False)]),
    (4, "4P/4C over 4 queues, 256 B", row4,
     [("consume", "consume msg/s", True), ("publish", "publish msg/s", True), ("p99", "latency p99 ms", False)]),
    (5, "fanout to 8 queues, 8 consumers, 256 B", row5,
     [("consume", "deliveries msg/s", True), ("publish", "publish msg/s", True), ("p99", "latency p99 ms", False)]),
    (6, "fixed 10,000 msg/s, 1P/1C, 256 B", row6,
     [("p50", "latency p50 ms", False), ("p99", "latency p99 ms", False), ("p999", "latency p99.9 ms", False)]),
    (7, f"{BACKLOG:,} queued 256 B messages, no consumer", row7,
     [("rss_settled", "RSS settled MiB", False), ("rss_peak", "RSS peak MiB", False),
      ("bytes_per_msg", "RSS bytes/msg", False), ("beyond_body", "bytes/msg beyond body", False),
      ("drain", "drain msg/s", True)]),
    (8, f"{IDLE_CONNS:,} idle connections, 1 channel each", row8,
     [("rss_conns", "RSS MiB", False), ("per_conn", "KiB/connection", False)]),
    (9, "highest sustainable rate, 1P/1C, 256 B (p99 <= 10 ms)", row9,
     [("sustainable", "msg/s", True), ("p99_at", "p99 ms at that rate", False)]),
] + scale_rows.rows() + [
    (16, "row 1 over TLS (amqps): 1P/1C, 16 B, transient, auto-ack", row16,
     [("consume", "consume msg/s", True), ("publish", "publish msg/s", True), ("p99", "latency p99 ms", False)]),
    (17, "row 3 over TLS (amqps): persistent, confirms (1000), ack every 100, 1 KiB", row17,
     [("consume", "consume msg/s", True), ("confirmed", "confirmed msg/s", True),
      ("confirm_p99", "confirm p99 ms", False)]),
    (18, f"streams: {STREAM_EVENTS:,} events of 256 B, append with confirms, replay from first", row18,
     [("append", "append msg/s (confirmed)", True), ("replay", "replay msg/s", True)]),
]
ROW = {r[0]: r for r in ROWS}
# Rows 7 and 8 leave the most behind in a broker (RabbitMQ keeps memory it grew), so they
# run late; the table is in row order regardless. Each TLS row runs next to its plain row.
# Row 15 waits for a quiet machine; row 11 (100,000 queues) and row 14 (its own brokers,
# killed and restarted, gigabytes on disk) come last.
ORDER = [1, 16, 3, 17, 2, 4, 5, 6, 15, 9, 18, 10, 12, 13, 8, 7, 11, 14]
ROW_INDEX = {r[0]: r for r in ROWS}  # row number -> its entry in ROWS
# Rows that get a freshly started broker: row 11 measures RSS per idle queue, and a process
# that drained row 7's backlog reuses that heap (its RSS does not grow at all).
FRESH_ROWS = {11}
# BENCH_RERUN_FROM=bench/results/tmp/results.json with BENCH_ROWS (and BENCH_BROKERS): re-runs
# those rows on top of an earlier full run's results and writes latest.md again, saying so
# (BENCH_RERUN_NOTE gives the reason).
RERUN_FROM = os.environ.get("BENCH_RERUN_FROM")
if RERUN_FROM:
    PARTIAL = False
    OUT_MD = os.path.join(RESULTS, "latest.md")
    OUT_PNG = os.path.join(RESULTS, "latest.png")
BASELINES = None  # row 13's plain TCP copy and dd figures (scale_rows.baselines), made in main()


def run_repeated(fn, broker):
    """REPEAT runs of a row: the median of each metric, and the spread as _spread."""
    runs = []
    for i in range(REPEAT):
        if i:
            wait_quiet(broker.pid(), QUIET_MAX)
        runs.append(fn(broker))
    out = dict(runs[len(runs) // 2])
    spread = {}
    for k, v in runs[0].items():
        if k.startswith("_") or not isinstance(v, (int, float)):
            continue
        vals = sorted(r[k] for r in runs if r.get(k) is not None)
        if vals:
            out[k] = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
            spread[k] = (vals[0], vals[-1], len(vals))
    out["_spread"] = spread
    out["_cpu"] = max(r.get("_cpu") or 0 for r in runs)
    return out


def run_broker(broker):
    """Runs every row against one broker; returns {row: {metric: value} or {"_error": why}}."""
    results = {}
    if not broker.start():
        log(f"{broker.name}: {broker.why}; its column is n/a")
        return {n: {"_error": broker.why} for n, *_ in ROWS}
    log(f"{broker.name} up at {broker.url} (pid {broker.pid()})")
    try:
        for n in ORDER:
            _, title, fn, _ = ROW_INDEX[n]
            if ONLY_ROWS and n not in ONLY_ROWS:
                results[n] = {"_error": "not run (BENCH_ROWS)"}
                continue
            if not broker.alive():
                log(f"{broker.name} is down; restarting it for row {n}")
                if not broker.restart():
                    results[n] = {"_error": broker.why}
                    continue
            if n in FRESH_ROWS:
                log(f"{broker.name}: a fresh broker for row {n}")
                if not broker.restart():
                    results[n] = {"_error": broker.why}
                    continue
            waited = wait_quiet(broker.pid(), QUIET_MAX)
            if waited > 1:
                log(f"{broker.name}: waited {waited:.0f}s for the broker to go idle before row {n}")
            t = time.time()
            try:
                results[n] = run_repeated(fn, broker) if n in REPEAT_ROWS and REPEAT > 1 else fn(broker)
            except RowFailed as e:
                results[n] = {"_error": str(e)}
            except Exception as e:  # noqa: BLE001 - one broken row must not lose the others
                results[n] = {"_error": f"{type(e).__name__}: {e}"}
            if not broker.alive():
                results[n].setdefault("_error", f"{broker.name} died during the row")
            log(f"{broker.name} row {n} ({time.time() - t:.0f}s): "
                f"{ {k: v for k, v in results[n].items() if not k.startswith('_') or k == '_error'} }")
    finally:
        broker.stop()
    return results


# ---------------------------------------------------------------- output

def fmt(v, key):
    if v is None:
        return "n/a"
    if key in ("p50", "p99", "p999", "confirm_p99", "p99_at") or key.startswith(("p99_", "p999_")):
        return f"{v:.3f}" if v < 10 else f"{v:,.1f}"
    if key.startswith(("warm_accept", "warm_first", "cold_accept", "cold_first")) or key in ("drop", "per_queue_kib"):
        return f"{v:.2f}"
    if key in ("rss_settled", "rss_peak", "rss_conns", "per_conn"):
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return os.cpu_count(), model


def rabbit_version():
    try:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"], capture_output=True,
                              text=True).stdout.strip() or "not installed"
    except OSError:
        return "unknown"


def git_rev():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def write_markdown(res, started, elapsed):
    ncpu, model = machine()
    lines = [
        "# `make bench`: Ferry vs RabbitMQ",
        "",
        f"Generated {started:%Y-%m-%d %H:%M} UTC at commit {git_rev()} in {elapsed / 60:.1f} minutes"
        f"{' (BENCH_QUICK=1: short rows, not for quoting)' if QUICK else ''}.",
        "",
        f"- machine: `nproc` = {ncpu}; `model name : {model}`; kernel {platform.release()}",
        f"- RabbitMQ: Debian rabbitmq-server {rabbit_version()}, default configuration, private node",
        "- Ferry: build/ferryd, fresh data directory",
        "- load generator: `build/ferry bench` on the same machine, sharing its cores with the broker",
        f"- throughput rows run {D_THROUGHPUT} s each at unlimited rate; rates are messages per second",
        "  (consume = deliveries received by all consumers). Latency is end to end (publish to",
        "  delivery) unless it says confirm.",
        "",
        "| row | what | metric | ferry | rabbitmq | ferry/rabbitmq |",
        "|---|---|---|---:|---:|---:|",
    ]
    notes = []
    for n, title, _, metrics in ROWS:
        f, r = res["ferry"].get(n, {}), res["rabbitmq"].get(n, {})
        for i, (key, label, _higher) in enumerate(metrics):
            fv, rv = f.get(key), r.get(key)
            ratio = f"{fv / rv:.2f}×" if fv is not None and rv else "n/a"
            lines.append(f"| {n if i == 0 else ''} | {title if i == 0 else ''} | {label} | {fmt(fv, key)} | "
                         f"{fmt(rv, key)} | {ratio} |")
        for name, d in (("ferry", f), ("rabbitmq", r)):
            if d.get("_error"):
                notes.append(f"- row {n}, {name}: n/a — {d['_error']}")
            elif d.get("_note"):
                notes.append(f"- row {n}, {name}: {d['_note']}")
    lines += ["", "Lower is better for latency and memory; the ratio is always ferry ÷ rabbitmq.", ""]
    lines += scale_rows.section(res, BASELINES, "Rows 10 and 12–14 run once per broker.")
    lines += tls_section(res)
    lines += stream_section(res)
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    cpu_rows = []
    for n, *_ in ROWS:
        for name in ("ferry", "rabbitmq"):
            c = res[name].get(n, {}).get("_cpu")
            if c is not None:
                cpu_rows.append((c, n, name))
    if cpu_rows:
        c, n, name = max(cpu_rows)
        lines += ["## Load generator headroom", "",
                  f"The busiest `ferry bench` thread in any row used {c * 100:.0f}% of a core (row {n}, {name}); "
                  "a thread near 100% would mean the generator, not the broker, set the pace.", ""]
    lines += ["Reproduce: `make bench` (or `BENCH_QUICK=1 make bench` for a quick look). Raw results of the",
              "last run: `bench/results/tmp/`.", ""]
    with open(OUT_MD, "w") as fh:
        fh.write("\n".join(lines))


def spread_text(d, key):
    sp = (d.get("_spread") or {}).get(key)
    if not sp:
        return ""
    lo, hi, n = sp
    return f" ({fmt(lo, key)}–{fmt(hi, key)}, {n} runs)"


def tls_section(res):
    """Rows 1 and 3 beside their TLS twins (16, 17): medians, spreads and the TLS cost."""
    lines = ["## TLS (amqps) beside plain", "",
             f"Rows 1 and 3 over plain AMQP and over TLS (rows 16 and 17), each the median of {REPEAT} runs with "
             "the spread (min–max) in brackets. Both brokers serve the same RSA-2048 certificate made with "
             "openssl for the run; `ferry bench` verifies it (`--cacert`; the negotiated TLS version is in the notes). "
             "The machine's 2 cores are shared with other work, so single runs swing; compare within a column.",
             "", "| row | metric | broker | plain | TLS | TLS ÷ plain |", "|---|---|---|---:|---:|---:|"]
    for plain, tls, key, label in ((1, 16, "consume", "consume msg/s"), (3, 17, "confirmed", "confirmed msg/s"),
                                   (3, 17, "consume", "consume msg/s")):
        for name in ("ferry", "rabbitmq"):
            p, t = res[name].get(plain, {}), res[name].get(tls, {})
            pv, tv = p.get(key), t.get(key)
            ratio = f"{tv / pv:.2f}" if pv and tv is not None else "n/a"
            lines.append(f"| {plain} | {label} | {name} | {fmt(pv, key)}{spread_text(p, key)} | "
                         f"{fmt(tv, key)}{spread_text(t, key)} | {ratio} |")
    f10, r10 = res["ferry"].get(16, {}).get("consume"), res["rabbitmq"].get(16, {}).get("consume")
    f11, r11 = res["ferry"].get(17, {}).get("confirmed"), res["rabbitmq"].get(17, {}).get("confirmed")
    lines.append("")
    if f10 and r10 and f11 and r11:
        lines.append(f"Over TLS, ferry ÷ RabbitMQ: row 1 {f10 / r10:.0f}×, row 3 {f11 / r11:.0f}×.")
        lines.append("")
    return lines


def stream_section(res):
    """Row 18: stream append and replay, medians of REPEAT runs with the spread."""
    lines = ["## Streams (row 18)", "",
             f"{STREAM_EVENTS:,} events of 256 B appended to a stream (`x-queue-type: stream`) by one producer with "
             "publisher confirms (window 1,000; a confirm waits for the fsync on both brokers), then replayed from "
             "`x-stream-offset: first` by one consumer (prefetch 1,000, ack every 500): `ferry bench --stream`. "
             f"Median of {REPEAT} runs, spread (min–max) in brackets. The machine's 2 cores are shared with other "
             "work (other builds and tests ran at the same time), so runs swing; compare within a run.",
             "", "| metric | ferry | rabbitmq | ferry ÷ rabbitmq |", "|---|---:|---:|---:|"]
    f, r = res["ferry"].get(18, {}), res["rabbitmq"].get(18, {})
    for key, label in (("append", "append msg/s (confirmed)"), ("replay", "replay msg/s")):
        fv, rv = f.get(key), r.get(key)
        ratio = f"{fv / rv:.2f}×" if fv is not None and rv else "n/a"
        lines.append(f"| {label} | {fmt(fv, key)}{spread_text(f, key)} | {fmt(rv, key)}{spread_text(r, key)} | "
                     f"{ratio} |")
    return lines + [""]


def write_chart(res):
    """Three panels: throughput, latency, memory; ferry and rabbitmq bars per metric."""
    panels = [
        ("throughput (msg/s, higher is better)", [
            (1, "consume", "1: 16 B"), (2, "consume", "2: 1 KiB"), (3, "consume", "3: persistent"),
            (4, "consume", "4: 4P/4C"), (5, "consume", "5: fanout 8"), (7, "drain", "7: drain"),
            (9, "sustainable", "9: sustainable"), (16, "consume", "16: 1 over TLS"),
            (17, "consume", "17: 3 over TLS"), (18, "append", "18: stream append"),
            (18, "replay", "18: stream replay")]),
        ("latency (ms, lower is better)", [
            (6, "p50", "6: p50"), (6, "p99", "6: p99"), (6, "p999", "6: p99.9"), (3, "confirm_p99", "3: confirm p99"),
            (9, "p99_at", "9: p99 at max")]),
        ("memory (lower is better)", [
            (7, "bytes_per_msg", "7: B/queued msg"), (7, "rss_peak", "7: peak MiB"),
            (8, "per_conn", "8: KiB/conn")]),
    ]
    files = []
    for i, (_, items) in enumerate(panels):
        path = os.path.join(RAW, f"chart{i}.dat")
        with open(path, "w") as fh:
            for row, key, label in items:
                f = res["ferry"].get(row, {}).get(key)
                r = res["rabbitmq"].get(row, {}).get(key)
                fh.write(f'"{label}" {f if f else "NaN"} {r if r else "NaN"}\n')
        files.append(path)
    gp = os.path.join(RAW, "chart.gp")
    with open(gp, "w") as fh:
        fh.write(f"""set terminal pngcairo size 1500,520 font "sans,10"
set output "{OUT_PNG}"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set key below horizontal
set xtics rotate by -30 nomirror
set multiplot layout 1,3 title "Ferry vs RabbitMQ — make bench{' (quick)' if QUICK else ''}, {machine()[0]} cores"
""")
        for (title, _), path in zip(panels, files):
            fh.write(f'set title "{title}"\n')
            fh.write(f'plot "{path}" using 2:xtic(1) title "ferry" lc rgb "#1f77b4", '
                     f'"" using 3 title "rabbitmq" lc rgb "#ff7f0e"\n')
        fh.write("unset multiplot\n")
    p = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if p.returncode != 0:
        log(f"gnuplot failed: {p.stderr.strip()[-500:]}")


def main():
    os.makedirs(RAW, exist_ok=True)
    earlier = None
    if RERUN_FROM:  # read before RAW is emptied (it may live there)
        with open(RERUN_FROM) as fh:
            earlier = json.load(fh)
    for name in os.listdir(RAW):
        os.unlink(os.path.join(RAW, name))
    if not os.access(FERRY, os.X_OK):
        log("build/ferry is missing: run `make build/ferry`")
        return 1
    global CERTS, BASELINES
    CERTS = Certs(tempfile.mkdtemp(prefix="ferry-bench-certs-"))
    C = scale_rows.C  # the issue-14 rows run ferry bench through this module's bench()
    C.bench, C.rss_kb, C.RowFailed, C.log = bench, rss_kb, RowFailed, log
    C.quick, C.d_throughput, C.d_latency, C.raw = QUICK, D_THROUGHPUT, D_LATENCY, RAW
    if not ONLY_ROWS or 13 in ONLY_ROWS:
        log("row 13 baselines: plain TCP copy and dd with fdatasync")
        try:
            BASELINES = scale_rows.baselines()
        except Exception as e:  # noqa: BLE001 - the rows still run
            log(f"row 13 baselines failed: {e}")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    which = os.environ.get("BENCH_BROKERS", "ferry,rabbitmq").split(",")
    res = {"ferry": {}, "rabbitmq": {}}
    if earlier:
        BASELINES = BASELINES or earlier.get("baselines")
    for broker in (FerryBroker(), RabbitBroker()):
        if broker.name in which:
            res[broker.name] = run_broker(broker)
        else:
            res[broker.name] = {n: {"_error": "not run (BENCH_BROKERS)"} for n, *_ in ROWS}
    if earlier:  # rows not run now keep the earlier run's figures; re-run ones say when and why
        why = os.environ.get("BENCH_RERUN_NOTE", "re-run")
        for name in ("ferry", "rabbitmq"):
            for n, *_ in ROWS:
                got = res[name].get(n, {})
                if got.get("_error", "").startswith("not run") or not got:
                    res[name][n] = earlier.get(name, {}).get(str(n), got)
                else:
                    got["_note"] = f"re-run at {time.strftime('%H:%M')} UTC ({why}); " + (got.get("_note") or "")
    shutil.rmtree(CERTS.dir, ignore_errors=True)
    res["baselines"] = BASELINES
    with open(os.path.join(RAW, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    write_markdown(res, started, time.time() - t0)
    write_chart(res)
    scale_rows.charts(res, RAW if PARTIAL else RESULTS,
                      "-quick" if QUICK else "-rows" if ONLY_ROWS and not RERUN_FROM else "")
    log(f"wrote {os.path.relpath(OUT_MD, ROOT)} and {os.path.basename(OUT_PNG)} in {(time.time() - t0) / 60:.1f} min")
    with open(OUT_MD) as fh:
        print(fh.read())
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
