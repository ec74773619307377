"""Streams in the management API, /metrics and `ferry streams`: a stream's size, first and
last offsets, and each named consumer's offset and lag (src/mgmt_stream.c, cli/mgmt_streams.c)."""
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from ferryd import free_port, wait_port
from streamlib import connect, declare, publish_confirmed

pytestmark = pytest.mark.ferry_only  # ferryd's behaviour (FERRY_TEST_AMQP_URL: skipped)


def get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    return urllib.request.urlopen(req, timeout=10).read().decode()


def test_stream_fields_and_metrics(ferryd_factory):
    port = free_port()
    d = ferryd_factory("--http-port", str(port))
    wait_port("127.0.0.1", port, 10, d.proc)
    c = connect(d.url)
    ch = c.channel()
    declare(ch, "ev", **{"x-stream-max-segment-size-bytes": 2000})
    empty = json.loads(get(port, "/api/queues/%2F/ev"))
    assert empty["type"] == "stream" and empty["stream"]["first_offset"] is None and empty["stream"]["bytes"] == 0
    publish_confirmed(d.url, "ev", [b"x" * 100 for _ in range(50)])
    ch.basic_qos(prefetch_count=20)
    got = []

    def on(ch_, m, p, b):
        got.append(p.headers["x-stream-offset"])
        if len(got) <= 30:
            ch_.basic_ack(m.delivery_tag)
    ch.basic_consume("ev", on, arguments={"x-stream-offset": "first", "x-ferry-offset-name": "billing"})
    deadline = time.monotonic() + 10
    while len(got) < 50 and time.monotonic() < deadline:
        c.process_data_events(0.1)
    assert len(got) == 50
    q = json.loads(get(port, "/api/queues/%2F/ev"))
    s = q["stream"]
    assert q["type"] == "stream" and q["committed_offset"] == 49
    assert s["first_offset"] == 0 and s["last_offset"] == 49 and s["segments"] >= 3 and s["bytes"] > 50 * 100
    assert s["named_consumers"] == [{"name": "billing", "offset": 30, "lag": 20, "active": True}]
    listed = [x for x in json.loads(get(port, "/api/queues")) if x["name"] == "ev"]
    assert listed and listed[0]["stream"]["last_offset"] == 49
    text = get(port, "/metrics")
    lines = set(text.splitlines())
    assert 'ferry_stream_last_offset{vhost="/",queue="ev"} 49' in lines
    assert 'ferry_stream_first_offset{vhost="/",queue="ev"} 0' in lines
    assert 'ferry_stream_consumer_lag{vhost="/",queue="ev",name="billing"} 20' in lines
    assert 'ferry_stream_consumer_offset{vhost="/",queue="ev",name="billing"} 30' in lines
    assert f'ferry_stream_bytes{{vhost="/",queue="ev"}} {s["bytes"]}' in lines
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert "error" not in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
    c.close()
    time.sleep(0.2)
    after = json.loads(get(port, "/api/queues/%2F/ev"))["stream"]["named_consumers"]
    assert after == [{"name": "billing", "offset": 30, "lag": 20, "active": False}]


FERRY = os.environ.get("FERRY_CLI") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "ferry")


def cli(*args):
    p = subprocess.run([FERRY, "streams", *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_ferry_streams_lists_sizes_offsets_and_lag(ferryd_factory):
    port = free_port()
    d = ferryd_factory("--http-port", str(port))
    wait_port("127.0.0.1", port, 10, d.proc)
    url = f"http://guest:guest@127.0.0.1:{port}"
    assert cli("--url", url) == (0, "no streams\n", "")
    c = connect(d.url)
    ch = c.channel()
    declare(ch, "orders")
    ch.queue_declare("not-a-stream")
    publish_confirmed(d.url, "orders", [b"o" * 100 for _ in range(10)])
    ch.basic_qos(prefetch_count=10)
    seen = []

    def on(ch_, m, p, b):
        seen.append(1)
        if p.headers["x-stream-offset"] < 6:
            ch_.basic_ack(m.delivery_tag)
    ch.basic_consume("orders", on, arguments={"x-stream-offset": "first", "x-ferry-offset-name": "billing"})
    deadline = time.monotonic() + 10
    while len(seen) < 10 and time.monotonic() < deadline:
        c.process_data_events(0.1)
    time.sleep(1.1)  # the queue list is a snapshot at most 1 s old (http_queues.c)
    rc, out, err = cli("--url", url)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert rows[0] == ["vhost", "stream", "size", "segments", "first", "last", "consumers"]
    assert rows[1][:2] == ["/", "orders"] and rows[1][-4:] == ["1", "0", "9", "1"]
    assert "not-a-stream" not in out
    assert rows[2] == ["vhost", "stream", "named", "consumer", "offset", "lag", "in", "use"]
    assert rows[3] == ["/", "orders", "billing", "6", "4", "yes"]
    rc, out, _ = cli("--url", url, "--json")
    js = json.loads(out)
    assert rc == 0 and [q["name"] for q in js] == ["orders"] and js[0]["stream"]["named_consumers"][0]["lag"] == 4
    assert cli("--url", url, "--vhost", "nope")[0] == 1
    assert cli("--url", "http://guest:guest@127.0.0.1:1")[0] == 3
    assert cli("--url", url, "--bogus")[0] == 2
    c.close()
