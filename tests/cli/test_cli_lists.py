"""`ferry queues`, `ferry exchanges`, `ferry connections`: the table shows what the API says,
--json is the API's list itself, and the filters and sorting select and order rows."""
import json

import pika

from clilib import ferry, ferry_until


def rows(out):
    """The table as a list of dicts (header -> cell), cells split on runs of 2+ spaces."""
    import re
    lines = [l for l in out.splitlines() if l.strip()]
    heads = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(heads, re.split(r"\s{2,}", l.strip()))) for l in lines[1:]]


def test_queues_table_shows_depth_ready_unacked_and_consumers(world):
    r = ferry("queues", url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    row = [x for x in rows(r.stdout) if x["name"] == world.depth]
    assert len(row) == 1, r.stdout
    assert row[0]["vhost"] == "/" and row[0]["type"] == "classic"
    assert (row[0]["messages"], row[0]["ready"], row[0]["unacked"], row[0]["consumers"]) == ("3", "2", "1", "1")


def test_queues_json_is_the_api_list(world):
    r = ferry("queues", "--json", url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, list)
    q = [x for x in data if x["name"] == world.json][0]
    assert q["vhost"] == "/" and q["durable"] is True and q["auto_delete"] is False
    assert q["arguments"] == {"x-max-length": 10}
    assert q["messages"] == 1 and q["messages_ready"] == 1 and q["messages_unacknowledged"] == 0
    d = [x for x in data if x["name"] == world.depth][0]
    assert (d["messages"], d["messages_unacknowledged"], d["consumers"]) == (3, 1, 1)


def test_queues_name_filter_and_sort(world):
    r = ferry("queues", "--name", f"^{world.prefix}(big|small)$", "--sort", "messages", url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    assert [x["name"] for x in rows(r.stdout)] == [world.big, world.small]
    r = ferry("queues", "--name", f"^{world.prefix}", "--sort", "name", "--json", url=world.b.http_url)
    assert [q["name"] for q in json.loads(r.stdout)] == sorted([world.big, world.small, world.depth, world.json])
    r = ferry("queues", "--name", "^no-queue-is-called-this$", url=world.b.http_url)
    assert r.returncode == 0 and r.stdout == "no queues\n"


def test_queues_vhost_that_does_not_exist_fails_with_1(mgmt_broker):
    r = ferry("queues", "--vhost", "no-such-vhost", url=mgmt_broker.http_url)
    assert r.returncode == 1
    assert "404" in r.stderr


def test_queues_bad_regex_is_a_usage_error(mgmt_broker):
    r = ferry("queues", "--name", "(", url=mgmt_broker.http_url)
    assert r.returncode == 2 and "--name" in r.stderr


def test_exchanges_table_and_json(mgmt_broker, name):
    conn, ch = mgmt_broker.channel()
    try:
        ch.exchange_declare(name, "topic", durable=True)
        r = ferry("exchanges", url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        by_name = {x["name"]: x for x in rows(r.stdout)}
        assert by_name[name]["type"] == "topic" and by_name[name]["flags"] == "D"
        assert by_name["(AMQP default)"]["type"] == "direct"
        assert by_name["amq.fanout"]["type"] == "fanout"
        r = ferry("exchanges", "--json", "--vhost", "/", url=mgmt_broker.http_url)
        x = [e for e in json.loads(r.stdout) if e["name"] == name][0]
        assert (x["type"], x["durable"], x["auto_delete"], x["internal"]) == ("topic", True, False, False)
    finally:
        ch.exchange_delete(name)
        conn.close()


def test_connections_lists_a_client_with_its_user_and_product(mgmt_broker):
    params = pika.ConnectionParameters("127.0.0.1", mgmt_broker.amqp_port,
                                       client_properties={"product": "cli-test-client", "version": "9.9"})
    conn = pika.BlockingConnection(params)
    try:
        import time
        deadline = time.time() + 15
        while True:
            r = ferry("connections", "--json", url=mgmt_broker.http_url)
            assert r.returncode == 0, r.stderr
            mine = [c for c in json.loads(r.stdout)
                    if c.get("client_properties", {}).get("product") == "cli-test-client"]
            if mine or time.time() > deadline:
                break
            time.sleep(0.2)
        assert len(mine) == 1
        assert mine[0]["user"] == "guest" and mine[0]["vhost"] == "/"
        r = ferry("connections", url=mgmt_broker.http_url)
        row = [x for x in rows(r.stdout) if x["client"] == "cli-test-client 9.9"]
        assert len(row) == 1, r.stdout
        assert row[0]["user"] == "guest" and row[0]["peer"].startswith("127.0.0.1:")
    finally:
        conn.close()


def test_terminal_escapes_in_names_and_payloads_are_not_printed_raw(mgmt_broker, name):
    """A queue may be called anything and hold anything: the tables and `ferry get` must not
    hand escape sequences to the terminal."""
    evil = name + "-\x1b[2J\x07"
    conn, ch = mgmt_broker.channel()
    try:
        ch.queue_declare(evil)
        ch.basic_publish("", evil, b"before\x1b[31mred\x1b[0m after")
        r = ferry_until(lambda r: name in r.stdout, "queues", "--name", f"^{name}", url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        assert name in r.stdout and "\x1b" not in r.stdout and "\x07" not in r.stdout
        r = ferry("get", evil, url=mgmt_broker.http_url)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout and "before\\x1b[31mred" in r.stdout
    finally:
        ch.queue_delete(evil)
        conn.close()
