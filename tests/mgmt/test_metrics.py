"""Must-show 2 of issue 11: /metrics parsed by a real parser (Debian's `promtool check
metrics`, and python3-prometheus-client) and compared by name with rabbitmq_prometheus's
output (a private RabbitMQ with the plugin): every rabbitmq_* family it has, ferryd has,
with the same type; plus Ferry's ferry_* families."""
import shutil
import subprocess
import urllib.request

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mgmtlib import Api
from ferryd import free_port, wait_port


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def fetch(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


@pytest.fixture
def prom(ferryd_factory):
    http, prom = free_port(), free_port()
    d = ferryd_factory("--http-port", str(http), "--prometheus-port", str(prom))
    wait_port("127.0.0.1", prom, 10, d.proc)
    c = pika.BlockingConnection(pika.URLParameters(d.url))
    ch = c.channel()
    ch.queue_declare("m1", durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "m1.dlq"})
    ch.queue_declare("m1.dlq", durable=True)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "m1", b"x", pika.BasicProperties(delivery_mode=2))
    m = ch.basic_get("m1")
    ch.basic_reject(m[0].delivery_tag, requeue=False)
    yield d, http, prom
    c.close()


def test_promtool_and_prometheus_client_parse_both_endpoints(prom):
    d, http, port = prom
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is needed"
    for p, path in ((port, "/metrics"), (http, "/metrics"), (http, "/metrics/per-object")):
        text = fetch(p, path)
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert r.returncode == 0, (path, r.stdout, r.stderr)
        assert r.stdout.strip() == "" and r.stderr.strip() == "", (path, r.stdout, r.stderr)
        fams = families(text)
        assert len(fams) > 100
    # the prometheus port serves nothing else
    assert Api("127.0.0.1", port).get("/api/overview")[0] == 404


def test_values_follow_the_broker(prom):
    d, http, port = prom
    f = families(fetch(port))
    val = lambda n, **labels: [s.value for s in f[n].samples if s.labels == labels][0]  # noqa: E731
    assert val("rabbitmq_queue_messages_ready") == 5  # 4 in m1, 1 dead letter in m1.dlq
    assert val("rabbitmq_queues") == 2 and val("rabbitmq_connections") == 1
    assert val("rabbitmq_global_messages_received") == 5  # (the parser drops the _total)
    assert val("rabbitmq_global_messages_dead_lettered_rejected") == 1
    assert val("ferry_messages_dead_lettered", reason="rejected") == 1
    assert f["ferry_store_fsync_seconds"].type == "histogram"
    count = [s.value for s in f["ferry_store_fsync_seconds"].samples if s.name.endswith("_count")][0]
    assert count >= 1  # confirmed persistent publishes were fsynced
    assert f["ferry_store_batch_bytes"].type == "histogram"
    assert val("ferry_oldest_message_age_seconds") >= 0
    per = families(fetch(http, "/metrics/per-object"))
    ready = {s.labels["queue"]: s.value for s in per["rabbitmq_queue_messages_ready"].samples}
    assert ready == {"m1": 4, "m1.dlq": 1}
    dl = {(s.labels["queue"], s.labels["reason"]): s.value for s in per["ferry_queue_dead_lettered"].samples}
    assert dl[("m1", "rejected")] == 1 and dl[("m1.dlq", "rejected")] == 0


def test_every_rabbitmq_prometheus_family_is_in_ferryds_metrics(prom, rabbit):
    d, http, port = prom
    ours = families(fetch(port))
    theirs = families(fetch(rabbit.prometheus_port))
    # Erlang's VM and mnesia metrics (erlang_*) and the telemetry of the scrape itself are not
    # RabbitMQ's own: ferryd is not an Erlang VM. Every rabbitmq_* family must be there.
    wanted = {n: fam for n, fam in theirs.items() if n.startswith("rabbitmq_")}
    assert len(wanted) > 100
    missing = sorted(n for n in wanted if n not in ours)
    assert not missing, "rabbitmq_prometheus families ferryd lacks: %s" % missing
    wrong = sorted(n for n, fam in wanted.items() if ours[n].type != fam.type)
    assert not wrong, "families with another type: %s" % wrong
    for name in ("ferry_oldest_message_age_seconds", "ferry_messages_dead_lettered", "ferry_messages_retried",
                 "ferry_delayed_messages_pending", "ferry_alerts_firing", "ferry_store_fsync_seconds",
                 "ferry_store_batch_bytes"):
        assert name in ours, name
