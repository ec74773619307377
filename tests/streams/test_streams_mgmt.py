"""Streams in the management API and /metrics: a stream's size, first and last offsets, and
each named consumer's offset and lag (src/mgmt_stream.c)."""
import base64
import json
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
