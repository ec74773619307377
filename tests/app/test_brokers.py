"""The test harness itself (tests/app/brokers.py): each of the three brokers carries a message,
the cluster really is three running nodes with quorum queues replicated on all of them, and the
private PostgreSQL serves SQL on its own port as a non-root user."""
import json
import os
import uuid

import pika
import pytest


def _conn(url):
    return pika.BlockingConnection(pika.URLParameters(url))


@pytest.mark.cluster_short
def test_broker_carries_a_confirmed_message_through_a_durable_queue(app_broker):
    q = f"harness-{uuid.uuid4().hex[:8]}"
    c = _conn(app_broker.url)
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare(q, durable=True, arguments=app_broker.queue_args())
    ch.basic_publish("", q, b"hello", pika.BasicProperties(delivery_mode=2, message_id="m1"))
    # On the cluster, read it back through another node: the queue is the cluster's, not node 1's.
    c2 = _conn(app_broker.urls[-1])
    ch2 = c2.channel()
    m, props, body = None, None, None
    for _ in range(50):
        m, props, body = ch2.basic_get(q, auto_ack=True)
        if m:
            break
    assert body == b"hello" and props.message_id == "m1"
    ch2.queue_delete(q)
    c2.close()
    c.close()


@pytest.mark.cluster_short
def test_cluster_is_three_running_nodes_and_queues_are_quorum_on_all(app_broker):
    if app_broker.kind != "cluster":
        assert app_broker.queue_args({"a": 1}) == {"a": 1}
        assert len(app_broker.urls) == 1
        return
    cluster = app_broker.impl
    assert len(cluster.running_nodes()) == 3
    assert cluster.started_in < 60, f"cluster took {cluster.started_in:.1f} s to start"
    q = f"harness-q-{uuid.uuid4().hex[:8]}"
    c = _conn(app_broker.url)
    c.channel().queue_declare(q, durable=True, arguments=app_broker.queue_args())
    c.close()
    out = cluster.nodes[0].ctl("list_queues", "name", "type", "members", "--formatter", "json")
    row = [r for r in json.loads(out) if r["name"] == q][0]
    assert row["type"] == "quorum"
    assert sorted(row["members"]) == sorted(n.node for n in cluster.nodes)


def test_postgres_runs_on_its_private_port_as_a_non_root_user(pg_server, pg_url):
    import psycopg2
    c = psycopg2.connect(pg_url)
    with c, c.cursor() as cur:
        cur.execute("CREATE TABLE t (x int)")
        cur.execute("INSERT INTO t VALUES (41), (1)")
        cur.execute("SELECT sum(x) FROM t")
        assert cur.fetchone()[0] == 42
        cur.execute("SELECT current_setting('port'), current_setting('listen_addresses')")
        assert cur.fetchone() == (str(pg_server.port), "127.0.0.1")
    c.close()
    # The postmaster we hold by PID is not root (PostgreSQL refuses root; we demote it).
    st = os.stat(f"/proc/{pg_server.proc.pid}")
    assert st.st_uid != 0
    # Each test's database is new and empty.
    assert pg_server.sql("SELECT count(*) FROM pg_tables WHERE tablename = 't'",
                         db=pg_url.rsplit("/", 1)[1]) == [(1,)]
