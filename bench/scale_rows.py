"""Rows 10-15 of `make bench` (issue 14: costs that stay flat as the work grows), imported by
bench/matrix.py, which runs them against ferryd and RabbitMQ in the same run and writes them
into bench/results/latest.md; this module also writes the section with the baselines, the
reproducing command of each row and the three charts (bench/results/scale-*.png).

 10  topic exchange with 1 / 10,000 / 100,000 bindings (ferry bench --topic-bindings): rate
 11  100,000 queues, half durable (bench/scale/queues.py): declare rate, RSS per idle queue,
     row 1's rate on one of them with 0, 10,000 and 100,000 idle queues around it
 12  10,000 consumers on 1,000 queues over 100 connections, 256 B, fixed 50,000 msg/s:
     delivered/s and p99; and the unlimited rate of the same topology
 13  64 KiB and 1 MiB bodies, 1P/1C, transient and persistent: bytes/s, beside a plain TCP
     copy between two C processes (bench/scale/tcpcopy.c) and dd with fdatasync
 14  recovery after kill -9 with 1,000,000 and 10,000,000 x 1 KiB queued (bench/scale/recovery.py):
     time to accept connections, to the first delivery, RSS; warm and cold page cache
 15  row 6 repeated 5 times, each started when the load average is under 0.3 (or, after
     QUIET_LOAD_WAIT seconds, started anyway and marked "machine busy")

Environment: BENCH_ROW11_RABBIT_QUEUES (default 20,000: RabbitMQ 3.10 declares ~125 queues/s
here, so 100,000 would take about 15 minutes), BENCH_ROW14_SIZES (default 1000000,10000000),
BENCH_ROW14_RABBIT_SIZES (default 1000000), BENCH_QUIET_LOAD_WAIT (seconds, default 300).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCALE = os.path.join(ROOT, "bench", "scale")
FERRY = os.path.join(ROOT, "build", "ferry")


def median(vals):
    """The middle value (the upper one of an even count); None for no values."""
    v = sorted(vals)
    return v[len(v) // 2] if v else None


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


class Ctx:
    """What the matrix hands over: its bench() runner, RSS reader, durations, RowFailed."""
    bench = None
    rss_kb = None
    RowFailed = Exception
    quick = False
    d_throughput = 10
    d_latency = 10
    raw = None
    log = print


C = Ctx()
C.quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")  # rows() needs it before main() runs
BINDINGS = (1, 10_000, 100_000)


def quick_scale(n):
    return max(1, n // 10) if C.quick else n


# ---------------------------------------------------------------- row 10

def row10(b):
    out, notes = {}, []
    for n in BINDINGS:
        n = quick_scale(n) if n > 1 else 1
        t = time.time()
        r = C.bench(b, f"row10-{n}", "--topic-bindings", str(n), "--size", "16", "--duration", str(C.d_throughput),
                    timeout=1800)
        out[f"rate_{n}"] = r["consume_rate"]
        out[f"p99_{n}"] = (r.get("latency_ms") or {}).get("p99")
        notes.append(f"{n:,} bindings: set-up and run {time.time() - t:.0f} s")
    first, last = out[f"rate_{1}"], out[f"rate_{quick_scale(100_000)}"]
    out["drop"] = first / last if last else None
    out["_note"] = "; ".join(notes)
    return out


# ---------------------------------------------------------------- row 11

def queues_tool(b, n, op, first=0):
    host, port = b.host_port
    p = subprocess.run([sys.executable, os.path.join(SCALE, "queues.py"), host, str(port), str(n), "r11-idle-", op,
                        "--first", str(first), "--rss-pid", str(b.pid())], capture_output=True, text=True,
                       timeout=7200)
    try:
        r = json.loads(p.stdout)
    except ValueError:
        raise C.RowFailed((p.stderr.strip() or f"queues.py exit {p.returncode}").splitlines()[-1])
    if r.get("error"):
        raise C.RowFailed(r["error"])
    return r


def row11(b):
    target = quick_scale(100_000)
    if b.name == "rabbitmq":
        target = min(target, int(os.environ.get("BENCH_ROW11_RABBIT_QUEUES", "20000")))
    stages = [s for s in (0, quick_scale(10_000), target) if s <= target]
    base, _ = C.rss_kb(b.pid())
    out, curve, rates = {"queues": target}, [], []
    declared, secs = 0, 0.0
    for s in stages:
        if s > declared:
            r = queues_tool(b, s - declared, "declare", first=declared)
            secs += r["seconds"]
            curve += r["curve"]
            declared = s
            time.sleep(2)
        # row 1 on one queue among them (its own queue r11-q0, declared beside the idle ones)
        rr = C.bench(b, f"row11-{s}", "--size", "16", "--duration", str(C.d_throughput))
        rates.append([s, rr["consume_rate"]])
    held, _ = C.rss_kb(b.pid())
    out["declare_rate"] = declared / secs if secs else None
    out["per_queue_kib"] = (held - base) / declared if declared else None
    out["rate_0"] = rates[0][1]
    out["rate_all"] = rates[-1][1]
    out["_curve"] = curve
    out["_rates"] = rates
    t = time.time()
    queues_tool(b, declared, "delete")
    out["_note"] = (f"{declared:,} queues (every other one durable) declared in {secs:.1f} s; RSS {base / 1024:.0f} → "
                    f"{held / 1024:.0f} MiB; deleted in {time.time() - t:.0f} s")
    return out


# ---------------------------------------------------------------- row 12

ROW12 = ["--producers", "2", "--queues", "1000", "--consumers", "100", "--consumers-per-queue", "10", "--size", "256"]


def row12(b):
    r = C.bench(b, "row12", *ROW12, "--rate", "50000", "--duration", str(C.d_latency), timeout=900)
    lat = r.get("latency_ms") or {}
    m = C.bench(b, "row12-max", *ROW12, "--duration", str(C.d_throughput), timeout=900)
    behind = r["consumed"] < 0.99 * r["published"] or r["published"] < 0.97 * 50000 * C.d_latency
    return {"delivered": r["consume_rate"], "p99": lat.get("p99"), "p999": lat.get("p999"),
            "max_rate": m["consume_rate"],
            "_note": ("could not keep the fixed rate: " if behind else "") +
                     f"published {r['published']:,}, delivered {r['consumed']:,} at the fixed rate; "
                     f"unlimited: {m['consume_rate']:,.0f} msg/s"}


# ---------------------------------------------------------------- row 13

ROW13 = [(65536, False, "64k"), (65536, True, "64k_p"), (1 << 20, False, "1m"), (1 << 20, True, "1m_p")]


ROW13_REPEAT = 3


def row13(b):
    """Each size and mode ROW13_REPEAT times, each run between two runs of its baseline (the
    plain TCP copy for transient, dd with fdatasync for persistent): this machine's virtual
    disk swings between 0.5 and 2.3 GB/s from one minute to the next, so a broker run is
    compared with the baseline measured around it, not minutes away. Reports the median rate,
    the median ratio and their spread."""
    out = {}
    for size, pers, key in ROW13:
        extra = ["--persistent", "--confirm", "64", "--ack-every", "8", "--prefetch", "64"] if pers else []
        kind = "dd" if pers else "tcp"
        rates, ratios, bases = [], [], []
        before = baseline_once(kind, size)
        for i in range(1 if C.quick else ROW13_REPEAT):
            r = C.bench(b, f"row13-{key}-{i}", "--size", str(size), "--duration", str(C.d_throughput), *extra,
                        timeout=900)
            after = baseline_once(kind, size)
            rate = r["consume_rate"] * size / 1e6  # MB/s
            base = (before + after) / 2
            rates.append(rate)
            bases.append(base)
            ratios.append(rate / base if base else 0.0)
            before = after
        out[key] = median(rates)
        out[f"{key}_runs"] = rates
        out[f"{key}_base"] = bases
        out[f"{key}_ratio"] = median(ratios)
        out[f"{key}_ratios"] = ratios
    return out


_tcpcopy_built = []


def tcpcopy_tool():
    """bench/scale/tcpcopy.c, compiled once per run (never a stale binary of an older source)."""
    tool = os.path.join(C.raw, "tcpcopy")
    if not _tcpcopy_built:
        subprocess.run(["cc", "-O2", "-o", tool, os.path.join(SCALE, "tcpcopy.c")], check=True)
        _tcpcopy_built.append(tool)
    return tool


def baseline_once(kind, size):
    """One run of a row-13 baseline, MB/s: a plain TCP copy between two C processes
    (bench/scale/tcpcopy.c) or dd with fdatasync of 1 GiB to the disk of the brokers' data
    directories (the temp dir)."""
    if kind == "tcp":
        p = subprocess.run([tcpcopy_tool(), str(size), "2" if C.quick else "5"], capture_output=True, text=True,
                           check=True)
        return json.loads(p.stdout)["bytes_per_s"] / 1e6
    d = tempfile.mkdtemp(prefix="ferry-dd-")
    try:
        total = 256 << 20 if C.quick else 1 << 30
        t = time.time()
        subprocess.run(["dd", "if=/dev/zero", f"of={d}/f", f"bs={size}", f"count={total // size}", "conv=fdatasync"],
                       capture_output=True, check=True)
        return total / (time.time() - t) / 1e6
    finally:
        if os.path.exists(f"{d}/f"):
            os.unlink(f"{d}/f")
        os.rmdir(d)


def baselines():
    """The plain TCP copy (64 KiB and 1 MiB writes) and dd with fdatasync (same sizes) on the
    disk the brokers' data directories are on (the temp dir), on their own. Min/median/max of 3."""
    res = {}
    for size, key in ((65536, "64k"), (1 << 20, "1m")):
        res[f"tcp_{key}"] = sorted(baseline_once("tcp", size) for _ in range(3))
        res[f"dd_{key}"] = sorted(baseline_once("dd", size) for _ in range(3))
    return res


# ---------------------------------------------------------------- row 14

def row14(b):
    sizes = env_list("BENCH_ROW14_RABBIT_SIZES" if b.name == "rabbitmq" else "BENCH_ROW14_SIZES",
                     "1000000" if b.name == "rabbitmq" else "1000000,10000000")
    if C.quick:
        sizes = [100_000]
    out, runs = {}, []
    for n in sizes:
        cmd = [sys.executable, os.path.join(SCALE, "recovery.py"), b.name, str(n)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        with open(os.path.join(C.raw, f"{b.name}-row14-{n}.json"), "w") as f:
            f.write(p.stdout + p.stderr)
        try:
            r = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise C.RowFailed((p.stderr.strip() or "recovery.py failed").splitlines()[-1])
        if not r.get("ok"):
            raise C.RowFailed(r.get("error"))
        runs.append(r)
        tag = f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"
        for cache in ("warm", "cold"):
            c = r.get(cache) or {}
            if "first_s" in c:
                out[f"{cache}_accept_{tag}"] = c["accept_s"]
                out[f"{cache}_first_{tag}"] = c["first_s"]
                out[f"{cache}_rss_{tag}"] = c["rss_first_mib"]
                if c.get("lost"):
                    out.setdefault("_lost", []).append(f"{cache} {n:,}: {c['lost']:,} lost")
    out["_runs"] = runs
    out["_note"] = "; ".join(f"{r['messages']:,}: filled in {r['fill_s']} s, {r['disk_mib']:,} MiB on disk" for r in runs)
    if out.get("_lost"):
        out["_note"] += "; LOST: " + ", ".join(out["_lost"])
    if 10_000_000 not in sizes and not C.quick:
        out["_note"] += ("; 10,000,000 not run for this broker (BENCH_ROW14_RABBIT_SIZES: filling 10 GiB at its "
                         "confirm rate and recovering it takes longer than the run allows)")
    return out


# ---------------------------------------------------------------- row 15

def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_load(limit, max_s):
    """Waits until the 1-minute load average is under limit; (waited s, load, met)."""
    t = time.time()
    while True:
        la = loadavg()
        if la < limit:
            return time.time() - t, la, True
        if time.time() - t >= max_s:
            return time.time() - t, la, False
        time.sleep(5)


def row15(b):
    max_wait = float(os.environ.get("BENCH_QUIET_LOAD_WAIT", "30" if C.quick else "300"))
    runs = []
    for i in range(5):
        waited, la, met = wait_load(0.3, max_wait)
        r = C.bench(b, f"row15-{i}", "--rate", "10000", "--size", "256", "--duration", str(C.d_latency))
        lat = r.get("latency_ms") or {}
        runs.append({"p99": lat.get("p99"), "p999": lat.get("p999"), "load": la, "waited": round(waited),
                     "busy": not met})
        C.log(f"{b.name} row 15 run {i + 1}: load {la:.2f} ({'quiet' if met else 'machine busy'}), "
              f"p99 {lat.get('p99')} ms, p99.9 {lat.get('p999')} ms")
    p99s = sorted(x["p99"] for x in runs if x["p99"] is not None)
    p999s = sorted(x["p999"] for x in runs if x["p999"] is not None)
    busy = sum(x["busy"] for x in runs)
    out = {"p99_med": median(p99s), "p99_max": p99s[-1] if p99s else None,
           "p999_med": median(p999s), "p999_max": p999s[-1] if p999s else None,
           "busy_runs": busy, "_runs": runs}
    out["_note"] = (f"{busy} of 5 runs started on a busy machine (load ≥ 0.3 after waiting {max_wait:.0f} s): "
                    if busy else "every run started with load < 0.3: ") + \
        ", ".join(f"p99 {x['p99']:.3f} / p99.9 {x['p999']:.3f} ms (load {x['load']:.2f}"
                  f"{', busy' if x['busy'] else ''})" for x in runs if x["p99"] is not None)
    return out


# ---------------------------------------------------------------- rows, as matrix.py lists them

def rows():
    n100k = quick_scale(100_000)
    return [
        (10, "topic exchange, 1 / 10,000 / 100,000 bindings, 16 B", row10,
         [("rate_1", "msg/s, 1 binding", True), (f"rate_{quick_scale(10_000)}", "msg/s, 10,000 bindings", True),
          (f"rate_{n100k}", "msg/s, 100,000 bindings", True), ("drop", "drop 1 → 100,000 (×)", False)]),
        (11, "100,000 idle queues, half durable (RabbitMQ: see notes)", row11,
         [("declare_rate", "declares/s", True), ("per_queue_kib", "KiB RSS per idle queue", False),
          ("rate_0", "row 1 msg/s, no idle queues", True), ("rate_all", "row 1 msg/s among them", True)]),
        (12, "10,000 consumers, 1,000 queues, 100 connections, 256 B", row12,
         [("delivered", "delivered/s at fixed 50,000/s", True), ("p99", "latency p99 ms", False),
          ("p999", "latency p99.9 ms", False), ("max_rate", "unlimited rate msg/s", True)]),
        (13, "large messages, 1P/1C (MB/s)", row13,
         [("64k", "64 KiB transient MB/s", True), ("64k_p", "64 KiB persistent MB/s", True),
          ("1m", "1 MiB transient MB/s", True), ("1m_p", "1 MiB persistent MB/s", True)]),
        (14, "recovery after kill -9, N × 1 KiB queued", row14,
         [("warm_accept_1m", "1 M warm: accept s", False), ("warm_first_1m", "1 M warm: first delivery s", False),
          ("warm_rss_1m", "1 M warm: RSS MiB", False), ("cold_first_1m", "1 M cold: first delivery s", False),
          ("warm_first_10m", "10 M warm: first delivery s", False), ("warm_rss_10m", "10 M warm: RSS MiB", False),
          ("cold_first_10m", "10 M cold: first delivery s", False)]),
        (15, "row 6 × 5, each started at load < 0.3", row15,
         [("p99_med", "p99 ms, median of 5", False), ("p99_max", "p99 ms, worst of 5", False),
          ("p999_med", "p99.9 ms, median of 5", False), ("busy_runs", "runs on a busy machine", False)]),
    ]


COMMANDS = {
    10: "build/ferry bench --topic-bindings N --size 16 --duration 10   (N = 1, 10000, 100000)",
    11: "bench/scale/queues.py HOST PORT 100000 r11-idle- declare --rss-pid PID; build/ferry bench --size 16 "
        "--duration 10; bench/scale/queues.py HOST PORT 100000 r11-idle- delete",
    12: "build/ferry bench " + " ".join(ROW12) + " --rate 50000 --duration 10   (and without --rate)",
    13: "build/ferry bench --size 65536|1048576 --duration 10 [--persistent --confirm 64 --ack-every 8 --prefetch 64], "
        "3 times, each between two runs of its baseline: bench/scale/tcpcopy CHUNK 5 (transient) or "
        "dd if=/dev/zero of=DATA/f bs=CHUNK count=... conv=fdatasync (persistent)",
    14: "bench/scale/recovery.py ferry|rabbitmq 1000000   (and 10000000)",
    15: "BENCH_ROWS=15 make bench   (5 × build/ferry bench --rate 10000 --size 256 --duration 10, each after "
        "waiting for load < 0.3)",
}


def fmtv(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def section(res, base, repeat_note):
    """The issue-14 section of latest.md: targets with verdicts, baselines, commands."""
    f, r = res["ferry"], res["rabbitmq"]
    L = ["## Growing loads (issue 14, rows 10–15)", "",
         "Each row ran once per broker in this run (row 15: 5 runs); the machine's 2 cores were shared "
         "with other work, so compare ratios, not absolute numbers. " + repeat_note, ""]
    g = lambda d, k: d.get(k) if isinstance(d, dict) else None  # noqa: E731
    n100k = quick_scale(100_000)
    f10, r10 = f.get(10, {}), r.get(10, {})
    L.append("| row | target | measured | verdict |")
    L.append("|---|---|---|---|")

    def ratio(a, b):
        return a / b if a and b else None

    def verdict(ok, *vals):
        return "not measured" if any(v is None for v in vals) else ("met" if ok else "missed")

    x = ratio(g(f10, f"rate_{n100k}"), g(r10, f"rate_{n100k}"))
    L.append(f"| 10 | ≥ 10× RabbitMQ at 100,000 bindings; ≤ 2× drop 1 → 100,000 | "
             f"{fmtv(x, 1)}× RabbitMQ; drop {fmtv(g(f10, 'drop'), 2)}× | "
             f"{verdict(x and x >= 10 and (g(f10, 'drop') or 99) <= 2, x, g(f10, 'drop'))} |")
    f11, r11 = f.get(11, {}), r.get(11, {})
    x = ratio(g(f11, "declare_rate"), g(r11, "declare_rate"))
    kib = g(f11, "per_queue_kib")
    L.append(f"| 11 | declare ≥ 10× RabbitMQ; < 2 KiB per idle queue | {fmtv(x, 1)}× RabbitMQ; "
             f"{fmtv(kib, 2)} KiB/queue | {verdict(x and x >= 10 and kib is not None and kib < 2, x, kib)} |")
    f12, r12 = f.get(12, {}), r.get(12, {})
    x = ratio(g(f12, "max_rate"), g(r12, "max_rate"))
    x50 = ratio(g(f12, "delivered"), g(r12, "max_rate"))
    L.append(f"| 12 | ≥ 10× RabbitMQ's sustainable rate | at the fixed 50,000/s ferry delivers "
             f"{fmtv(g(f12, 'delivered'))}/s = {fmtv(x50, 1)}× RabbitMQ's unlimited {fmtv(g(r12, 'max_rate'))}/s; "
             f"unlimited ferry {fmtv(x, 1)}× | {verdict(x and x >= 10, x)} (p99 at 50,000/s "
             f"{fmtv(g(f12, 'p99'), 1)} ms) |")
    f13 = f.get(13, {})
    for key, label, kind in (("64k", "64 KiB transient", "tcp"), ("1m", "1 MiB transient", "tcp"),
                             ("64k_p", "64 KiB persistent", "dd"), ("1m_p", "1 MiB persistent", "dd")):
        what = "plain TCP copy" if kind == "tcp" else "dd + fdatasync"
        x, xs, bs = g(f13, f"{key}_ratio"), g(f13, f"{key}_ratios"), g(f13, f"{key}_base")
        if xs:  # each run against the baseline measured around it
            L.append(f"| 13 | {label} within 2× of {what} | {fmtv(g(f13, key))} MB/s (median of {len(xs)}) vs "
                     f"{fmtv(median(bs))} MB/s measured around each run; ratio {fmtv(x, 2)} "
                     f"(runs: {', '.join(fmtv(v, 2) for v in xs)}) | {verdict(x and x >= 0.5, x)}"
                     f"{'' if not x or x < 0.5 or min(xs) >= 0.5 else ' at the median (not in every run)'} |")
            continue
        bl = base.get(f"{kind}_{key.replace('_p', '')}") if base else None
        med = bl[1] if bl else None
        x = ratio(g(f13, key), med)
        L.append(f"| 13 | {label} within 2× of {what} | {fmtv(g(f13, key))} MB/s vs {fmtv(med)} MB/s "
                 f"(= {fmtv(x, 2)}) | {verdict(x and x >= 0.5, x)} |")
    f14 = f.get(14, {})
    w = g(f14, "warm_first_1m")
    L.append(f"| 14 | 1,000,000 recovered in ≤ 2 s warm; report cold | warm: accept {fmtv(g(f14, 'warm_accept_1m'), 2)} s, "
             f"first delivery {fmtv(w, 2)} s; cold {fmtv(g(f14, 'cold_first_1m'), 2)} s; 10,000,000 warm "
             f"{fmtv(g(f14, 'warm_first_10m'), 2)} s, cold {fmtv(g(f14, 'cold_first_10m'), 2)} s | "
             f"{verdict(w is not None and w <= 2, w)} |")
    f15 = f.get(15, {})
    busy = g(f15, "busy_runs")
    L.append(f"| 15 | p99 < 0.3 ms in every run, started at load < 0.3; p99.9 goal < 1 ms | worst p99 "
             f"{fmtv(g(f15, 'p99_max'), 3)} ms, median p99.9 {fmtv(g(f15, 'p999_med'), 3)} ms; "
             f"{fmtv(busy)} of 5 runs on a busy machine | "
             f"{'not judged: machine busy' if busy else ('met' if (g(f15, 'p99_max') or 9) < 0.3 else 'missed')} |")
    L.append("")
    if base:
        L += ["Row 13 baselines (this machine, this run; min / median / max of 3): plain TCP copy between two C "
              "processes over loopback (`bench/scale/tcpcopy.c`): "
              f"64 KiB writes {' / '.join(fmtv(v) for v in base['tcp_64k'])} MB/s, 1 MiB writes "
              f"{' / '.join(fmtv(v) for v in base['tcp_1m'])} MB/s; `dd if=/dev/zero bs=… conv=fdatasync` of 1 GiB "
              f"to the data disk: 64 KiB blocks {' / '.join(fmtv(v) for v in base['dd_64k'])} MB/s, 1 MiB blocks "
              f"{' / '.join(fmtv(v) for v in base['dd_1m'])} MB/s. A broker's message crosses loopback twice "
              "(publisher → broker → consumer) and the load generator's threads share the same two cores.", ""]
    L += ["Reproduce one row: `BENCH_ROWS=N make bench`; the commands each row runs:", ""]
    for n, cmd in COMMANDS.items():
        L.append(f"- row {n}: `{cmd}`")
    L += ["", "Charts: `scale-bindings.png` (row 10), `scale-queues.png` (row 11), `scale-recovery.png` (row 14).", ""]
    return L


def charts(res, outdir, suffix=""):
    """gnuplot: rate vs bindings (10), rate and RSS vs queues (11), recovery time vs messages (14)."""
    raw = C.raw
    files = []
    # row 10
    dat = os.path.join(raw, "scale10.dat")
    with open(dat, "w") as fh:
        for n in BINDINGS:
            k = f"rate_{quick_scale(n) if n > 1 else 1}"
            fv = res["ferry"].get(10, {}).get(k)
            rv = res["rabbitmq"].get(10, {}).get(k)
            fh.write(f"{quick_scale(n) if n > 1 else 1} {fv or 'NaN'} {rv or 'NaN'}\n")
    png10 = os.path.join(outdir, f"scale-bindings{suffix}.png")
    gp = f"""set terminal pngcairo size 800,500 font "sans,10"
set output "{png10}"
set datafile missing "NaN"
set logscale xy
set grid
set key top right
set xlabel "topic bindings on the exchange"
set ylabel "delivered msg/s (16 B, 1P/1C)"
set title "Row 10: topic routing rate vs bindings"
plot "{dat}" using 1:2 with linespoints lw 2 pt 7 title "ferry", "" using 1:3 with linespoints lw 2 pt 5 title "rabbitmq"
"""
    files.append((gp, png10))
    # row 11: row-1 rate vs idle queues, and RSS vs queues
    d1 = os.path.join(raw, "scale11-rate.dat")
    d2 = os.path.join(raw, "scale11-rss.dat")
    with open(d1, "w") as fh:
        for name in ("ferry", "rabbitmq"):
            for q, rate in res[name].get(11, {}).get("_rates", []):
                fh.write(f"{max(q, 1)} {rate}\n")
            fh.write("\n\n")
    with open(d2, "w") as fh:
        for name in ("ferry", "rabbitmq"):
            for q, _t, rss in res[name].get(11, {}).get("_curve", []):
                fh.write(f"{q} {(rss or 0) / 1024}\n")
            fh.write("\n\n")
    png11 = os.path.join(outdir, f"scale-queues{suffix}.png")
    gp11 = f"""set terminal pngcairo size 1200,480 font "sans,10"
set output "{png11}"
set multiplot layout 1,2 title "Row 11: 100,000 queues (half durable); RabbitMQ measured to {res['rabbitmq'].get(11, {}).get('queues', 'n/a')} queues"
set grid
set key top right
set logscale y
set xlabel "idle queues beside the bench queue (1 = none)"
set ylabel "row 1 delivered msg/s"
set logscale x
set title "row 1 rate vs idle queues"
plot "{d1}" index 0 using 1:2 with linespoints lw 2 pt 7 title "ferry", "" index 1 using 1:2 with linespoints lw 2 pt 5 title "rabbitmq"
unset logscale x
set xlabel "queues declared"
set ylabel "broker RSS MiB"
set title "RSS vs queues"
plot "{d2}" index 0 using 1:2 with linespoints lw 2 pt 7 title "ferry", "" index 1 using 1:2 with linespoints lw 2 pt 5 title "rabbitmq"
unset multiplot
"""
    files.append((gp11, png11))
    # row 14
    d3 = os.path.join(raw, "scale14.dat")
    with open(d3, "w") as fh:
        for name in ("ferry", "rabbitmq"):
            for cache in ("warm", "cold"):
                for run in res[name].get(14, {}).get("_runs", []):
                    c = run.get(cache) or {}
                    if "first_s" in c:
                        fh.write(f"{run['messages']} {c['first_s']}\n")
                fh.write("\n\n")
    png14 = os.path.join(outdir, f"scale-recovery{suffix}.png")
    gp14 = f"""set terminal pngcairo size 800,500 font "sans,10"
set output "{png14}"
set logscale xy
set grid
set key top left
set xlabel "1 KiB messages queued at kill -9"
set ylabel "seconds from start to first delivery"
set title "Row 14: recovery time vs messages"
plot "{d3}" index 0 using 1:2 with linespoints lw 2 pt 7 title "ferry, warm cache", \\
     "" index 1 using 1:2 with linespoints lw 2 pt 6 dt 2 title "ferry, cold cache", \\
     "" index 2 using 1:2 with linespoints lw 2 pt 5 title "rabbitmq, warm cache", \\
     "" index 3 using 1:2 with linespoints lw 2 pt 4 dt 2 title "rabbitmq, cold cache"
"""
    files.append((gp14, png14))
    for i, (text, _png) in enumerate(files):
        path = os.path.join(raw, f"scale-chart{i}.gp")
        with open(path, "w") as fh:
            fh.write(text)
        p = subprocess.run(["gnuplot", path], capture_output=True, text=True)
        if p.returncode != 0:
            C.log(f"gnuplot ({path}) failed: {p.stderr.strip()[-300:]}")
