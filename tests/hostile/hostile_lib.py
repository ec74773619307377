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



def still_serves(d):
    """A fresh connection can declare, publish and get one message back: the broker is alive
    and its loop is not stuck."""
    c = pika.BlockingConnection(params(d, socket_timeout=10, stack_timeout=15))
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"alive")
        for _ in range(200):
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m:
                return body == b"alive"
            c.sleep(0.01)
        return False
    finally:
        c.close()
