"""Helpers of the outbox and idempotent-consumer tests: the application database (SQLite or
PostgreSQL) with ferry_outbox in it, the relay as a process, and reading queues back."""
import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid

import pika

from brokers import ROOT

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def cli_path():
    return os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")


_built = []


def idem_consumer_path():
    """tests/app/c/idem_consumer.c built with ASan + UBSan by the Makefile (once a session)."""
    if os.environ.get("FERRY_IDEM_CONSUMER"):
        return os.environ["FERRY_IDEM_CONSUMER"]
    if not _built:
        r = subprocess.run(["make", "-s", "build/test/app/idem_consumer"], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"building idem_consumer failed:\n{r.stdout}\n{r.stderr}"
        _built.append(1)
    return os.path.join(ROOT, "build", "test", "app", "idem_consumer")


class AppDb:
    """The application's database: .url is what --db takes; insert() writes outbox rows the
    way an application in any language would (plain SQL in its own transaction)."""

    def __init__(self, kind, url, path=None):
        self.kind, self.url, self.path = kind, url, path

    def connect(self):
        if self.kind == "sqlite":
            c = sqlite3.connect(self.path, timeout=10)
            return c
        import psycopg2
        return psycopg2.connect(self.url)

    def schema(self):
        r = subprocess.run([cli_path(), "outbox", "schema", "--db", self.url], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r

    def insert(self, rows):
        """rows: dicts with event_id, aggregate_id, exchange, routing_key, headers (dict),
        content_type, body (bytes); one transaction."""
        c = self.connect()
        ph = "?" if self.kind == "sqlite" else "%s"
        sql = (f"INSERT INTO ferry_outbox (event_id, aggregate_id, exchange, routing_key, headers, content_type, body) "
               f"VALUES ({', '.join([ph] * 7)})")
        try:
            cur = c.cursor()
            for r in rows:
                body = r.get("body", b"")
                cur.execute(sql, (r["event_id"], r["aggregate_id"], r.get("exchange", ""), r.get("routing_key", ""),
                                  json.dumps(r.get("headers", {})), r.get("content_type"),
                                  body if self.kind == "sqlite" else bytes(body)))
            c.commit()
        finally:
            c.close()  # (a refused insert must not leave SQLite's write lock held)

    def query(self, sql):
        c = self.connect()
        cur = c.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        c.close()
        return rows

    def execute(self, sql):
        c = self.connect()
        c.cursor().execute(sql)
        c.commit()
        c.close()

    def pending(self):
        return self.query("SELECT count(*) FROM ferry_outbox WHERE sent_at IS NULL")[0][0]

    def sent(self):
        return self.query("SELECT count(*) FROM ferry_outbox WHERE sent_at IS NOT NULL")[0][0]


def make_db(kind, tmp_path, pg_server=None):
    if kind == "sqlite":
        path = str(tmp_path / f"app-{uuid.uuid4().hex[:6]}.db")
        db = AppDb("sqlite", f"sqlite:{path}", path)
    else:
        db = AppDb("postgresql", pg_server.create_db())
    db.schema()
    return db


def events(n_aggs, per_agg, exchange="", routing_key="q", interleave=True, prefix=None):
    """Events seq 0..per_agg-1 for aggregates a0..; interleaved across aggregates by default."""
    prefix = prefix or uuid.uuid4().hex[:8]
    out = []
    order = ([(s, a) for s in range(per_agg) for a in range(n_aggs)] if interleave
             else [(s, a) for a in range(n_aggs) for s in range(per_agg)])
    for s, a in order:
        out.append({"event_id": f"{prefix}-a{a}-{s}", "aggregate_id": f"a{a}", "exchange": exchange,
                    "routing_key": routing_key, "headers": {"seq": s, "agg": f"a{a}"},
                    "content_type": "application/json", "body": json.dumps({"a": a, "s": s}).encode()})
    return out


class Relay:
    """`ferry outbox relay` as a process; stop() sends SIGTERM and checks a clean exit."""

    def __init__(self, db_url, uri, *args, env=None, log_path=None):
        self.log_path = log_path or f"/tmp/ferry-relay-{uuid.uuid4().hex[:8]}.log"
        e = dict(os.environ)
        e.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([cli_path(), "outbox", "relay", "--db", db_url, "--uri", uri] + list(args),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=e)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait(self, timeout=30):
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        t = self.text()
        assert not [m for m in SANITIZER_MARKERS if m in t], t[-3000:]
        assert rc == 0, f"relay exited {rc}:\n{t[-2000:]}"
        return t

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def sent_count(self):
        """The count in the relay's last line: 'stopped (N events sent)'."""
        import re
        m = re.findall(r"stopped \((\d+) events sent\)", self.text())
        return int(m[-1]) if m else None


def conn(url):
    return pika.BlockingConnection(pika.URLParameters(url))


def declare(broker, q, args=None):
    c = conn(broker.url)
    c.channel().queue_declare(q, durable=True, arguments=broker.queue_args(args))
    c.close()


def depth(broker, q):
    c = conn(broker.url)
    n = c.channel().queue_declare(q, passive=True).method.message_count
    c.close()
    return n


def wait_depth(broker, q, n, timeout=30):
    deadline = time.time() + timeout
    d = -1
    while time.time() < deadline:
        d = depth(broker, q)
        if d >= n:
            return d
        time.sleep(0.1)
    raise AssertionError(f"queue {q} has {d} messages after {timeout}s, expected {n}")


def drain(broker, q, settle=0.5):
    """Every message in q (basic.get until empty for `settle` seconds): [(props, body)]."""
    c = conn(broker.url)
    ch = c.channel()
    out = []
    quiet_since = time.time()
    while time.time() - quiet_since < settle:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            time.sleep(0.05)
            continue
        out.append((p, b))
        quiet_since = time.time()
    c.close()
    return out


def delete(broker, *queues):
    c = conn(broker.url)
    ch = c.channel()
    for q in queues:
        ch.queue_delete(q)
    c.close()
