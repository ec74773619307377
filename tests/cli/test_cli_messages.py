"""`ferry get`, `ferry purge`, `ferry consume`: what they print, what they leave in the queue
(checked over AMQP with a passive declare, which is exact at once), and their exit codes."""
import decimal
import json
import os
import signal
import subprocess
import time

import pika

from clilib import FERRY, ferry


def depth(b, name):
    conn, ch = b.channel()
    try:
        return ch.queue_declare(name, passive=True).method.message_count
    finally:
        conn.close()


def publish(b, name, bodies, props=None, declare=True):
    conn, ch = b.channel()
    try:
        if declare:
            ch.queue_declare(name, durable=True)
        for body in bodies:
            ch.basic_publish("", name, body, props or pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def test_get_requeues_by_default_and_shows_properties(mgmt_broker, name):
    props = pika.BasicProperties(delivery_mode=2, content_type="text/plain", correlation_id="c-42",
                                 headers={"tenant": "acme", "n": 7})
    publish(mgmt_broker, name, [b"hello world", b"second"], props)
    try:
        r = ferry("get", name, url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        assert "routing key:   " + name in r.stdout
        assert "hello world" in r.stdout and "second" not in r.stdout
        assert '"correlation_id":"c-42"' in r.stdout and '"tenant":"acme"' in r.stdout
        assert depth(mgmt_broker, name) == 2  # requeued
        r = ferry("get", name, "--count", "2", "--json", url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        msgs = json.loads(r.stdout)
        assert [m["payload"] for m in msgs] == ["hello world", "second"]
        m = msgs[0]
        assert m["redelivered"] is True  # it went back once already
        assert m["exchange"] == "" and m["routing_key"] == name and m["payload_bytes"] == 11
        assert m["payload_encoding"] == "string"
        assert m["properties"]["headers"] == {"tenant": "acme", "n": 7}
        assert m["properties"]["content_type"] == "text/plain" and m["properties"]["delivery_mode"] == 2
        assert depth(mgmt_broker, name) == 2
    finally:
        mgmt_broker.delete_queue(name)


def test_get_ack_removes_the_messages(mgmt_broker, name):
    publish(mgmt_broker, name, [b"1", b"2", b"3"])
    try:
        r = ferry("get", name, "--ack", "--count", "2", "--json", url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        assert [m["payload"] for m in json.loads(r.stdout)] == ["1", "2"]
        assert depth(mgmt_broker, name) == 1
    finally:
        mgmt_broker.delete_queue(name)


def test_get_binary_payload_comes_as_base64(mgmt_broker, name):
    publish(mgmt_broker, name, [b"\x00\xff\xfe binary"])
    try:
        r = ferry("get", name, "--json", url=mgmt_broker.http_url)
        m = json.loads(r.stdout)[0]
        assert m["payload_encoding"] == "base64" and m["payload"] == "AP/+IGJpbmFyeQ=="
        r = ferry("get", name, url=mgmt_broker.http_url)
        assert "10 bytes, base64" in r.stdout and "AP/+IGJpbmFyeQ==" in r.stdout
    finally:
        mgmt_broker.delete_queue(name)


def test_get_from_an_empty_queue_says_so_and_exits_0(mgmt_broker, name):
    publish(mgmt_broker, name, [])
    try:
        r = ferry("get", name, url=mgmt_broker.http_url)
        assert r.returncode == 0 and r.stdout == f"no messages in queue '{name}'\n"
        r = ferry("get", name, "--json", url=mgmt_broker.http_url)
        assert json.loads(r.stdout) == []
    finally:
        mgmt_broker.delete_queue(name)


def test_get_and_purge_of_a_missing_queue_exit_1(mgmt_broker):
    for cmd in (["get", "cli-no-such-queue"], ["purge", "cli-no-such-queue"]):
        r = ferry(*cmd, url=mgmt_broker.http_url)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert "404" in r.stderr


def test_get_flag_values_are_checked(mgmt_broker):
    for args, flag in ((["--count", "0"], "--count"), (["--count", "x"], "--count"),
                       (["--encoding", "hex"], "--encoding"), (["--truncate", "-1"], "--truncate")):
        r = ferry("get", "q", *args, url=mgmt_broker.http_url)
        assert r.returncode == 2 and flag in r.stderr, (args, r.stderr)


def test_purge_empties_the_queue(mgmt_broker, name):
    publish(mgmt_broker, name, [b"a", b"b", b"c"])
    try:
        r = ferry("purge", name, url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"purged queue '{name}' in vhost '/'\n"
        assert depth(mgmt_broker, name) == 0
        publish(mgmt_broker, name, [b"d"], declare=False)
        r = ferry("purge", name, "--json", url=mgmt_broker.http_url)
        assert json.loads(r.stdout) == {"vhost": "/", "queue": name, "purged": True}
        assert depth(mgmt_broker, name) == 0
    finally:
        mgmt_broker.delete_queue(name)


def test_consume_count_prints_and_acks_in_order(mgmt_broker, name):
    publish(mgmt_broker, name, [f"m{i}".encode() for i in range(5)])
    try:
        r = ferry("consume", name, "--count", "3", "--json", "--uri", mgmt_broker.amqp_url)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(l) for l in r.stdout.splitlines()]
        assert [m["payload"] for m in lines] == ["m0", "m1", "m2"]
        assert lines[0]["routing_key"] == name and lines[0]["properties"]["delivery_mode"] == 2
        assert depth(mgmt_broker, name) == 2  # three acked; the prefetch of 3 took no more
        r = ferry("consume", name, "--timeout", "300ms", "--uri", mgmt_broker.amqp_url)
        assert r.returncode == 0, r.stderr
        assert "--- message 2" in r.stdout and "m4" in r.stdout and "--- message 3" not in r.stdout
        assert depth(mgmt_broker, name) == 0
    finally:
        mgmt_broker.delete_queue(name)


def test_consume_json_shows_headers_as_the_api_does(mgmt_broker, name):
    """Headers go through libferry's table conversion: nested values kept, a decimal scaled
    (value 123, scale 2 → 1.23), bytes that are not UTF-8 still valid JSON ('?' for the rest)."""
    props = pika.BasicProperties(headers={"price": decimal.Decimal("1.23"), "n": -7,
                                          "nested": {"a": [1, "two", True]}, "raw": b"\xff\xfeok"})
    publish(mgmt_broker, name, [b"h"], props)
    try:
        r = ferry("consume", name, "--count", "1", "--json", "--uri", mgmt_broker.amqp_url)
        assert r.returncode == 0, r.stderr
        h = json.loads(r.stdout.splitlines()[0])["properties"]["headers"]
        assert h == {"price": 1.23, "n": -7, "nested": {"a": [1, "two", True]}, "raw": "??ok"}
    finally:
        mgmt_broker.delete_queue(name)


def test_consume_timeout_before_count_exits_1(mgmt_broker, name):
    publish(mgmt_broker, name, [b"only one"])
    try:
        r = ferry("consume", name, "--count", "2", "--timeout", "300ms", "--uri", mgmt_broker.amqp_url)
        assert r.returncode == 1
        assert "only one" in r.stdout and "timed out after 1 of 2" in r.stderr
    finally:
        mgmt_broker.delete_queue(name)


def test_consume_derives_the_amqp_uri_from_an_amqp_ferry_url(mgmt_broker, name):
    publish(mgmt_broker, name, [b"via FERRY_URL"])
    try:
        r = ferry("consume", name, "--count", "1", env={"FERRY_URL": mgmt_broker.amqp_url})
        assert r.returncode == 0, r.stderr
        assert "via FERRY_URL" in r.stdout
    finally:
        mgmt_broker.delete_queue(name)


def test_consume_ctrl_c_stops_cleanly_and_leaves_the_rest(mgmt_broker, name):
    publish(mgmt_broker, name, [b"first"])
    p = subprocess.Popen([FERRY, "consume", name, "--json", "--uri", mgmt_broker.amqp_url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert json.loads(line)["payload"] == "first"
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0, p.stderr.read()
        publish(mgmt_broker, name, [b"after"], declare=False)
        assert depth(mgmt_broker, name) == 1  # nothing consumed after Ctrl-C, "first" acked
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        mgmt_broker.delete_queue(name)


def test_consume_errors_exit_codes(mgmt_broker):
    r = ferry("consume", "cli-no-such-queue", "--uri", mgmt_broker.amqp_url)
    assert r.returncode == 1 and "404" in r.stderr and "NOT_FOUND" in r.stderr
    r = ferry("consume", "q", "--uri", mgmt_broker.amqp_url.replace("guest:guest", "guest:wrong"))
    assert r.returncode == 1 and "403" in r.stderr
    r = ferry("consume", "q", "--uri", "amqp://guest:guest@127.0.0.1:1/")
    assert r.returncode == 3 and "cannot reach" in r.stderr
    r = ferry("consume", "q", "--uri", "http://nope")
    assert r.returncode == 2 and "--uri" in r.stderr
    r = ferry("consume", "q", "--timeout", "soon", "--uri", mgmt_broker.amqp_url)
    assert r.returncode == 2 and "--timeout" in r.stderr
