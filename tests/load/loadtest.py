"""Bounded load test of ferryd on loopback (issue 8, must-show 2).

While connections open and close by the thousand and confirm publishers run, a flood of
publishes to consumers that never read their sockets pushes ferryd past its
--memory-high-watermark. It must block publishers (connection.blocked), never drop them,
hold its RSS under the watermark plus a stated margin, unblock them once memory is released,
and lose no confirmed message.

    python3 tests/load/loadtest.py            # the full run (`make load`)
    python3 tests/load/loadtest.py --smoke    # the scaled-down run that `make test` does

Every phase is bounded in count and time; a figure that misses its bound fails the run
(exit 1) and the figures are printed as one JSON line either way. The broker is the
optimised build (build/ferryd): ASan's shadow memory and quarantine would distort RSS.
"""
import argparse
import json
import multiprocessing
import os
import resource
import select
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "lib"), os.path.join(HERE, "..", "malformed")]

import rawamqp as R  # noqa: E402
from ferryd import ROOT, Ferryd  # noqa: E402

CONNECTION_BLOCKED = (10, 60)
CONNECTION_UNBLOCKED = (10, 61)
CONFIRM_SELECT = (85, 10)
CONFIRM_SELECT_OK = (85, 11)
BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
BASIC_DELIVER = (60, 60)
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
QUEUE_PURGE = (50, 30)
QUEUE_PURGE_OK = (50, 31)

FULL = dict(churn=5000, churn_threads=8, publishers=10, noread=1000, watermark=256 << 20,
            margin=64 << 20, flood_body=64 << 10, hold_s=5, deadline_s=300)
SMOKE = dict(churn=400, churn_threads=4, publishers=4, noread=100, watermark=32 << 20,
             margin=48 << 20, flood_body=32 << 10, hold_s=2, deadline_s=50)


def handshake(host, port, heartbeat=0, rcvbuf=None, timeout=20.0):
    """A raw connection through connection.open-ok (announces connection.blocked)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    c = R.Connection.__new__(R.Connection)
    c.sock, c.buf, c.start, c.tune = s, b"", None, None
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.send_header()
    c.start = c.expect(R.CONNECTION_START, timeout)
    c.send_start_ok(client_properties={"product": "ferry-load", "capabilities": {
        "connection.blocked": True, "authentication_failure_close": True}})
    c.tune = c.expect(R.CONNECTION_TUNE, timeout)
    c.send_tune_ok(heartbeat=heartbeat)
    c.send_open()
    c.expect(R.CONNECTION_OPEN_OK, timeout)
    return c


def publish(queue, body, persistent):
    props = R.octet(2) if persistent else b""
    flags = 1 << 12 if persistent else 0
    return (R.method_frame(1, R.BASIC_PUBLISH, R.basic_publish_args("", queue)) +
            R.header_frame(1, len(body), flags=flags, props=props) + R.body_frame(1, body))


class Peer:
    """A non-blocking raw AMQP client driven by pump(): an output buffer written as the
    socket takes it, frames parsed as they come, heartbeats sent every second."""

    def __init__(self, conn, heartbeat):
        self.c, self.sock = conn, conn.sock
        self.sock.setblocking(False)
        self.out = bytearray()
        self.inb = bytearray(conn.buf)
        self.heartbeat = heartbeat
        self.last_hb = time.monotonic()
        self.closed = None  # why the server dropped us, if it did
        self.blocked_seen = self.unblocked_seen = 0
        self.blocked = False

    def send(self, data):
        self.out += data

    def pump(self, timeout):
        """Writes and reads for up to timeout; returns the frames read."""
        if self.closed:
            return []
        now = time.monotonic()
        if self.heartbeat and now - self.last_hb >= 1.0:
            self.out += R.heartbeat_frame()
            self.last_hb = now
        r, w, _ = select.select([self.sock], [self.sock] if self.out else [], [], timeout)
        try:
            if w:
                n = self.sock.send(self.out[:1 << 20])
                del self.out[:n]
            if r:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    self.closed = "EOF"
                    return []
                self.inb += chunk
        except BlockingIOError:
            pass
        except OSError as e:
            self.closed = repr(e)
            return []
        frames = []
        while len(self.inb) >= 8:
            ftype, ch, size = struct.unpack(">BHI", self.inb[:7])
            if len(self.inb) < size + 8:
                break
            f = R.Frame(ftype, ch, bytes(self.inb[7:7 + size]))
            del self.inb[:size + 8]
            if f.method == CONNECTION_BLOCKED:
                self.blocked, self.blocked_seen = True, self.blocked_seen + 1
            elif f.method == CONNECTION_UNBLOCKED:
                self.blocked, self.unblocked_seen = False, self.unblocked_seen + 1
            elif f.method == R.CONNECTION_CLOSE:
                self.closed = f"connection.close {f.args}"
            frames.append(f)
        return frames


def confirm_publisher(host, port, queue, stop, result, window=64):
    """Publishes persistent messages (bodies are their sequence numbers) to a durable queue in
    confirm mode; records which were confirmed, nacked, and whether it was dropped."""
    c = handshake(host, port, heartbeat=2)
    c.open_channel(1)
    c.send(R.method_frame(1, CONFIRM_SELECT, R.bits(False)))
    c.expect(CONFIRM_SELECT_OK)
    p = Peer(c, heartbeat=2)
    seq, confirmed, nacked, outstanding = 0, set(), set(), []
    drain_until = None
    while True:
        if stop.is_set() and drain_until is None:
            drain_until = time.monotonic() + 30
        if drain_until is not None and (not outstanding or time.monotonic() > drain_until):
            break
        if drain_until is None and len(outstanding) < window and not p.blocked:
            seq += 1
            outstanding.append(seq)
            p.send(publish(queue, b"%d" % seq + b"." * 200, persistent=True))
        for f in p.pump(0.005 if len(outstanding) < window and not p.blocked else 0.2):
            if f.method in (BASIC_ACK, BASIC_NACK):
                tag = struct.unpack(">Q", f.payload[4:12])[0]
                multiple = f.payload[12] & 1
                done = [s for s in outstanding if s <= tag] if multiple else [tag]
                (confirmed if f.method == BASIC_ACK else nacked).update(done)
                outstanding = [s for s in outstanding if s not in set(done)]
        if p.closed:
            break
    result.update(queue=queue, published=seq, confirmed=sorted(confirmed), nacked=len(nacked),
                  unconfirmed=len(outstanding), dropped=p.closed, blocked=p.blocked_seen,
                  unblocked=p.unblocked_seen)
    c.close()


def churn_worker(host, port, count, out):
    """Opens and closes connections one after another (full handshake, connection.close,
    close-ok); counts the ones that failed."""
    ok = failed = 0
    errors = []
    for _ in range(count):
        try:
            c = handshake(host, port, timeout=30)
            c.send(R.method_frame(0, R.CONNECTION_CLOSE, R.connection_close_args(200, "bye")))
            c.expect(R.CONNECTION_CLOSE_OK, 30)
            c.close()
            ok += 1
        except Exception as e:  # noqa: BLE001 - any failure is counted and reported
            failed += 1
            if len(errors) < 5:
                errors.append(repr(e))
    out.put((ok, failed, errors))


def churn_process(host, port, total, threads, out):
    """A process of its own (the GIL would starve the publishers): threads of churn_worker."""
    import queue as q
    results = q.Queue()
    ts = [threading.Thread(target=churn_worker, args=(host, port, total // threads, results)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok = failed = 0
    errors = []
    while not results.empty():
        a, b, e = results.get()
        ok, failed, errors = ok + a, failed + b, errors + e
    out.put((ok, failed, errors[:5]))


def rss_sampler(pid, stop, peak):
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak["rss"] = max(peak.get("rss", 0), int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.05)


def drain_ids(host, port, queue, expect_count, timeout):
    """Consumes a queue (no-ack) and returns the message bodies' sequence numbers."""
    c = handshake(host, port)
    c.open_channel(1)
    c.send(R.method_frame(1, BASIC_CONSUME, R.short(0) + R.shortstr(queue) + R.shortstr("") +
                          R.bits(False, True, False, False) + R.table({})))
    c.expect(BASIC_CONSUME_OK)
    ids = set()
    deadline = time.monotonic() + timeout
    while len(ids) < expect_count and time.monotonic() < deadline:
        try:
            f = c.recv_frame(max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if f.type == R.FRAME_BODY:
            ids.add(int(f.payload.split(b".", 1)[0]))
    c.close()
    return ids


def admin_call(c, frame, reply):
    """Sends a method and waits for its reply, skipping blocked/unblocked notifications."""
    c.send(frame)
    while True:
        f = c.recv_frame(30)
        if f.method == reply:
            return f
        if f.method not in (CONNECTION_BLOCKED, CONNECTION_UNBLOCKED):
            raise AssertionError(f"expected {reply}, got {f!r}")


def run(cfg, binary=None, log=print):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = cfg["noread"] + cfg["publishers"] + cfg["churn_threads"] + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    import tempfile
    tmp = tempfile.mkdtemp(prefix="ferry-load-")
    d = Ferryd(data_dir=os.path.join(tmp, "data"), binary=binary or os.path.join(ROOT, "build", "ferryd"),
               args=["--memory-high-watermark", str(cfg["watermark"])])
    d.start()
    fig = {"watermark": cfg["watermark"], "margin": cfg["margin"]}
    failures = []
    t_start = time.monotonic()
    try:
        admin = handshake(d.host, d.port)
        admin.open_channel(1)
        queues = [f"load-confirm-{i}" for i in range(cfg["publishers"])]
        for q in queues:
            admin_call(admin, R.method_frame(1, R.QUEUE_DECLARE, R.queue_declare_args(q, durable=True)),
                       R.QUEUE_DECLARE_OK)
        admin_call(admin, R.method_frame(1, R.QUEUE_DECLARE, R.queue_declare_args("load-noread")), R.QUEUE_DECLARE_OK)
        base_rss = {}
        rss_stop = threading.Event()
        threading.Thread(target=rss_sampler, args=(d.proc.pid, rss_stop, base_rss), daemon=True).start()

        # Consumers that never read: small receive buffers, no-ack, never a recv() again.
        noread = []
        for _ in range(cfg["noread"]):
            c = handshake(d.host, d.port, rcvbuf=4096)
            c.open_channel(1)
            c.send(R.method_frame(1, BASIC_CONSUME, R.short(0) + R.shortstr("load-noread") + R.shortstr("") +
                                  R.bits(False, True, False, False) + R.table({})))
            c.expect(BASIC_CONSUME_OK)
            noread.append(c)
        fig["noread_consumers"] = len(noread)
        log(f"{len(noread)} non-reading consumers up after {time.monotonic() - t_start:.1f} s")

        churn_out = multiprocessing.Queue()
        churn = multiprocessing.Process(target=churn_process,
                                        args=(d.host, d.port, cfg["churn"], cfg["churn_threads"], churn_out))
        churn.start()
        stop = threading.Event()
        results = [dict() for _ in queues]
        pubs = [threading.Thread(target=confirm_publisher, args=(d.host, d.port, q, stop, r))
                for q, r in zip(queues, results)]
        for t in pubs:
            t.start()

        # The flood: publishes to the non-reading consumers until ferryd blocks it.
        flood = Peer(handshake(d.host, d.port, heartbeat=2), heartbeat=2)
        flood.c.open_channel(1)
        flood.sock.setblocking(False)
        body = b"F" * cfg["flood_body"]
        sent = 0
        t_flood = time.monotonic()
        deadline = t_flood + cfg["deadline_s"] / 3
        while not flood.blocked_seen and not flood.closed and time.monotonic() < deadline:
            if len(flood.out) < (1 << 20):
                flood.send(publish("load-noread", body, persistent=False))
                sent += len(body)
            flood.pump(0)
        fig["flood_bytes_until_blocked"] = sent
        fig["blocked_after_s"] = round(time.monotonic() - t_flood, 2)
        if not flood.blocked_seen:
            failures.append(f"no connection.blocked after {sent} bytes of flood ({flood.closed})")
        log(f"flood blocked after {sent >> 20} MiB, {fig['blocked_after_s']} s")
        # Held blocked for a while: every publisher stays connected (heartbeats keep flowing).
        hold_end = time.monotonic() + cfg["hold_s"]
        while time.monotonic() < hold_end and not flood.closed:
            flood.pump(0.1)
            if len(flood.out) < (1 << 20):
                flood.send(publish("load-noread", body, persistent=False))
        # Release: the non-reading consumers go away and their queue is purged.
        for c in noread:
            c.close()
        admin_call(admin, R.method_frame(1, QUEUE_PURGE, R.short(0) + R.shortstr("load-noread") + R.bits(False)),
                   QUEUE_PURGE_OK)
        deadline = time.monotonic() + 30
        while not flood.unblocked_seen and not flood.closed and time.monotonic() < deadline:
            flood.pump(0.1)
        fig["unblocked"] = bool(flood.unblocked_seen)
        if not flood.unblocked_seen:
            failures.append(f"no connection.unblocked after the memory was released ({flood.closed})")
        if flood.closed:
            failures.append(f"the flood publisher was dropped: {flood.closed}")
        log(f"unblocked: {bool(flood.unblocked_seen)} after {time.monotonic() - t_flood:.1f} s of flood")

        churn.join(max(1, cfg["deadline_s"] - (time.monotonic() - t_start)))
        if churn.is_alive():
            churn.terminate()
            failures.append("connection churn did not finish in time")
            fig["churn_ok"], fig["churn_failed"] = 0, cfg["churn"]
        else:
            ok, failed, errors = churn_out.get(timeout=5)
            fig["churn_ok"], fig["churn_failed"] = ok, failed
            if failed or ok < cfg["churn"] - cfg["churn_threads"]:
                failures.append(f"connection churn: {ok} ok, {failed} failed {errors}")
        stop.set()
        for t in pubs:
            t.join(60)
        rss_stop.set()
        fig["rss_peak"] = base_rss.get("rss", 0)
        confirmed = sum(len(r.get("confirmed", [])) for r in results)
        lost = 0
        for r in results:
            if not r:
                failures.append("a confirm publisher did not report")
                continue
            got = drain_ids(d.host, d.port, r["queue"], len(r["confirmed"]), 60)
            lost += len(set(r["confirmed"]) - got)
        fig.update(confirmed=confirmed, lost=lost,
                   nacked=sum(r.get("nacked", 0) for r in results),
                   publishers_dropped=sum(1 for r in results if r.get("dropped")) + (1 if flood.closed else 0),
                   publishers_blocked=sum(1 for r in results if r.get("blocked")),
                   seconds=round(time.monotonic() - t_start, 1))
        if lost:
            failures.append(f"{lost} confirmed messages lost")
        if fig["publishers_dropped"]:
            failures.append(f"publishers dropped: {[r.get('dropped') for r in results if r.get('dropped')]}")
        if confirmed == 0:
            failures.append("no message was confirmed")
        if fig["rss_peak"] > cfg["watermark"] + cfg["margin"]:
            failures.append(f"RSS peak {fig['rss_peak'] >> 20} MiB over the watermark "
                            f"{cfg['watermark'] >> 20} MiB + margin {cfg['margin'] >> 20} MiB")
        admin.close()
        flood.c.close()
    finally:
        rc = d.stop()
        if rc != 0:
            failures.append(f"ferryd exited {rc} on SIGTERM")
    fig["failures"] = failures
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="the scaled-down run of make test")
    ap.add_argument("--ferryd", help="broker binary (default build/ferryd)")
    a = ap.parse_args()
    fig = run(SMOKE if a.smoke else FULL, binary=a.ferryd)
    print(json.dumps(fig))
    sys.exit(1 if fig["failures"] else 0)


if __name__ == "__main__":
    main()
