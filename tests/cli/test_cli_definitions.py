"""`ferry definitions export|import`: RabbitMQ's definitions document out to a file or
stdout, and back in (also from stdin); a file that is not JSON fails before anything is sent."""
import json

from clilib import ferry


def test_export_to_stdout_and_file(world, tmp_path):
    r = ferry("definitions", "export", url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    q = [q for q in d["queues"] if q["name"] == world.json][0]
    assert q["vhost"] == "/" and q["durable"] is True and q["arguments"] == {"x-max-length": 10}
    assert any(v["name"] == "/" for v in d["vhosts"])
    f = tmp_path / "defs.json"
    r = ferry("definitions", "export", str(f), url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "exported" in r.stderr and "queues" in r.stderr
    assert any(q["name"] == world.json for q in json.loads(f.read_text())["queues"])


def test_import_creates_what_the_file_names(mgmt_broker, name, tmp_path):
    doc = {"queues": [{"name": name, "vhost": "/", "durable": True, "auto_delete": False,
                       "arguments": {"x-max-length": 7}}],
           "exchanges": [{"name": name + "-x", "vhost": "/", "type": "fanout", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": {}}],
           "bindings": [{"source": name + "-x", "vhost": "/", "destination": name, "destination_type": "queue",
                         "routing_key": "", "arguments": {}}]}
    f = tmp_path / "in.json"
    f.write_text(json.dumps(doc))
    try:
        r = ferry("definitions", "import", str(f), url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "imported 1 queues, 1 exchanges, 1 bindings\n"
        st, q = mgmt_broker.api("GET", f"/api/queues/%2F/{name}")
        assert st == 200 and q["arguments"] == {"x-max-length": 7}
        st, x = mgmt_broker.api("GET", f"/api/exchanges/%2F/{name}-x")
        assert st == 200 and x["type"] == "fanout"
        # from stdin, with --json
        doc2 = {"queues": [{"name": name + "-2", "vhost": "/", "durable": False, "auto_delete": False,
                            "arguments": {}}]}
        r = ferry("definitions", "import", "-", "--json", url=mgmt_broker.http_url, input=json.dumps(doc2))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"imported": True, "definitions": "1 queues"}
        assert mgmt_broker.api("GET", f"/api/queues/%2F/{name}-2")[0] == 200
    finally:
        mgmt_broker.delete_queue(name)
        mgmt_broker.delete_queue(name + "-2")
        mgmt_broker.api("DELETE", f"/api/exchanges/%2F/{name}-x")


def test_import_of_a_file_that_is_not_json_fails_before_sending(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"queues": [\n  {"name": "x",}\n]}')
    # The URL is unreachable: the file must be rejected before any request (else exit 3).
    r = ferry("definitions", "import", str(f), url="http://guest:guest@127.0.0.1:1")
    assert r.returncode == 1
    assert "not a JSON definitions file" in r.stderr and "line 2" in r.stderr
    f.write_text("[1, 2]")
    r = ferry("definitions", "import", str(f), url="http://guest:guest@127.0.0.1:1")
    assert r.returncode == 1 and "not a list" in r.stderr
    r = ferry("definitions", "import", str(tmp_path / "missing.json"), url="http://guest:guest@127.0.0.1:1")
    assert r.returncode == 1 and "missing.json" in r.stderr


def test_import_the_broker_rejects_exits_1(mgmt_broker, tmp_path):
    f = tmp_path / "wrong.json"
    f.write_text(json.dumps({"queues": [{"name": "cli-bad-vhost", "vhost": "cli-no-such-vhost", "durable": True,
                                         "auto_delete": False, "arguments": {}}]}))
    r = ferry("definitions", "import", str(f), url=mgmt_broker.http_url)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "400" in r.stderr and r.stdout == ""


def test_export_to_an_unwritable_file_exits_1(world, tmp_path):
    r = ferry("definitions", "export", str(tmp_path / "no-dir" / "x.json"), url=world.b.http_url)
    assert r.returncode == 1 and "cannot write" in r.stderr
