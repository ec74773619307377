#!/usr/bin/python3
"""Row 14 (issue 14): recovery after kill -9 with N x 1 KiB persistent messages queued.

For one broker (ferry or rabbitmq) and one N: fill a durable queue with N persistent 1 KiB
messages (ferry bench, confirms), kill -9 the broker, start it again on the same data and
measure, from the moment it is started:
  - accept_s: until an AMQP connection opens (connection.open-ok),
  - first_s:  until the first message of the queue is delivered (basic.get, retried while
              the queue is not there yet or still empty),
  - count:    the queue's depth once recovered (must be N: nothing lost),
  - rss_mib:  the broker's RSS right after the first delivery and once settled.
Twice: with a warm page cache (restart at once) and a cold one (kill -9 again, then
`echo 3 > /proc/sys/vm/drop_caches`, which needs root; without it the cold run is n/a).
Prints one JSON object. Usage: recovery.py ferry|rabbitmq N [--ferryd PATH] [--keep-going]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import pika  # noqa: E402
from ferryd import Ferryd, free_port  # noqa: E402
import rabbitmq  # noqa: E402

FERRY = os.path.join(ROOT, "build", "ferry")
QUEUE = "rec-0"


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return None


def fill(url, n):
    t = time.time()
    p = subprocess.run([FERRY, "bench", "--uri", url, "--json", "--quiet", "--queue-prefix", "rec-",
                        "--persistent", "--no-consume", "--confirm", "2000", "--size", "1024",
                        "--count", str(n), "--timeout", "120"], capture_output=True, text=True)
    r = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    if not r.get("ok") or r.get("confirmed") != n:
        raise RuntimeError(f"fill failed: {p.stdout[-300:]} {p.stderr[-300:]}")
    return time.time() - t


def measure(start, url, pid_of, n, timeout):
    """Starts the broker (start()), then times the first connection and the first message."""
    host, port = url.split("@")[1].split("/")[0].split(":")
    params = pika.ConnectionParameters(host=host, port=int(port), credentials=pika.PlainCredentials("guest", "guest"),
                                       connection_attempts=1, socket_timeout=2, blocked_connection_timeout=30)
    t0 = time.time()
    start()
    conn = None
    while conn is None:
        if time.time() - t0 > timeout:
            raise RuntimeError("no connection within the timeout")
        try:
            conn = pika.BlockingConnection(params)
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.005)
    accept_s = time.time() - t0
    ch = conn.channel()
    first_s = None
    while first_s is None:
        if time.time() - t0 > timeout:
            raise RuntimeError("no delivery within the timeout")
        try:
            m, _p, body = ch.basic_get(QUEUE, auto_ack=False)  # left unacked: the count stays n
        except pika.exceptions.ChannelClosedByBroker:  # 404: not recovered yet
            ch = conn.channel()
            time.sleep(0.005)
            continue
        if m is None:
            time.sleep(0.005)
            continue
        first_s = time.time() - t0
        assert len(body) == 1024
    rss_first = rss_mib(pid_of())
    count = ch.queue_declare(QUEUE, passive=True).method.message_count + 1  # + the one we hold
    conn.close()
    # settled: RSS changes by < 1% over 2 s (max 30 s)
    samples = []
    t1 = time.time()
    while time.time() - t1 < 30:
        samples.append(rss_mib(pid_of()) or 0)
        if len(samples) >= 5 and abs(samples[-1] - samples[-5]) <= 0.01 * max(samples[-1], 1):
            break
        time.sleep(0.5)
    return {"accept_s": round(accept_s, 3), "first_s": round(first_s, 3), "count": count, "lost": n - count,
            "rss_first_mib": rss_first, "rss_settled_mib": samples[-1] if samples else None}


def drop_caches():
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class FerrySide:
    def __init__(self, binary, extra):
        self.dir = tempfile.mkdtemp(prefix="ferry-rec-")
        self.port = free_port()
        self.binary = binary
        self.extra = extra
        self.d = None

    def start(self):
        self.d = Ferryd(data_dir=os.path.join(self.dir, "data"), port=self.port, binary=self.binary, args=self.extra)
        self.d.start(timeout=600)  # returns once the port accepts; measure() times the AMQP side

    def start_nowait(self):
        self.d = Ferryd(data_dir=os.path.join(self.dir, "data"), port=self.port, binary=self.binary, args=self.extra)
        env = dict(os.environ)
        self.d.log = open(self.d.log_path, "ab")
        self.d.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--data-dir", self.d.data_dir,
                                        "--http-port", "0"] + self.extra, stdout=self.d.log,
                                       stderr=subprocess.STDOUT, env=env)

    def pid(self):
        return self.d.proc.pid

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def kill9(self):
        self.d.kill9()

    def disk_bytes(self):
        return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(self.dir) for f in fs)

    def cleanup(self):
        if self.d and self.d.running():
            self.d.stop(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitSide:
    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="rabbit-rec-")
        self.port = free_port()
        self.r = None

    def start(self):
        self.r = rabbitmq.RabbitMQ(base=self.base, port=self.port).start(timeout=600)

    def start_nowait(self):
        self.r = rabbitmq.RabbitMQ(base=self.base, port=self.port)
        env = self.r._env()
        self.r.log = open(os.path.join(self.base, "stdout.log"), "ab")
        self.r.proc = subprocess.Popen([rabbitmq.RABBIT_BIN], env=env, stdout=self.r.log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)

    def pid(self):
        return self.r.pid()

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def kill9(self):
        try:
            os.killpg(self.r.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.r.proc.wait()
        time.sleep(1)  # epmd forgets the node

    def disk_bytes(self):
        return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(self.base, "mnesia"))
                   for f in fs)

    def cleanup(self):
        if self.r:
            self.r.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker", choices=["ferry", "rabbitmq"])
    ap.add_argument("n", type=int)
    ap.add_argument("--ferryd", default=os.path.join(ROOT, "build", "ferryd"))
    ap.add_argument("--ferryd-arg", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--no-cold", action="store_true")
    a = ap.parse_args()
    side = FerrySide(a.ferryd, a.ferryd_arg) if a.broker == "ferry" else RabbitSide()
    out = {"broker": a.broker, "messages": a.n, "size": 1024}
    try:
        side.start()
        out["fill_s"] = round(fill(side.url, a.n), 1)
        side.kill9()
        out["disk_mib"] = round(side.disk_bytes() / 2**20, 1)
        out["warm"] = measure(side.start_nowait, side.url, side.pid, a.n, a.timeout)
        if not a.no_cold:
            side.kill9()
            if drop_caches():
                out["cold"] = measure(side.start_nowait, side.url, side.pid, a.n, a.timeout)
            else:
                out["cold"] = {"error": "drop_caches needs root"}
        out["ok"] = True
    except Exception as e:  # noqa: BLE001
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        side.cleanup()
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
