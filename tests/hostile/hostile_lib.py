"""Helpers the hostile tests import (a module of its own: `from conftest import ...` picks
whichever conftest.py was imported first when several directories are collected at once)."""
import pika


def proc_status(pid):
    """/proc/PID/status as a dict of kB figures (VmRSS, VmSize, VmHWM, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            parts = v.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[k] = int(parts[0])
    return out


def params(d, **kw):
    kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
    kw.setdefault("heartbeat", 0)
    kw.setdefault("blocked_connection_timeout", 20)
    kw.setdefault("socket_timeout", 20)
    kw.setdefault("stack_timeout", 30)
    kw.setdefault("connection_attempts", 1)
    return pika.ConnectionParameters(host=d.host, port=d.port, **kw)



def still_serves(d, timeout=15.0):
    """A fresh connection can declare a queue, publish and get the message back within
    timeout seconds: the broker is alive and its loop is not stuck. Raw sockets with a
    deadline on every read, so a livelocked broker fails the test instead of hanging it."""
    import time

    import pipeline as p
    from rawamqp import Connection
    deadline = time.monotonic() + timeout
    try:
        c = Connection(d.host, d.port, timeout=timeout)
    except OSError:
        return False
    try:
        c.handshake()
        c.open_channel(1)
        c.send(p.queue_declare("still-serves", exclusive=True) + p.publish("", "still-serves", b"alive"))
        while time.monotonic() < deadline:
            if p.get(c, "still-serves", timeout=max(0.1, deadline - time.monotonic())) == b"alive":
                return True
        return False
    except Exception:
        return False
    finally:
        c.close()
