"""Users, vhosts and permissions against a real RabbitMQ (issue 10, must-show 1 and 2).

A private rabbitmq-server and a ferryd load the same definitions file (RabbitMQ 3.10's
export shape: users with rabbit_password_hashing_sha256 hashes, vhosts, permissions, topic
permissions, vhost-limits). A table of users x vhosts x operations (declare, passive
declare, bind, publish to an exchange, publish to a missing one, consume, get, purge,
delete, topic publish and topic bind by routing key, dead-letter declare, the queue limit)
runs against both, each cell on a fresh connection; every cell's outcome — ok, or the
reply code and text that closed the channel or connection — must be the same.

Then the definitions RabbitMQ exports (`rabbitmqctl export_definitions`) load into a
ferryd and every user logs in with its password.
"""
import base64
import hashlib
import json
import os

import pika
import pytest

import rabbitmq

PASSWORDS = {"guest": "guest", "admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def rabbit_hash(password, salt=b"\x01\x02\x03\x04"):
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions():
    users = [{"name": u, "password_hash": rabbit_hash(p), "hashing_algorithm": "rabbit_password_hashing_sha256",
              "tags": ["administrator"] if u in ("guest", "admin") else [], "limits": {}}
             for u, p in PASSWORDS.items()]
    perm = lambda u, v, c, w, r: {"user": u, "vhost": v, "configure": c, "write": w, "read": r}  # noqa: E731
    return {
        "rabbit_version": "3.10.8", "rabbitmq_version": "3.10.8",
        "users": users,
        "vhosts": [{"name": "/"}, {"name": "va"}, {"name": "vb"}],
        "permissions": [
            perm("guest", "/", ".*", ".*", ".*"),
            perm("admin", "va", ".*", ".*", ".*"), perm("admin", "vb", ".*", ".*", ".*"),
            # alice: her own names, publish to amq.topic and the default exchange
            perm("alice", "va", "^alice\\.", "^(alice\\..*|amq\\.topic|amq\\.default)$", "^(alice\\..*|amq\\.topic)$"),
            # bob: write everything, read and configure nothing
            perm("bob", "va", "", ".*", ""),
            # carol: read only; on vb everything
            perm("carol", "va", "", "", ".*"), perm("carol", "vb", ".*", ".*", ".*"),
        ],
        "topic_permissions": [
            {"user": "alice", "vhost": "va", "exchange": "amq.topic", "write": "^orders\\.", "read": "^orders\\."},
        ],
        "parameters": [
            {"vhost": "vb", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 6}},
        ],
        "policies": [], "queues": [], "exchanges": [], "bindings": [],
    }


def url(port, user, vhost):
    v = "%2F" if vhost == "/" else vhost
    return f"amqp://{user}:{PASSWORDS[user]}@127.0.0.1:{port}/{v}"


def setup_topology(port):
    """What the operations act on, made by admin in both vhosts."""
    for vh in ("va", "vb"):
        c = pika.BlockingConnection(pika.URLParameters(url(port, "admin", vh)))
        ch = c.channel()
        for q in ("alice.q", "other.q", "alice.del", "other.del"):
            ch.queue_declare(q)
            ch.basic_publish("", q, b"m")
        ch.exchange_declare("alice.x", "direct")
        ch.exchange_declare("other.x", "direct")
        c.close()


def run_op(port, user, vhost, op):
    """One operation on a fresh connection: "ok", or the (code, text) that closed it."""
    try:
        c = pika.BlockingConnection(pika.URLParameters(url(port, user, vhost)))
    except pika.exceptions.ProbableAccessDeniedError as e:
        return ["connection", str(e)]
    except pika.exceptions.ProbableAuthenticationError as e:
        return ["login", str(e)]
    except pika.exceptions.AMQPConnectionError as e:
        return ["connection", repr(e)]
    try:
        ch = c.channel()
        op(ch)
        ch.basic_qos(prefetch_count=1)  # a round trip: an asynchronous refusal arrives before it
        result = "ok"
    except pika.exceptions.ChannelClosedByBroker as e:
        result = [e.reply_code, e.reply_text]
    except pika.exceptions.ConnectionClosedByBroker as e:
        result = ["connection", e.reply_code, e.reply_text]
    try:
        if c.is_open:
            c.close()
    except Exception:
        pass
    return result


OPS = [
    ("declare own queue", lambda ch: ch.queue_declare("alice.new")),
    ("declare other queue", lambda ch: ch.queue_declare("other.new")),
    ("passive declare other queue", lambda ch: ch.queue_declare("other.q", passive=True)),
    ("passive declare missing queue", lambda ch: ch.queue_declare("missing.q", passive=True)),
    ("declare own exchange", lambda ch: ch.exchange_declare("alice.x2", "fanout")),
    ("declare other exchange", lambda ch: ch.exchange_declare("other.x2", "fanout")),
    ("passive declare other exchange", lambda ch: ch.exchange_declare("other.x", passive=True)),
    ("bind own queue to own exchange", lambda ch: ch.queue_bind("alice.q", "alice.x", "k")),
    ("bind other queue to own exchange", lambda ch: ch.queue_bind("other.q", "alice.x", "k")),
    ("bind own queue to other exchange", lambda ch: ch.queue_bind("alice.q", "other.x", "k")),
    ("unbind own queue", lambda ch: ch.queue_unbind("alice.q", "alice.x", "k")),
    ("publish to own exchange", lambda ch: ch.basic_publish("alice.x", "k", b"x")),
    ("publish to other exchange", lambda ch: ch.basic_publish("other.x", "k", b"x")),
    ("publish to default exchange", lambda ch: ch.basic_publish("", "alice.q", b"x")),
    ("publish to missing own-named exchange", lambda ch: ch.basic_publish("alice.missing", "k", b"x")),
    ("publish to missing other exchange", lambda ch: ch.basic_publish("nope.x", "k", b"x")),
    ("topic publish allowed key", lambda ch: ch.basic_publish("amq.topic", "orders.1", b"x")),
    ("topic publish refused key", lambda ch: ch.basic_publish("amq.topic", "payments.1", b"x")),
    ("topic bind allowed key", lambda ch: ch.queue_bind("alice.q", "amq.topic", "orders.#")),
    ("topic bind refused key", lambda ch: ch.queue_bind("alice.q", "amq.topic", "payments.#")),
    ("consume own queue", lambda ch: ch.basic_consume("alice.q", lambda *a: None)),
    ("consume other queue", lambda ch: ch.basic_consume("other.q", lambda *a: None)),
    ("consume missing queue", lambda ch: ch.basic_consume("alice.missing", lambda *a: None)),
    ("get own queue", lambda ch: ch.basic_get("alice.q", auto_ack=True)),
    ("get other queue", lambda ch: ch.basic_get("other.q", auto_ack=True)),
    ("purge own queue", lambda ch: ch.queue_purge("alice.q")),
    ("purge other queue", lambda ch: ch.queue_purge("other.q")),
    ("declare with dead-letter exchange", lambda ch: ch.queue_declare(
        "alice.dl", arguments={"x-dead-letter-exchange": "other.x"})),
    ("declare with own dead-letter exchange", lambda ch: ch.queue_declare(
        "alice.dl2", arguments={"x-dead-letter-exchange": "alice.x"})),
    ("delete own exchange", lambda ch: ch.exchange_delete("alice.x2")),
    ("delete other exchange", lambda ch: ch.exchange_delete("other.x2")),
    ("delete own queue", lambda ch: ch.queue_delete("alice.del")),
    ("delete other queue", lambda ch: ch.queue_delete("other.del")),
    ("queue limit: declare 4 queues", lambda ch: [ch.queue_declare(f"alice.lim{i}") for i in range(4)]),
]

CELLS = [(u, v) for u in ("admin", "alice", "bob", "carol") for v in ("va", "vb")]


def run_table(port):
    setup_topology(port)
    table = {}
    for user, vhost in CELLS:
        for name, op in OPS:
            table[f"{user}@{vhost}: {name}"] = run_op(port, user, vhost, op)
    # logins: a wrong password, an unknown user, and guest on a vhost it has no permission for
    for name, u, p, v in [("wrong password", "alice", "nope", "va"), ("unknown user", "mallory", "x", "va"),
                          ("no access to vhost", "guest", "guest", "va"), ("missing vhost", "admin", "admin-pw", "vz")]:
        try:
            pika.BlockingConnection(pika.URLParameters(
                f"amqp://{u}:{p}@127.0.0.1:{port}/{v}")).close()
            table[f"login {name}"] = "ok"
        except pika.exceptions.ProbableAuthenticationError as e:
            table[f"login {name}"] = ["auth", str(e)]
        except pika.exceptions.ProbableAccessDeniedError as e:
            table[f"login {name}"] = ["access", str(e)]
    return table


@pytest.fixture(scope="module")
def defs_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("defs") / "definitions.json"
    p.write_text(json.dumps(definitions(), indent=1))
    return str(p)


@pytest.fixture(scope="module")
def reference(defs_file):
    if not rabbitmq.available():
        pytest.skip("rabbitmq-server is not installed")
    r = rabbitmq.RabbitMQ(extra_conf=f"load_definitions = {defs_file}\n")
    r.start()
    try:
        from test_differential import _wait_amqp
        _wait_amqp(r.url)
        yield r
    finally:
        r.stop()


@pytest.mark.ferry_only
def test_permissions_table_matches_rabbitmq(reference, ferryd_factory, defs_file):
    expected = run_table(reference.port)
    d = ferryd_factory("--definitions", defs_file)
    actual = run_table(d.port)
    assert set(expected) == set(actual)
    allowed = sum(1 for v in expected.values() if v == "ok")
    print(f"\n{len(expected)} cells compared, {allowed} allowed, {len(expected) - allowed} refused")
    diffs = {k: (expected[k], actual[k]) for k in expected if expected[k] != actual[k]}
    assert not diffs, "ferryd differs from RabbitMQ (RabbitMQ, ferryd):\n" + "\n".join(
        f"  {k}: {e!r}\n    {' ' * len(k)}  {a!r}" for k, (e, a) in diffs.items())
    # the table is not trivial: both allowed and refused outcomes, with several codes
    assert allowed > 20 and len(expected) - allowed > 20
    codes = {v[0] for v in expected.values() if isinstance(v, list)}
    assert {403, 404, 406} <= codes


@pytest.mark.ferry_only
def test_definitions_exported_by_rabbitmq_load_and_every_user_logs_in(reference, ferryd_factory, tmp_path):
    out = tmp_path / "export.json"
    # rabbitmqctl may run as the rabbitmq user, who cannot write here: the JSON comes on stdout
    text = reference.ctl("-q", "export_definitions", "-")
    out.write_text(text[text.index("{"):])
    exported = json.loads(out.read_text())
    names = {u["name"] for u in exported["users"]}
    assert names == set(PASSWORDS)
    assert all(u["hashing_algorithm"] == "rabbit_password_hashing_sha256" for u in exported["users"])
    d = ferryd_factory("--definitions", str(out))
    for user in PASSWORDS:
        vhost = {"guest": "/", "carol": "vb"}.get(user, "va")
        c = pika.BlockingConnection(pika.URLParameters(url(d.port, user, vhost)))
        assert c.is_open
        c.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(f"amqp://alice:wrong@127.0.0.1:{d.port}/va"))
