"""A duration run ends even when the broker stops reading the publisher's socket without a
word (flow control, a backlog it cannot work off — RabbitMQ over TLS does this under row 1's
unbounded publisher): 10 s after the deadline without a byte taken, `ferry bench` gives up on
what it still holds, does not count it as published, and reports instead of waiting for ever.

The broker here is a stub that speaks just enough AMQP for `ferry bench --no-consume` and
stops reading a connection at its first basic.publish."""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "malformed"))
from rawamqp import long_, method_frame, shortstr, table, longstr, short, octet  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(s, stalled):
    try:
        recv_exact(s, 8)
        s.sendall(method_frame(0, (10, 10), octet(0) + octet(9) + table({}) + longstr(b"PLAIN") + longstr(b"en_US")))
        while True:
            ftype, channel, size = struct.unpack(">BHI", recv_exact(s, 7))
            payload = recv_exact(s, size + 1)[:-1]
            if ftype != 1:
                continue
            cls, meth = struct.unpack(">HH", payload[:4])
            reply = {(10, 11): ((10, 30), short(2047) + long_(131072) + short(0)),
                     (10, 40): ((10, 41), shortstr("")),
                     (20, 10): ((20, 11), longstr(b"")),
                     (50, 40): ((50, 41), long_(0)),
                     (10, 50): ((10, 51), b"")}.get((cls, meth))
            if (cls, meth) == (50, 10):  # queue.declare: echo the name
                name = payload[7:7 + payload[6]].decode()
                reply = ((50, 11), shortstr(name) + long_(0) + long_(0))
            if (cls, meth) == (60, 40):  # basic.publish: stop reading this connection
                stalled.set()
                time.sleep(60)
                return
            if reply:
                s.sendall(method_frame(channel, *reply))
            if (cls, meth) == (10, 50):
                return
    except (EOFError, OSError):
        pass
    finally:
        s.close()


def test_a_duration_run_gives_up_on_a_broker_that_stops_reading():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    stalled = threading.Event()

    def accept_loop():
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c, stalled), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    t0 = time.time()
    p = subprocess.run([FERRY, "bench", "--uri", f"amqp://guest:guest@127.0.0.1:{port}/", "--json", "--quiet",
                        "--no-consume", "--size", "10000", "--duration", "1"], capture_output=True, text=True,
                       timeout=40)
    took = time.time() - t0
    lsock.close()
    assert stalled.is_set()
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    r = json.loads(p.stdout)
    assert r["ok"], r
    assert 10 <= took < 25, took
    # the socket buffers took a few MB before the stub stopped reading: that many messages at
    # most are counted, not what was still waiting in the generator's buffer
    assert 0 < r["published"] < 3000, r
