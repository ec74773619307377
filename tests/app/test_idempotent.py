"""The idempotent consumer (lib/idempotent.c) through a real consumer program
(tests/app/c/idem_consumer.c): the processed-message mark commits in the same SQLite or
PostgreSQL transaction as the handler's own writes, on each of the three brokers."""
import subprocess
import uuid

import pika
import pytest

from outbox_lib import conn, declare, delete, depth, idem_consumer_path, make_db

DBS = ["sqlite", "postgresql"]


@pytest.fixture(params=DBS)
def app_db(request, tmp_path, pg_server):
    db = make_db(request.param, tmp_path, pg_server)
    return db


def publish(broker, q, msgs):
    """msgs: [(message_id or None, body)] with confirms."""
    c = conn(broker.url)
    ch = c.channel()
    ch.confirm_delivery()
    for mid, body in msgs:
        ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2, message_id=mid))
    c.close()


def consume(broker, q, db, *args, timeout=60):
    r = subprocess.run([idem_consumer_path(), "--uri", broker.url, "--queue", q, "--db", db.url, "--idle-ms", "1000"]
                       + list(args), capture_output=True, text=True, timeout=timeout)
    lines = [line.split() for line in r.stdout.splitlines()]
    return r, lines


def effects(db):
    return sorted(db.query("SELECT message_id, count(*) FROM effects GROUP BY message_id"))


def marks(db):
    return db.query("SELECT count(*) FROM ferry_processed")[0][0]


def test_a_message_delivered_three_times_has_its_effect_once(app_broker, app_db):
    q = f"idem-dup-{uuid.uuid4().hex[:8]}"
    declare(app_broker, q)
    publish(app_broker, q, [("m-1", b"one"), ("m-1", b"one"), ("m-2", b"two"), ("m-1", b"one")])
    r, lines = consume(app_broker, q, app_db)
    assert r.returncode == 0, r.stderr
    assert [x[0] for x in lines].count("processed") == 2
    assert sorted(x[1] for x in lines if x[0] == "duplicate") == ["m-1", "m-1"]
    assert effects(app_db) == [("m-1", 1), ("m-2", 1)]
    assert marks(app_db) == 2
    assert depth(app_broker, q) == 0
    delete(app_broker, q)


def test_a_failing_handler_rolls_back_its_writes_and_the_mark(app_broker, app_db):
    q = f"idem-fail-{uuid.uuid4().hex[:8]}"
    declare(app_broker, q)
    publish(app_broker, q, [(f"f-{i}", b"x") for i in range(3)])
    # The handler writes, then fails the first time it sees each message: the transaction is
    # rolled back (write and mark), the message requeued, and the redelivery processes it.
    r, lines = consume(app_broker, q, app_db, "--fail-first")
    assert r.returncode == 0, r.stderr
    assert sorted(x[1] for x in lines if x[0] == "failed") == ["f-0", "f-1", "f-2"]
    assert sorted(x[1] for x in lines if x[0] == "processed") == ["f-0", "f-1", "f-2"]
    assert not [x for x in lines if x[0] == "duplicate"], "a rolled-back mark must not count as processed"
    assert effects(app_db) == [(f"f-{i}", 1) for i in range(3)]
    assert marks(app_db) == 3
    delete(app_broker, q)


@pytest.mark.cluster_short
def test_consumer_killed_after_its_commit_before_its_ack_sees_the_redelivery_as_a_duplicate(app_broker, app_db):
    q = f"idem-kill-{uuid.uuid4().hex[:8]}"
    declare(app_broker, q)
    publish(app_broker, q, [("k-1", b"payload")])
    r, lines = consume(app_broker, q, app_db, "--die-after-commit")
    assert r.returncode == -9
    assert lines == [["processed", "k-1"]]
    assert effects(app_db) == [("k-1", 1)]
    # The broker gives the unacked message back (redelivered); the mark says it was done.
    r, lines = consume(app_broker, q, app_db)
    assert r.returncode == 0, r.stderr
    assert lines == [["duplicate", "k-1"]]
    assert effects(app_db) == [("k-1", 1)]
    assert depth(app_broker, q) == 0
    delete(app_broker, q)


def test_a_message_without_message_id_is_refused_not_processed(broker, tmp_path, pg_server):
    db = make_db("sqlite", tmp_path)
    q = f"idem-noid-{uuid.uuid4().hex[:8]}"
    c = conn(broker.url)
    c.channel().queue_declare(q, durable=True)
    c.close()
    publish(broker, q, [(None, b"anonymous")])
    r, lines = consume(broker, q, db, "--max", "2")
    # Without an id a message cannot be recognised again: FERRY_EINVAL, nothing written.
    assert lines == [["failed", "-1"], ["failed", "-1"]], lines
    assert db.query("SELECT count(*) FROM effects")[0][0] == 0
    assert marks(db) == 0
    delete(broker, q)


def test_two_consumers_racing_on_one_postgres_mark_apply_the_effect_once(broker, pg_server, tmp_path):
    """Two consumers on two queues receive the same message id at the same moment; the
    second INSERT of the mark waits on the first transaction's key and becomes a duplicate."""
    db = make_db("postgresql", tmp_path, pg_server)
    db.execute("CREATE TABLE effects (message_id text, body bytea)")  # before two consumers race to make it
    qs = [f"idem-race-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    c = conn(broker.url)
    ch = c.channel()
    for q in qs:
        ch.queue_declare(q, durable=True)
    c.close()
    n = 40
    for q in qs:
        publish(broker, q, [(f"r-{i}", b"x") for i in range(n)])
    procs = [subprocess.Popen([idem_consumer_path(), "--uri", broker.url, "--queue", q, "--db", db.url,
                               "--idle-ms", "1500"], stdout=subprocess.PIPE, text=True) for q in qs]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    lines = [ln.split() for o in outs for ln in o.splitlines()]
    assert sorted(x[1] for x in lines if x[0] == "processed") == sorted(f"r-{i}" for i in range(n))
    assert len([x for x in lines if x[0] == "duplicate"]) == n
    assert effects(db) == sorted((f"r-{i}", 1) for i in range(n))
    delete(broker, *qs)
