"""The commands over Ferry's additions (/api/ferry), against ferryd: the oldest message's
age in `ferry queues`, `ferry dlq list|peek|redrive|purge`, `ferry alerts set|list|delete`."""
import json
import time

import pika

from clilib import ferry, ferry_until


def rows(out):
    import re
    lines = [l for l in out.splitlines() if l.strip()]
    heads = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(heads, re.split(r"\s{2,}", l.strip()))) for l in lines[1:]]


def dead_letter_setup(b, name, n):
    """name (dead-letters to exchange name-dlx) -> name.dlq; n messages rejected into it."""
    conn, ch = b.channel()
    ch.exchange_declare(name + "-dlx", "fanout")
    ch.queue_declare(name + ".dlq")
    ch.queue_bind(name + ".dlq", name + "-dlx")
    ch.queue_declare(name, arguments={"x-dead-letter-exchange": name + "-dlx"})
    for i in range(n):
        ch.basic_publish("", name, f"job {i}".encode(), pika.BasicProperties(correlation_id=f"c-{i}"))
    for _ in range(n):
        m, _, _ = ch.basic_get(name)
        ch.basic_reject(m.delivery_tag, requeue=False)
    conn.close()


def cleanup(b, name):
    conn, ch = b.channel()
    for q in (name, name + ".dlq"):
        ch.queue_delete(q)
    ch.exchange_delete(name + "-dlx")
    conn.close()


def test_queues_show_the_oldest_message_age(ferryd_mgmt, name):
    ferryd_mgmt.queue(name, ["old"])
    try:
        time.sleep(1.2)
        r = ferry("queues", "--name", f"^{name}$", url=ferryd_mgmt.http_url)
        assert r.returncode == 0, r.stderr
        age = rows(r.stdout)[0]["oldest"]
        assert age.endswith("s") and age != "-", r.stdout
        secs = float(age[:-2]) / 1000 if age.endswith("ms") else float(age[:-1])
        assert 1 <= secs < 30
        q = [q for q in json.loads(ferry("queues", "--json", url=ferryd_mgmt.http_url).stdout) if q["name"] == name][0]
        assert q["oldest_message_age_seconds"] >= 1.0
    finally:
        ferryd_mgmt.delete_queue(name)


def test_dlq_list_peek_redrive_purge(ferryd_mgmt, name):
    dead_letter_setup(ferryd_mgmt, name, 3)
    try:
        r = ferry_until(lambda r: any(x.get("queue") == name + ".dlq" and x.get("messages") == "3"
                                      for x in rows(r.stdout)), "dlq", "list", url=ferryd_mgmt.http_url)
        assert r.returncode == 0, r.stderr
        row = [x for x in rows(r.stdout) if x["queue"] == name + ".dlq"]
        assert row and row[0]["messages"] == "3" and row[0]["from queues"] == name, r.stdout
        assert row[0]["dead-lettered by reason"] == "rejected 3"
        j = [x for x in json.loads(ferry("dlq", "list", "--json", url=ferryd_mgmt.http_url).stdout)
             if x["queue"] == name + ".dlq"][0]
        assert j["sources"] == [name] and j["dead_lettered"]["rejected"] == 3 and j["messages"] == 3

        r = ferry("dlq", "peek", name + ".dlq", "--count", "2", url=ferryd_mgmt.http_url)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("--- message") == 2
        assert f"dead-lettered: rejected from queue '{name}'" in r.stdout and "job 0" in r.stdout
        peek = json.loads(ferry("dlq", "peek", name + ".dlq", "--json", url=ferryd_mgmt.http_url).stdout)
        assert [i["payload"] for i in peek["items"]] == ["job 0", "job 1", "job 2"]
        assert all(i["reason"] == "rejected" and i["original_queue"] == name for i in peek["items"])

        r = ferry("dlq", "redrive", name + ".dlq", "--count", "1", url=ferryd_mgmt.http_url)
        assert r.returncode == 0 and r.stdout == f"redrove 1 dead letter(s) from '{name}.dlq'\n", r.stderr
        conn, ch = ferryd_mgmt.channel()
        assert ch.queue_declare(name, passive=True).method.message_count == 1
        m, _, body = ch.basic_get(name, auto_ack=True)
        assert body == b"job 0"
        conn.close()
        r = ferry("dlq", "redrive", name + ".dlq", "--json", url=ferryd_mgmt.http_url)
        assert json.loads(r.stdout) == {"redriven": 2, "remaining": 0}

        dead_letter_setup(ferryd_mgmt, name, 2)  # the two redriven ones die again (two new ones wait)
        r = ferry("dlq", "purge", name + ".dlq", url=ferryd_mgmt.http_url)
        assert r.returncode == 0 and r.stdout == f"purged 2 dead letter(s) of '{name}.dlq'\n", (r.stdout, r.stderr)
        r = ferry("dlq", "peek", name + ".dlq", url=ferryd_mgmt.http_url)
        assert r.stdout == f"no dead letters in queue '{name}.dlq'\n"
    finally:
        cleanup(ferryd_mgmt, name)


def test_dlq_on_a_missing_queue_exits_1(ferryd_mgmt):
    for sub in ("peek", "redrive", "purge"):
        r = ferry("dlq", sub, "cli-no-such-dlq", url=ferryd_mgmt.http_url)
        assert r.returncode == 1 and "404" in r.stderr, (sub, r.stderr)


def alert_state(b, alert):
    r = ferry("alerts", "--json", url=b.http_url)
    assert r.returncode == 0, r.stderr
    return {a["name"]: a for a in json.loads(r.stdout)}.get(alert)


def test_alerts_set_fire_list_and_delete(ferryd_mgmt, name):
    ferryd_mgmt.queue(name, [])
    try:
        r = ferry("alerts", "set", name, "--queue", f"^{name}$", "--metric", "messages", "--op", ">",
                  "--threshold", "1", "--for", "0s", url=ferryd_mgmt.http_url)
        assert r.returncode == 0 and r.stdout == f"alert '{name}' set\n", r.stderr
        a = alert_state(ferryd_mgmt, name)
        assert (a["queue"], a["metric"], a["op"], a["threshold"], a["for_seconds"], a["vhost"]) == \
            (f"^{name}$", "messages", ">", 1, 0, "/")
        conn, ch = ferryd_mgmt.channel()
        for i in range(3):
            ch.basic_publish("", name, b"x")
        conn.close()
        deadline = time.time() + 5
        while alert_state(ferryd_mgmt, name)["state"] != "firing":
            assert time.time() < deadline, "the alert never fired"
            time.sleep(0.2)
        r = ferry("alerts", url=ferryd_mgmt.http_url)
        row = [x for x in rows(r.stdout) if x["name"] == name][0]
        assert row["state"] == "FIRING" and row["value"] == "3"
        assert row["rule"] == f"^{name}$ messages > 1 for 0ms"
        r = ferry("alerts", "--firing", "--json", url=ferryd_mgmt.http_url)
        assert name in [a["name"] for a in json.loads(r.stdout)]
        r = ferry("top", "--count", "1", url=ferryd_mgmt.http_url)
        assert f"FIRING {name}" in r.stdout
        r = ferry("alerts", "delete", name, "--json", url=ferryd_mgmt.http_url)
        assert json.loads(r.stdout) == {"name": name, "result": "deleted"}
        assert alert_state(ferryd_mgmt, name) is None
        r = ferry("alerts", "delete", name, url=ferryd_mgmt.http_url)
        assert r.returncode == 1 and "404" in r.stderr
    finally:
        ferryd_mgmt.delete_queue(name)


def test_alert_the_broker_refuses_exits_1(ferryd_mgmt):
    r = ferry("alerts", "set", "bad-regex", "--queue", "(", "--metric", "messages", "--op", ">",
              "--threshold", "1", url=ferryd_mgmt.http_url)
    assert r.returncode == 1 and "400" in r.stderr, (r.stdout, r.stderr)
