"""Must-show 1 (second half): Debian's /usr/bin/rabbitmqadmin, unchanged, lists, declares,
publishes and gets against ferryd's management API (it sends booleans and counts as strings
and publishes through amq.default)."""
import json
import os
import subprocess

import pytest

ADMIN = "/usr/bin/rabbitmqadmin"
pytestmark = pytest.mark.skipif(not os.path.exists(ADMIN), reason="rabbitmqadmin is not installed")


def admin(m, *args, check=True):
    r = subprocess.run([ADMIN, "-H", "127.0.0.1", "-P", str(m.http_port), "-u", "guest", "-p", "guest"] + list(args),
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_rabbitmqadmin_declares_lists_publishes_and_gets(mgmt):
    admin(mgmt, "declare", "queue", "name=orders", "durable=true", 'arguments={"x-max-length": 100}')
    admin(mgmt, "declare", "exchange", "name=ev", "type=topic", "durable=false")
    admin(mgmt, "declare", "binding", "source=ev", "destination=orders", "routing_key=order.*")
    out = admin(mgmt, "-f", "raw_json", "list", "queues").stdout
    qs = json.loads(out)
    assert [(q["name"], q["durable"], q["arguments"]) for q in qs] == [("orders", True, {"x-max-length": 100})]
    out = admin(mgmt, "list", "queues", "name", "messages").stdout
    assert "orders" in out
    r = admin(mgmt, "publish", "routing_key=orders", "payload=hello")
    assert "Message published" in r.stdout
    r = admin(mgmt, "publish", "exchange=ev", "routing_key=order.new", "payload=second", "properties={\"correlation_id\": \"c9\"}")
    assert "Message published" in r.stdout
    r = admin(mgmt, "publish", "routing_key=nowhere", "payload=lost")
    assert "NOT routed" in r.stdout
    got = json.loads(admin(mgmt, "-f", "raw_json", "get", "queue=orders", "count=2", "ackmode=ack_requeue_false").stdout)
    assert [g["payload"] for g in got] == ["hello", "second"]
    assert got[1]["properties"]["correlation_id"] == "c9"
    assert mgmt.api.get("/api/queues/%2F/orders")[1]["messages"] == 0
    bindings = json.loads(admin(mgmt, "-f", "raw_json", "list", "bindings").stdout)
    assert ("ev", "orders", "order.*") in [(b["source"], b["destination"], b["routing_key"]) for b in bindings]
    for what in ("exchanges", "connections", "channels", "consumers", "vhosts", "users", "permissions", "nodes"):
        admin(mgmt, "-f", "raw_json", "list", what)
    admin(mgmt, "show", "overview")
    assert admin(mgmt, "-f", "raw_json", "list", "policies").stdout.strip() == "[]"
    admin(mgmt, "purge", "queue", "name=orders")
    admin(mgmt, "delete", "queue", "name=orders")
    admin(mgmt, "delete", "exchange", "name=ev")
    assert mgmt.api.get("/api/queues")[1] == []


def test_rabbitmqadmin_reports_ferryds_errors(mgmt):
    admin(mgmt, "declare", "queue", "name=q", "durable=true")
    r = admin(mgmt, "declare", "queue", "name=q", "durable=false", check=False)
    assert r.returncode != 0
    assert "inequivalent arg 'durable'" in r.stdout + r.stderr
    r = subprocess.run([ADMIN, "-H", "127.0.0.1", "-P", str(mgmt.http_port), "-u", "guest", "-p", "bad", "list",
                        "queues"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Access refused" in r.stdout + r.stderr


def test_rabbitmqadmin_exports_and_imports_definitions(mgmt, tmp_path):
    admin(mgmt, "declare", "queue", "name=kept", "durable=true")
    path = tmp_path / "defs.json"
    admin(mgmt, "export", str(path))
    defs = json.loads(path.read_text())
    assert "kept" in [q["name"] for q in defs["queues"]]
    admin(mgmt, "delete", "queue", "name=kept")
    defs["queues"].append({"name": "added", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}})
    path.write_text(json.dumps(defs))
    admin(mgmt, "import", str(path))
    names = [q["name"] for q in mgmt.api.get("/api/queues")[1]]
    assert "kept" in names and "added" in names
