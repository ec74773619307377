"""Must-show 1 of issue 11: for the same state built by the same script, every endpoint's
JSON from ferryd compared field by field with Debian's rabbitmq-server (management plugin):
every field RabbitMQ has must be in ferryd's answer (the test lists the missing ones and
fails), and the values that are deterministic must be equal."""
import time
import urllib.parse

import pika
import pytest

from mgmtlib import Api
from ferryd import free_port, wait_port

pytestmark = pytest.mark.timeout(300)

# Where a dict's keys are data, not field names (node names, application lists): compared as
# "is a dict / list", not key by key.
DATA_KEYS = {"cluster_state", "metrics_gc_queue_length", "applications", "client_properties", "contexts",
             "config_files", "log_files", "ra_open_file_metrics", "enabled_plugins", "exchange_types",
             "auth_mechanisms", "socket_opts", "arguments", "limits", "headers", "properties"}


def build_state(url, api, vhost_user=True):
    """The same objects on either broker: returns the open connection (its consumer stays)."""
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.queue_declare("work", durable=True, arguments={"x-dead-letter-exchange": "",
                                                      "x-dead-letter-routing-key": "work.dlq"})
    ch.queue_declare("work.dlq", durable=True)
    ch.queue_declare("idle", durable=False, arguments={"x-max-length": 10})
    ch.exchange_declare("events", "topic", durable=True)
    ch.queue_bind("work", "events", "order.*")
    ch.queue_bind("idle", "events", "audit.#", arguments={"x-match": "all"})
    for i in range(3):
        ch.basic_publish("events", "order.new", b"m%d" % i, pika.BasicProperties(correlation_id="c%d" % i))
    ch.basic_publish("", "idle", b"i0")
    ch.basic_publish("", "idle", b"i1")
    ch.basic_qos(prefetch_count=5)
    ch.basic_consume("work", lambda *a: None, consumer_tag="ctag1")
    c.process_data_events(0.5)
    if vhost_user:
        assert api.put("/api/vhosts/v2")[0] in (201, 204)
        assert api.put("/api/users/alice", {"password": "pw", "tags": "management"})[0] in (201, 204)
        assert api.put("/api/permissions/v2/alice", {"configure": "^a", "write": ".*", "read": ".*"})[0] in (201, 204)
    return c


@pytest.fixture(scope="module")
def pair(rabbit, tmp_path_factory):
    import ferryd
    port = free_port()
    d = ferryd.Ferryd(data_dir=str(tmp_path_factory.mktemp("diff-ferryd")), args=["--http-port", str(port)])
    d.start()
    wait_port("127.0.0.1", port, 10, d.proc)
    fa = Api("127.0.0.1", port)
    fc = build_state(d.url, fa)
    rc = build_state(rabbit.url, rabbit.api)
    time.sleep(6)  # RabbitMQ's statistics are emitted every 5 s
    yield fa, rabbit.api
    for c in (fc, rc):
        try:
            c.close()
        except Exception:
            pass
    # leave the shared RabbitMQ as we found it
    for q in ("work", "work.dlq", "idle"):
        rabbit.api.delete(f"/api/queues/%2F/{q}")
    rabbit.api.delete("/api/exchanges/%2F/events")
    rabbit.api.delete("/api/users/alice")
    rabbit.api.delete("/api/vhosts/v2")
    d.stop_and_check()


def missing_fields(r, f, path=""):
    """Paths of RabbitMQ's fields that ferryd's answer lacks."""
    out = []
    if isinstance(r, dict):
        if not isinstance(f, dict):
            return [path or "<root> (not an object)"]
        for k, v in r.items():
            p = f"{path}.{k}" if path else k
            if k not in f:
                out.append(p)
            elif k not in DATA_KEYS:
                out += missing_fields(v, f[k], p)
            elif isinstance(v, (dict, list)) and not isinstance(f[k], (dict, list)):
                out.append(p + " (type)")
    elif isinstance(r, list) and r and isinstance(r[0], dict):
        if not isinstance(f, list):
            return [path + " (not a list)"]
        if f:
            out += missing_fields(r[0], f[0], path + "[]")
    return out


def by(items, *keys):
    return {tuple(str(i.get(k)) for k in keys): i for i in items}


ENDPOINTS = [  # path, key to pair list items by (None: one object)
    ("/api/overview", None), ("/api/nodes", "name"), ("/api/queues", "name"), ("/api/queues/%2F", "name"),
    ("/api/queues/%2F/work", None), ("/api/queues/%2F/work/bindings", "source"), ("/api/exchanges", "name"),
    ("/api/exchanges/%2F/events", None), ("/api/exchanges/%2F/events/bindings/source", "destination"),
    ("/api/bindings", "destination"), ("/api/bindings/%2F", "destination"),
    ("/api/bindings/%2F/e/events/q/work", "routing_key"), ("/api/connections", "user"), ("/api/channels", "number"),
    ("/api/consumers", "consumer_tag"), ("/api/consumers/%2F", "consumer_tag"), ("/api/vhosts", "name"),
    ("/api/vhosts/%2F", None), ("/api/users", "name"), ("/api/users/guest", None), ("/api/permissions", "user"),
    ("/api/permissions/%2F/guest", None), ("/api/users/guest/permissions", "vhost"),
    ("/api/vhosts/%2F/permissions", "user"), ("/api/whoami", None), ("/api/definitions", None),
    ("/api/aliveness-test/%2F", None), ("/api/health/checks/alarms", None), ("/api/health/checks/local-alarms", None),
    ("/api/health/checks/virtual-hosts", None), ("/api/health/checks/node-is-quorum-critical", None),
    ("/api/health/checks/node-is-mirror-sync-critical", None), ("/api/extensions", None),
    ("/api/cluster-name", None),
]


def test_every_rabbitmq_field_is_in_ferryds_answers(pair):
    fa, ra = pair
    report = []
    for path, key in ENDPOINTS:
        rs, rb, _ = ra.get(path)
        fs, fb, _ = fa.get(path)
        assert fs == rs, f"{path}: ferryd {fs}, RabbitMQ {rs}: {fb}"
        if isinstance(rb, list) and key:
            fmap = by(fb, key)
            for k, item in by(rb, key).items():
                if k in fmap:
                    report += [f"{path} {k}: {m}" for m in missing_fields(item, fmap[k])]
                elif path not in ("/api/nodes", "/api/connections", "/api/channels", "/api/users", "/api/permissions"):
                    report.append(f"{path}: item {k} missing")
        else:
            report += [f"{path}: {m}" for m in missing_fields(rb, fb)]
    # the channel and the connection have per-node names: paired by their only item
    for path in ("/api/connections", "/api/channels"):
        rb, fb = ra.get(path)[1], fa.get(path)[1]
        assert len(rb) == len(fb) == 1, (path, rb, fb)
        report += [f"{path}: {m}" for m in missing_fields(rb[0], fb[0])]
    # one connection and one channel by name, and the node by name
    for path, one in (("/api/connections", "/api/connections/"), ("/api/channels", "/api/channels/"),
                      ("/api/nodes", "/api/nodes/")):
        rname = ra.get(path)[1][0]["name"]
        fname = fa.get(path)[1][0]["name"]
        rb = ra.get(one + urllib.parse.quote(rname, safe=""))[1]
        fs, fb, _ = fa.get(one + urllib.parse.quote(fname, safe=""))
        assert fs == 200, (one, fb)
        report += [f"{one}: {m}" for m in missing_fields(rb, fb)]
    assert not report, "RabbitMQ fields ferryd lacks:\n" + "\n".join(report)


def settled(api, path, ok, timeout=20):
    """RabbitMQ's answer once ok(answer) holds (its statistics lag on a loaded machine), or
    the last one after timeout."""
    deadline = time.time() + timeout
    while True:
        body = api.get(path)[1]
        if ok(body) or time.time() > deadline:
            return body
        time.sleep(0.5)


QUEUE_FIELDS = ["name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
                "messages_unacknowledged", "consumers", "type", "state", "policy", "exclusive_consumer_tag",
                "single_active_consumer_tag", "effective_policy_definition", "message_bytes", "message_bytes_ready"]


def test_deterministic_values_are_equal(pair):
    fa, ra = pair
    rq, fq = by(ra.get("/api/queues")[1], "name"), by(fa.get("/api/queues")[1], "name")
    assert sorted(rq) == sorted(fq)
    for k in rq:
        for field in QUEUE_FIELDS:  # (RabbitMQ leaves out counts of a queue its stats have not reached yet)
            if field in rq[k] or field in ("name", "vhost", "durable", "arguments", "type"):
                assert fq[k][field] == rq[k][field], (k, field, fq[k][field], rq[k].get(field))
        if "message_stats" in rq[k]:
            assert fq[k]["message_stats"].get("publish", 0) == rq[k]["message_stats"].get("publish", 0), k
    rw, fw = ra.get("/api/queues/%2F/work")[1], fa.get("/api/queues/%2F/work")[1]
    assert rw["message_stats"]["deliver"] == fw["message_stats"]["deliver"] == 3
    strip = lambda c: {k: v for k, v in c.items() if k != "channel_details"}  # noqa: E731
    assert [strip(c) for c in fw["consumer_details"]] == [strip(c) for c in rw["consumer_details"]]
    # exchanges (ferryd has two more exchange types built in: x-consistent-hash, x-delayed-message)
    rx, fx = by(ra.get("/api/exchanges")[1], "name"), by(fa.get("/api/exchanges")[1], "name")
    for k, x in rx.items():
        assert k in fx, k
        for field in ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"):
            assert fx[k][field] == x[field], (k, field)
    # bindings: everything but the properties_key of a binding with arguments (a hash)
    rb, fb = ra.get("/api/bindings/%2F")[1], fa.get("/api/bindings/%2F")[1]
    norm = lambda b: {k: v for k, v in b.items() if not (k == "properties_key" and b["arguments"])}  # noqa: E731
    assert [norm(b) for b in fb] == [norm(b) for b in rb]
    # consumers, channels, connections: what does not depend on ports and node names
    rc, fc = ra.get("/api/consumers")[1][0], fa.get("/api/consumers")[1][0]
    for field in ("consumer_tag", "ack_required", "exclusive", "prefetch_count", "queue", "arguments", "active",
                  "activity_status"):
        assert fc[field] == rc[field], field
    fch = fa.get("/api/channels")[1][0]
    rch = settled(ra, "/api/channels", lambda b: b and b[0].get("messages_unacknowledged") == 3)[0]
    for field in ("number", "prefetch_count", "global_prefetch_count", "consumer_count", "confirm", "transactional",
                  "messages_unacknowledged", "messages_uncommitted", "acks_uncommitted", "user", "vhost", "state"):
        assert fch[field] == rch[field], field
    fco = fa.get("/api/connections")[1][0]
    rco = settled(ra, "/api/connections", lambda b: b and b[0].get("channels") == fco["channels"])[0]
    for field in ("user", "vhost", "channels", "protocol", "auth_mechanism", "ssl", "state", "type", "channel_max",
                  "frame_max", "timeout", "peer_host"):
        assert fco[field] == rco[field], field
    assert fco["client_properties"] == rco["client_properties"]
    # vhosts, users, permissions, whoami
    # (RabbitMQ leaves out a new vhost's message counts until its stats arrive: compared where present)
    rv = {v["name"]: v for v in ra.get("/api/vhosts")[1]}
    for v in fa.get("/api/vhosts")[1]:
        assert v["tracing"] == rv[v["name"]]["tracing"]
        assert v["messages"] == rv[v["name"]].get("messages", v["messages"])
    assert sorted((u["name"], tuple(u["tags"])) for u in fa.get("/api/users")[1]) == \
           sorted((u["name"], tuple(u["tags"])) for u in ra.get("/api/users")[1])
    assert sorted(map(str, fa.get("/api/permissions")[1])) == sorted(map(str, ra.get("/api/permissions")[1]))
    assert fa.get("/api/whoami")[1] == ra.get("/api/whoami")[1]
    # RabbitMQ's totals come from its statistics database, seconds late on a loaded machine:
    # read again until they settle (ferryd's are at most 1 s old)
    deadline = time.time() + 20
    while True:
        ro, fo = ra.get("/api/overview")[1], fa.get("/api/overview")[1]
        pairs = [(fo["object_totals"][k], ro["object_totals"].get(k)) for k in
                 ("queues", "consumers", "connections", "channels")]
        pairs += [(fo["queue_totals"][k], ro["queue_totals"].get(k)) for k in
                  ("messages", "messages_ready", "messages_unacknowledged")]
        if all(a == b for a, b in pairs) or time.time() > deadline:
            break
        time.sleep(1)
    assert all(a == b for a, b in pairs), pairs
    assert fo["object_totals"]["connections"] == fo["object_totals"]["channels"] == 1
    # definitions: the same topology and permissions
    rd, fd = ra.get("/api/definitions")[1], fa.get("/api/definitions")[1]
    for k in ("queues", "exchanges", "bindings", "permissions", "vhosts"):
        key = lambda o: str(sorted(o.items()))  # noqa: E731
        assert sorted(map(key, fd[k])) == sorted(map(key, rd[k])), k
    for path in ("/api/aliveness-test/%2F", "/api/health/checks/alarms", "/api/health/checks/virtual-hosts",
                 "/api/health/checks/node-is-quorum-critical"):
        assert fa.get(path)[1] == ra.get(path)[1], path
    # (/api/extensions lists the management UI's JavaScript plugins: RabbitMQ's own UI files,
    # so only its shape is compared, above)


ERRORS = [  # method, path, body
    ("GET", "/api/queues/nope", None), ("GET", "/api/queues/%2F/nope", None), ("GET", "/api/exchanges/%2F/nope", None),
    ("GET", "/api/vhosts/nope", None), ("GET", "/api/users/nope", None), ("GET", "/api/permissions/%2F/nope", None),
    ("PUT", "/api/queues/%2F/work", {"durable": False}),
    ("PUT", "/api/exchanges/%2F/events", {"type": "direct"}),
    ("PUT", "/api/queues/%2F/bad-arg", {"arguments": {"x-max-length": "ten"}}),
    ("DELETE", "/api/queues/%2F/nope", None),
    ("POST", "/api/queues/%2F/nope/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
    ("GET", "/api/nothing", None),
]


def test_errors_are_rabbitmqs(pair):
    fa, ra = pair
    for method, path, body in ERRORS:
        rs, rb, _ = ra.call(method, path, body)
        fs, fb, _ = fa.call(method, path, body)
        assert (fs, fb) == (rs, rb), (method, path)
    for auth in (("guest", "wrong"), ("nobody", "x")):
        assert fa.get("/api/overview", auth=auth)[:2] == ra.get("/api/overview", auth=auth)[:2], auth
    assert fa.get("/api/overview", auth=("alice", "pw"))[0] == ra.get("/api/overview", auth=("alice", "pw"))[0]
    # alice (management) sees only her vhost's objects
    assert fa.get("/api/vhosts", auth=("alice", "pw"))[1] is not None
    assert [v["name"] for v in fa.get("/api/vhosts", auth=("alice", "pw"))[1]] == \
           [v["name"] for v in ra.get("/api/vhosts", auth=("alice", "pw"))[1]]
    assert fa.get("/api/users", auth=("alice", "pw"))[:2] == ra.get("/api/users", auth=("alice", "pw"))[:2]
