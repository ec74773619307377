"""Helpers of the libferry / `ferry worker` / `ferry publish` tests (tests/app/test_worker*.py,
test_publish*.py, test_rpc*.py, test_publisher*.py): the C test programs (built once with
`make app-test-progs`, ASan + UBSan), the `ferry` binary, a running worker, and pika look-ups.
"""
import json
import os
import signal
import subprocess
import time
import uuid

import pika
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")
_built = False


def prog(name):
    """Path of a C test program (tests/app/c/NAME.c), built on first use."""
    global _built
    if not _built:
        r = subprocess.run(["make", "-s", "app-test-progs"], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"make app-test-progs failed:\n{r.stdout}\n{r.stderr}"
        _built = True
    return os.path.join(ROOT, "build", "test", "app", name)


def qname(prefix="q"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def conn(url):
    return pika.BlockingConnection(pika.URLParameters(url))


def publish(url, queue, body=b"", **props):
    headers = props.pop("headers", None)
    c = conn(url)
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, headers=headers, **props))
    c.close()


def get_all(url, queue, want=1, timeout=10.0):
    """Takes messages from queue until `want` arrived (or timeout); returns [(props, body)]."""
    c = conn(url)
    ch = c.channel()
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        m, props, body = ch.basic_get(queue, auto_ack=True)
        if m:
            got.append((props, body))
        else:
            time.sleep(0.05)
    c.close()
    return got


def depth(url, queue):
    c = conn(url)
    n = c.channel().queue_declare(queue, passive=True).method.message_count
    c.close()
    return n


def delete_queues(url, *queues):
    c = conn(url)
    for q in queues:
        ch = c.channel()
        try:
            ch.queue_delete(q)
        except Exception:
            c = conn(url)
    c.close()


_live = []


@pytest.fixture(autouse=True)
def reap_workers():
    """Kills (by PID) every worker a test started and did not stop: a failed assertion must
    not leave a `ferry worker` reconnecting to a broker that is gone."""
    yield
    while _live:
        w = _live.pop()
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


class Worker:
    """A `ferry worker` process; stderr (its log) kept in a file."""

    def __init__(self, broker, queue, cmd, *flags, env=None, tmp_path=None):
        self.log_path = os.path.join(str(tmp_path or "/tmp"), f"worker-{uuid.uuid4().hex[:6]}.log")
        args = [FERRY, "worker", "--uri", broker.url, "--queue", queue]
        if broker.kind == "cluster":
            args += ["--queue-type", "quorum"]
        args += list(flags) + ["--"] + list(cmd)
        e = dict(os.environ)
        e.pop("FERRY_URL", None)
        if env:
            e.update(env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, env=e)
        _live.append(self)

    def wait_consuming(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "consuming" in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"worker did not start consuming:\n{self.text()}")

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"worker did not stop on SIGTERM:\n{self.text()}")
        self.log.close()
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def lines(path):
    try:
        with open(path) as f:
            return [l.rstrip("\n") for l in f if l.strip()]
    except FileNotFoundError:
        return []


def records(path):
    """Lines of JSON written by the job scripts."""
    return [json.loads(l) for l in lines(path)]
