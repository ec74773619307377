"""Messages the broker holds for later — a delayed exchange's pending messages and
x-retry-delays back-offs — are persistent messages too: once confirmed (or rejected into a
retry) they survive kill -9 and fall due after the restart."""
import time

import pika

from . import helpers
from .helpers import connect


def _get_until(d, queue, deadline):
    """basic.get (auto-ack) until a message arrives or the deadline passes."""
    conn = connect(d)
    try:
        ch = conn.channel()
        while time.monotonic() < deadline:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method:
                return props, body
            time.sleep(0.05)
        return None, None
    finally:
        conn.close()


def _depth(d, queue):
    conn = connect(d)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_a_confirmed_delayed_message_survives_kill9_and_falls_due_after_restart(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("due", durable=True)
    ch.queue_bind("due", "later", "k")
    ch.basic_publish("later", "k", b"held", pika.BasicProperties(delivery_mode=2, headers={"x-delay": 1500}))
    published = time.monotonic()
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    assert _depth(d, "due") == 0, "the delayed message was routed before it fell due"
    props, body = _get_until(d, "due", published + 10)
    assert body == b"held", "the confirmed delayed message was lost across kill -9"
    assert time.monotonic() - published >= 1.4, "it fell due early"
    assert props.headers["x-delay"] == -1500
    assert "recovered 1 delayed messages" in helpers.log_since_start(d)


def test_a_transient_delayed_message_is_not_kept_across_restart(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("due", durable=True)
    ch.queue_bind("due", "later", "k")
    ch.basic_publish("later", "k", b"transient", pika.BasicProperties(delivery_mode=1, headers={"x-delay": 300}))
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    time.sleep(0.8)
    assert _depth(d, "due") == 0


def test_a_message_waiting_for_its_retry_survives_kill9_with_its_retry_count(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("work", durable=True, arguments={"x-retry-delays": [1000]})
    ch.basic_publish("", "work", b"job", pika.BasicProperties(delivery_mode=2))
    method, _p, _b = ch.basic_get("work")
    ch.basic_nack(method.delivery_tag, requeue=False)
    rejected = time.monotonic()
    time.sleep(0.3)  # the nack and the retry's record reach the log (group commit)
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    assert _depth(d, "work") == 0, "the rejected message came back before its retry delay (or twice)"
    props, body = _get_until(d, "work", rejected + 10)
    assert body == b"job", "the message waiting for its retry was lost across kill -9"
    assert props.headers["x-retry-count"] == 1
    assert _depth(d, "work") == 0, "the message came back twice"


def test_a_delayed_message_of_another_vhost_falls_due_in_its_own_vhost_after_kill9(ferryd_factory, tmp_path):
    """Vhosts are isolated across a restart too: a pending delayed message published in
    vhost 'tenant' to its exchange 'later' comes back to that exchange, not to the exchange
    of the same name in '/'. (Before: DELAYED records did not name the vhost, and recovery
    sent it to '/'s 'later', where it reached the wrong tenant's queue.)"""
    import base64
    import hashlib
    import json
    salt = b"salt"
    pw_hash = base64.b64encode(salt + hashlib.sha256(salt + b"pw").digest()).decode()
    defs = {"users": [{"name": "app", "password_hash": pw_hash,
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
            "vhosts": [{"name": "/"}, {"name": "tenant"}],
            "permissions": [{"user": "app", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                            for v in ("/", "tenant")]}
    f = tmp_path / "defs.json"
    f.write_text(json.dumps(defs))
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data, "--definitions", str(f))

    def open_vhost(vhost):
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", d.port, vhost, pika.PlainCredentials("app", "pw")))

    for vhost in ("/", "tenant"):
        conn = open_vhost(vhost)
        ch = conn.channel()
        ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
        ch.queue_declare("due", durable=True)
        ch.queue_bind("due", "later", "k")
        conn.close()
    conn = open_vhost("tenant")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("later", "k", b"tenant's", pika.BasicProperties(delivery_mode=2, headers={"x-delay": 1500}))
    published = time.monotonic()
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)  # users and vhosts come back from meta.log

    def depth(vhost):
        conn = open_vhost(vhost)
        try:
            return conn.channel().queue_declare("due", passive=True).method.message_count
        finally:
            conn.close()

    deadline = published + 10
    while time.monotonic() < deadline and depth("tenant") + depth("/") == 0:
        time.sleep(0.1)
    assert depth("/") == 0, "the tenant's delayed message fell due in '/' after the restart"
    assert depth("tenant") == 1, "the confirmed delayed message was lost across kill -9"
    assert time.monotonic() - published >= 1.4, "it fell due early"
