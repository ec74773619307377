"""`ferry publish`: a message confirmed by the broker (exit 0) or an error (exit 1: no such
exchange, unroutable with --mandatory; 2: bad usage naming the flag; 3: no broker), headers and
properties as given, and --event's envelope with the documented CloudEvents mapping; the
correlation and causation ids come from a job's environment (FERRY_CORRELATION_ID,
FERRY_MESSAGE_ID)."""
import json
import os
import subprocess
import time

import pytest

from apptools import FERRY, conn, get_all, qname


def run(args, stdin=b"", env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    e.update(env or {})
    return subprocess.run([FERRY, "publish"] + args, input=stdin, capture_output=True, env=e, timeout=30)


def declare(url, q):
    c = conn(url)
    c.channel().queue_declare(q, durable=True)
    c.close()


@pytest.mark.cluster_short
def test_publish_body_headers_properties_confirmed(app_broker):
    q = qname("pubcli")
    declare(app_broker.url, q)
    r = run(["--uri", app_broker.url, "--routing-key", q, "--header", "tenant=acme", "--property",
             "message_id=m-1", "--property", "content_type=text/plain", "--property", "priority=3", "--json"],
            stdin=b"hello from stdin")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"confirmed": True, "message_id": "m-1"}
    (props, body), = get_all(app_broker.url, q)
    assert body == b"hello from stdin"
    assert props.message_id == "m-1" and props.content_type == "text/plain" and props.priority == 3
    assert props.delivery_mode == 2
    assert props.headers == {"tenant": "acme"}


def test_publish_event_writes_the_envelope(app_broker):
    q = qname("pubevt")
    declare(app_broker.url, q)
    before = int(time.time())
    r = run(["--uri", app_broker.url, "--routing-key", q, "--event", "order.placed", "--source", "/orders",
             "--data", '{"order": 42}', "--schema-version", "2", "--aggregate-id", "order-42", "--sequence", "7",
             "--subject", "42", "--id", "evt-1"],
            env={"FERRY_CORRELATION_ID": "corr-9", "FERRY_MESSAGE_ID": "job-msg-3"})
    assert r.returncode == 0, r.stderr
    (p, body), = get_all(app_broker.url, q)
    assert json.loads(body) == {"order": 42}
    assert p.message_id == "evt-1" and p.type == "order.placed" and p.content_type == "application/json"
    assert p.correlation_id == "corr-9"
    assert before <= p.timestamp <= int(time.time()) + 1
    h = p.headers
    assert h["cloudEvents:specversion"] == "1.0" and h["cloudEvents:source"] == "/orders"
    assert h["cloudEvents:schemaversion"] == 2 and h["cloudEvents:sequence"] == 7
    assert h["cloudEvents:aggregateid"] == "order-42" and h["cloudEvents:subject"] == "42"
    assert h["cloudEvents:causationid"] == "job-msg-3"
    assert h["cloudEvents:time"].endswith("Z") and h["cloudEvents:time"][:4].isdigit()


def test_publish_event_gets_a_fresh_uuid(app_broker):
    q = qname("pubuuid")
    declare(app_broker.url, q)
    for _ in range(2):
        assert run(["--uri", app_broker.url, "--routing-key", q, "--event", "t", "--source", "/s",
                    "--data", "[]"]).returncode == 0
    got = get_all(app_broker.url, q, want=2)
    ids = [p.message_id for p, _ in got]
    assert len(set(ids)) == 2 and all(len(i) == 36 and i[14] == "4" for i in ids)
    assert all(p.correlation_id is None for p, _ in got)


def test_publish_refusals_exit_1(app_broker):
    r = run(["--uri", app_broker.url, "--exchange", "no-such-exchange", "--body", "x"])
    assert r.returncode == 1 and b"404" in r.stderr
    r = run(["--uri", app_broker.url, "--routing-key", qname("nobody"), "--mandatory", "--body", "x"])
    assert r.returncode == 1 and b"unroutable" in r.stderr
    # without --mandatory the broker confirms an unroutable message (AMQP: it took it)
    assert run(["--uri", app_broker.url, "--routing-key", qname("nobody"), "--body", "x"]).returncode == 0


@pytest.mark.parametrize("args, names", [
    (["--bogus"], b"--bogus"),
    (["--header", "novalue"], b"--header"),
    (["--property", "colour=red", "--body", "x"], b"colour"),
    (["--property", "delivery_mode=7", "--body", "x"], b"delivery_mode"),
    (["--event", "t", "--data", "{}"], b"--source"),
    (["--event", "t", "--source", "/s", "--data", "{not json"], b"--data"),
    (["--event", "t", "--source", "/s", "--data", "{}", "--sequence", "0", "--aggregate-id", "a"], b"--sequence"),
    (["--event", "t", "--source", "/s", "--data", "{}", "--sequence", "3"], b"--aggregate-id"),
    (["--source", "/s"], b"--event"),
    (["--timeout", "10"], b"--timeout"),
    (["--routing-key"], b"--routing-key"),
])
def test_publish_bad_usage_exits_2_naming_the_flag(args, names):
    r = run(["--uri", "amqp://guest:guest@127.0.0.1:1/"] + args)
    assert r.returncode == 2, r.stderr
    assert names in r.stderr


def test_publish_unreachable_broker_exits_3():
    r = run(["--uri", "amqp://guest:guest@127.0.0.1:1/", "--body", "x"])
    assert r.returncode == 3 and b"cannot reach" in r.stderr


def test_publish_uses_ferry_url_and_turns_http_into_amqp(app_broker):
    q = qname("pubenv")
    declare(app_broker.url, q)
    assert run(["--routing-key", q, "--body", "a"], env={"FERRY_URL": app_broker.url}).returncode == 0
    # an http:// FERRY_URL (the management convention) names the same host on AMQP's 5672:
    # here nothing listens there, so it must fail to connect rather than use the URL as is
    r = run(["--routing-key", q, "--body", "b"], env={"FERRY_URL": "http://guest:guest@127.0.0.2:1/"})
    assert r.returncode == 3 and b"amqp://guest:guest@127.0.0.2:5672/" in r.stderr
    assert [b for _, b in get_all(app_broker.url, q)] == [b"a"]


def test_publish_large_body_from_stdin(app_broker):
    q = qname("publarge")
    declare(app_broker.url, q)
    body = os.urandom(3 * 1024 * 1024)
    assert run(["--uri", app_broker.url, "--routing-key", q], stdin=body).returncode == 0
    (_, got), = get_all(app_broker.url, q)
    assert got == body
