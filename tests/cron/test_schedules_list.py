"""Listing broker-held cron schedules: GET /api/ferry/schedules[/{vhost}] and `ferry schedules`
(name, vhost, exchange, cron, timezone, routing key, next tick, last fired tick). The next
ticks of zoned schedules are checked against Python's zoneinfo (the system tz database)."""
import base64
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zoneinfo

import pytest

from cron_util import connect, schedule, topology

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ferryd import ROOT, free_port, wait_port  # noqa: E402

pytestmark = pytest.mark.ferry_only
FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")


def api(port, path, method="GET", user="guest", password="guest"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"{}" if method in ("POST", "PUT") else None)
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body


@pytest.fixture
def node(ferryd_factory):
    port = free_port()
    d = ferryd_factory("--http-port", str(port))
    wait_port("127.0.0.1", port, 10, d.proc)
    d.http_port = port
    return d


def next_local(zone, hour, minute, after):
    """The first instant after `after` (Unix seconds) at hour:minute wall time in zone."""
    z = zoneinfo.ZoneInfo(zone)
    day = datetime.datetime.fromtimestamp(after, z).date()
    for k in range(3):
        d = day + datetime.timedelta(days=k)
        t = datetime.datetime(d.year, d.month, d.day, hour, minute, tzinfo=z).timestamp()
        if t > after:
            return int(t)
    raise AssertionError("no tick")


def by_name(items):
    return {s["name"]: s for s in items}


def test_api_lists_schedules_with_next_and_last_ticks(node, name):
    c = connect(node)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    before = time.time()
    schedule(ch, x, "beat", "*/2 * * * * *", key="k")
    schedule(ch, x, "kolkata-9am", "0 9 * * *", tz="Asia/Kolkata", key="reports")
    schedule(ch, x, "ny-0230", "30 2 * * *", tz="America/New_York", key="k")
    time.sleep(2.6)
    status, items = api(node.http_port, "/api/ferry/schedules")
    assert status == 200 and isinstance(items, list)
    s = by_name(items)
    assert set(s) == {"beat", "kolkata-9am", "ny-0230"}
    assert [i["name"] for i in items] == sorted(s)  # sorted by vhost, exchange, name
    k = s["kolkata-9am"]
    assert k["vhost"] == "/" and k["exchange"] == x and k["cron"] == "0 9 * * *"
    assert k["timezone"] == "Asia/Kolkata" and k["routing_key"] == "reports" and k["durable"] is True
    assert k["next_tick"] == next_local("Asia/Kolkata", 9, 0, before)
    assert k["next_tick_at"] == datetime.datetime.fromtimestamp(k["next_tick"], datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    assert k["last_fired_tick"] is None and k["last_fired_at"] is None
    assert s["ny-0230"]["next_tick"] == next_local("America/New_York", 2, 30, before)
    b = s["beat"]
    assert b["timezone"] == "" and b["last_fired_tick"] % 2 == 0 and b["last_fired_tick"] > before - 1
    assert b["next_tick"] == b["last_fired_tick"] + 2
    # per vhost, unknown vhost, read-only, authentication
    status, per_vhost = api(node.http_port, "/api/ferry/schedules/%2F")
    assert status == 200 and [i["name"] for i in per_vhost] == [i["name"] for i in items]
    assert api(node.http_port, "/api/ferry/schedules/no-such-vhost")[0] == 404
    assert api(node.http_port, "/api/ferry/schedules", method="POST")[0] == 405
    assert api(node.http_port, "/api/ferry/schedules", user=None)[0] == 401
    assert api(node.http_port, "/api/ferry/schedules", password="wrong")[0] == 401
    # removed: no longer listed; kept across a restart with its last fired tick
    schedule(ch, x, "ny-0230", "")
    c.close()
    assert set(by_name(api(node.http_port, "/api/ferry/schedules")[1])) == {"beat", "kolkata-9am"}
    node.stop()
    node.start()
    wait_port("127.0.0.1", node.http_port, 10, node.proc)
    time.sleep(0.3)
    after = by_name(api(node.http_port, "/api/ferry/schedules")[1])
    assert set(after) == {"beat", "kolkata-9am"}
    assert after["beat"]["last_fired_tick"] >= b["last_fired_tick"]
    assert after["kolkata-9am"]["next_tick"] == k["next_tick"]


def ferry(*args, env=None):
    e = dict(os.environ)
    e.pop("FERRY_URL", None)
    e.update(env or {})
    p = subprocess.run([FERRY, "schedules", *args], capture_output=True, text=True, timeout=30, env=e)
    return p.returncode, p.stdout, p.stderr


def test_ferry_schedules_command(node, name):
    c = connect(node)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "nightly-backup", "0 3 * * *", tz="Europe/Berlin", key="backup")
    schedule(ch, x, "heartbeat", "*/2 * * * * *")
    c.close()
    url = f"http://guest:guest@127.0.0.1:{node.http_port}"
    rc, out, err = ferry("--url", url)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["vhost", "exchange", "name", "cron"]
    row = next(line for line in lines if "nightly-backup" in line)
    assert "0 3 * * *" in row and "Europe/Berlin" in row and "backup" in row and "(in " in row
    assert any("heartbeat" in line and "UTC" in line for line in lines)
    rc, out, err = ferry("--url", url, "--json", "--name", "^night")
    assert rc == 0, err
    items = json.loads(out)
    assert [i["name"] for i in items] == ["nightly-backup"] and items[0]["timezone"] == "Europe/Berlin"
    # FERRY_URL as amqp:// with --http-port, as every management command takes it
    rc, out, err = ferry("--http-port", str(node.http_port), "--vhost", "/",
                         env={"FERRY_URL": f"amqp://guest:guest@127.0.0.1:{node.port}/"})
    assert rc == 0 and "nightly-backup" in out, err
    # exit codes: refused (unknown vhost, bad password) 1, bad usage 2, unreachable 3
    assert ferry("--url", url, "--vhost", "nope")[0] == 1
    assert ferry("--url", f"http://guest:wrong@127.0.0.1:{node.http_port}")[0] == 1
    rc, out, err = ferry("--url", url, "--bogus")
    assert rc == 2 and "--bogus" in err
    rc, out, err = ferry("--url", url, "--name", "(")
    assert rc == 2 and "--name" in err
    assert ferry("--url", f"http://guest:guest@127.0.0.1:{free_port()}")[0] == 3
    rc, out, err = ferry("--help")
    assert rc == 0 and "usage: ferry schedules" in out


def test_ferry_schedules_with_none(node):
    rc, out, err = ferry("--url", f"http://guest:guest@127.0.0.1:{node.http_port}")
    assert rc == 0 and out.strip() == "no schedules", (out, err)
    rc, out, err = ferry("--url", f"http://guest:guest@127.0.0.1:{node.http_port}", "--json")
    assert rc == 0 and json.loads(out) == []
