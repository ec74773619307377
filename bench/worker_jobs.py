#!/usr/bin/python3
"""Worker throughput, jobs/s of no-op jobs (issue 12, must-show 3), on a fresh ferryd:

  1. `ferry worker -- /bin/true`: one process spawned per job (CMD = /bin/true);
  2. libferry's C worker in-process (bench/worker_capi.c): a handler that only counts;
  3. Celery (python3-celery, prefork pool) on ferryd with a no-op task, acks_late and
     prefetch multiplier 1 (so it acks after running, as the other two do);
  and Sidekiq's published 23,500 jobs/s as the reference (not measured here).

Each is run RUNS times (default 3; BENCH_WORKER_RUNS); the median and the spread (min-max) go
into their own section of bench/results/latest.md ("Workers: jobs/s"), replacing it if present.
The queue is filled first and the clock runs from the worker's first job to an empty queue, so
only the workers are measured. The machine is shared (2 cores, other helpers' builds and tests):
see the load average recorded with the results.

  BENCH_WORKER_JOBS=2000       jobs per run of `ferry worker` and Celery (the C worker runs 10x)
  BENCH_WORKER_CONCURRENCY=4   jobs at once (processes, threads) for all three
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from ferryd import Ferryd  # noqa: E402

import pika  # noqa: E402

RUNS = int(os.environ.get("BENCH_WORKER_RUNS", "3"))
JOBS = int(os.environ.get("BENCH_WORKER_JOBS", "2000"))
CONC = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "4"))
FERRY = os.path.join(ROOT, "build", "ferry")
CAPI = os.path.join(ROOT, "build", "bench", "worker_capi")
SIDEKIQ = 23500


def depth(url, q):
    c = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return c.channel().queue_declare(q, passive=True).method.message_count
    finally:
        c.close()


def fill(url, q, n, body=b"{}", declare_args=None, celery_task=None):
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.queue_declare(q, durable=True, arguments=declare_args)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2, message_id=str(i)))
    c.close()


def wait_empty(url, q, timeout=600):
    """Polls the queue until it is empty; returns the time it was first seen empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if depth(url, q) == 0:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"queue {q} not drained in {timeout}s")


def run_cli(url, i):
    q = f"bench-cli-{i}"
    # declare it as the worker would (so the worker finds it as it wants it), then fill it
    w = subprocess.Popen([FERRY, "worker", "--uri", url, "--queue", q, "--concurrency", str(CONC),
                          "--prefetch", str(CONC * 2), "--retry", "", "--", "/bin/true"],
                         stderr=subprocess.PIPE, text=True)
    line = w.stderr.readline()
    assert "consuming" in line, line
    w.send_signal(15)
    w.wait(30)
    fill(url, q, JOBS, declare_args={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q + ".dead"})
    w = subprocess.Popen([FERRY, "worker", "--uri", url, "--queue", q, "--concurrency", str(CONC),
                          "--prefetch", str(CONC * 2), "--retry", "", "--", "/bin/true"],
                         stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    # the first job starts as soon as it consumes: time from the worker's start (connect and
    # declare included, a few ms) to an empty queue
    t1 = wait_empty(url, q)
    w.send_signal(15)
    w.wait(60)
    return JOBS / (t1 - t0)


def run_capi(url, i):
    n = JOBS * 10
    out = subprocess.run([CAPI, url, f"bench-capi-{i}", str(n), str(CONC), str(CONC * 64)], capture_output=True,
                         text=True, timeout=600)
    m = re.search(r'"jobs_per_s": (\d+)', out.stdout)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


CELERY_APP = '''
from celery import Celery
app = Celery("benchapp", broker="{url}")
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_default_queue = "{queue}"
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False

@app.task(ignore_result=True)
def noop():
    return None
'''


def run_celery(url, i, tmp):
    q = f"bench-celery-{i}"
    curl = url.replace("amqp://", "pyamqp://")
    d = os.path.join(tmp, f"celery{i}")
    os.makedirs(d)
    with open(os.path.join(d, "benchapp.py"), "w") as f:
        f.write(CELERY_APP.format(url=curl, queue=q))
    # enqueue with Celery itself (its message format), before any worker runs
    fill_code = ("import benchapp\nfor _ in range(%d): benchapp.noop.delay()\n" % JOBS)
    subprocess.run([sys.executable, "-c", fill_code], cwd=d, check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert depth(url, q) == JOBS
    w = subprocess.Popen([sys.executable, "-m", "celery", "-A", "benchapp", "worker", "-Q", q, "--pool", "prefork",
                          "--concurrency", str(CONC), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                          "--without-heartbeat"], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Celery starts slowly (imports, forking the pool): the clock starts when the queue first
    # moves, so start-up is not counted against it
    deadline = time.monotonic() + 120
    while depth(url, q) >= JOBS:
        if time.monotonic() > deadline:
            raise RuntimeError("celery did not start consuming")
        time.sleep(0.01)
    t0 = time.monotonic()
    t1 = wait_empty(url, q)
    w.send_signal(15)
    try:
        w.wait(60)
    except subprocess.TimeoutExpired:
        w.kill()
        w.wait()
    return (JOBS - CONC) / (t1 - t0)  # the first CONC were taken before t0


def run_spawn_baseline(i):
    """What the machine gives for starting /bin/true at all: a shell loop, one at a time."""
    n = JOBS // 2
    t0 = time.monotonic()
    subprocess.run(["/bin/bash", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)
    return n / (time.monotonic() - t0)


def fmt(xs):
    med = statistics.median(xs)
    return f"{med:,.0f}", f"{min(xs):,.0f} – {max(xs):,.0f}"


def main():
    tmp = tempfile.mkdtemp(prefix="bench-worker-")
    d = Ferryd(data_dir=os.path.join(tmp, "data"), binary=os.path.join(ROOT, "build", "ferryd"))
    d.start()
    results = {"cli": [], "capi": [], "celery": [], "spawn": []}
    load = []
    try:
        for i in range(RUNS):
            load.append(os.getloadavg()[0])
            results["cli"].append(run_cli(d.url, i))
            results["capi"].append(run_capi(d.url, i))
            results["celery"].append(run_celery(d.url, i, tmp))
            results["spawn"].append(run_spawn_baseline(i))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} jobs/s" for k, v in results.items()), flush=True)
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    cli, capi, cel, sp = fmt(results["cli"]), fmt(results["capi"]), fmt(results["celery"]), fmt(results["spawn"])
    section = f"""## Workers: jobs/s (issue 12)

`make bench-worker` (`bench/worker_jobs.py`), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit {commit}:
no-op jobs on a fresh ferryd (release build), {CONC} at a time, each worker acking after the job
ran; the queue is filled first; median of {RUNS} runs and the spread (min – max). The machine
was shared with other work (2 cores; 1-minute load average {min(load):.1f} – {max(load):.1f} at the
runs' starts), so the spread is wide and the absolute figures low.

| worker | jobs per run | jobs/s (median) | spread |
|---|---:|---:|---:|
| `ferry worker --concurrency {CONC} -- /bin/true` (a process per job) | {JOBS:,} | {cli[0]} | {cli[1]} |
| libferry C worker in-process (`bench/worker_capi.c`, {CONC} threads, prefetch {CONC * 64}) | {JOBS * 10:,} | {capi[0]} | {capi[1]} |
| Celery {celery_version()} on ferryd (prefork, concurrency {CONC}, acks_late, prefetch multiplier 1) | {JOBS:,} | {cel[0]} | {cel[1]} |
| Sidekiq (reference: its published figure, not measured here) | — | 23,500 | — |
| baseline, no broker: a bash loop starting `/bin/true` one after another | {JOBS // 2:,} | {sp[0]} | {sp[1]} |

Runs: `ferry worker` {', '.join(f'{x:,.0f}' for x in results['cli'])}; C worker {', '.join(f'{x:,.0f}' for x in results['capi'])}; Celery {', '.join(f'{x:,.0f}' for x in results['celery'])}.
`ferry worker` is bound by starting a process per job (the baseline row shows what starting
/bin/true costs on this machine at the time); the C worker by one ack per job through
rabbitmq-c; Celery runs its no-op task inside its pool processes (no process per job).
Sidekiq's figure is its own benchmark on other hardware (Redis, Ruby threads): a reference point
for the order of magnitude, not a measurement beside these.
"""
    path = os.path.join(ROOT, "bench", "results", "latest.md")
    text = open(path).read() if os.path.exists(path) else ""
    pat = re.compile(r"## Workers: jobs/s \(issue 12\)\n.*?(?=\n## |\Z)", re.S)
    if pat.search(text):
        text = pat.sub(section.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)
    print(section)


def celery_version():
    try:
        import celery
        return celery.__version__
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
