"""Helpers for the cron tests: connecting, a topology, publishing a schedule, and reading
the ticks (x-ferry-scheduled-at) of the copies a schedule routed."""
import calendar
import datetime
import time

import pika


def connect(broker):
    p = pika.URLParameters(broker.url)
    p.heartbeat = 0
    return pika.BlockingConnection(p)


def topology(ch, name, durable=True):
    """A durable x-delayed-message exchange (direct) with a durable queue bound on key 'k'."""
    x, q = name("x"), name("q")
    ch.exchange_declare(x, "x-delayed-message", durable=durable, arguments={"x-delayed-type": "direct"})
    ch.queue_declare(q, durable=durable)
    ch.queue_bind(q, x, "k")
    return x, q


def schedule(ch, x, sched_name, cron, body=b"tick", tz=None, key="k", headers=None, **props):
    """Publishes a schedule (with confirms if the channel has them)."""
    h = dict(headers or {})
    h["x-ferry-cron"] = cron
    if tz is not None:
        h["x-ferry-timezone"] = tz
    ch.basic_publish(x, key, body, pika.BasicProperties(message_id=sched_name, headers=h, delivery_mode=2, **props))


def tick_of(props):
    """The x-ferry-scheduled-at header as Unix seconds."""
    v = props.headers["x-ferry-scheduled-at"]
    if isinstance(v, datetime.datetime):
        return calendar.timegm(v.utctimetuple())
    return int(v)


def drain(ch, q, seconds):
    """Gets every message from q for `seconds` (acking each): [(tick, redelivered, props, body)]."""
    out = []
    end = time.time() + seconds
    while time.time() < end:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            time.sleep(0.05)
            continue
        out.append((tick_of(p), m.redelivered, p, b))
    return out


def wait_until_second(parity, frac=0.3):
    """Sleeps until wall time is at an odd (parity 1) or even (0) second plus frac: between
    ticks of an every-2-seconds schedule, away from the instants they fire."""
    while True:
        now = time.time()
        if int(now) % 2 == parity and now - int(now) >= frac:
            return
        time.sleep(0.02)


def recovered_at(d):
    """When the restarted ferryd armed its recovered schedules (Unix seconds) and how many
    had a tick missed while down, from its log line "cron: N schedules recovered, M with a
    tick missed while down". Ticks up to this instant fell while it was down or starting."""
    lines = [ln for ln in d.log_text().splitlines() if "schedules recovered" in ln]
    assert lines, "no 'schedules recovered' line in the ferryd log"
    ln = lines[-1]
    stamp = ln.split(" ", 1)[0]
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
    missed = int(ln.split("schedules recovered, ")[1].split(" ", 1)[0])
    return t, missed
