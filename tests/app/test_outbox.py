"""The transactional outbox relay (`ferry outbox relay`, lib/outbox*.c), each test against
ferryd, a single RabbitMQ and the 3-node RabbitMQ cluster with quorum queues (app_broker), and
with the outbox in SQLite and in PostgreSQL (app_db)."""
import json
import os
import subprocess
import time
import uuid
from collections import defaultdict

import pytest

from outbox_lib import (Relay, cli_path, declare, delete, depth, drain, events, idem_consumer_path, make_db,
                        wait_depth, conn)

DBS = ["sqlite", "postgresql"]


@pytest.fixture(params=DBS)
def app_db(request, tmp_path, pg_server):
    return make_db(request.param, tmp_path, pg_server)


def qname(tag):
    return f"outbox-{tag}-{uuid.uuid4().hex[:8]}"


def drain_amqp(broker, q):
    """Every message in q read with py-amqp (kombu's client), which decodes every AMQP field
    type faithfully (pika reads doubles as integers and signed longs as unsigned)."""
    import amqp
    c = amqp.Connection(host=f"127.0.0.1:{broker.port}", userid="guest", password="guest", virtual_host="/")
    c.connect()
    ch = c.channel()
    out = []
    while True:
        m = ch.basic_get(q, no_ack=True)
        if m is None:
            break
        body = m.body if isinstance(m.body, bytes) else m.body.encode("latin-1")
        out.append((m.properties, body))
    c.close()
    return out


def by_aggregate(msgs):
    seqs = defaultdict(list)
    for p, _ in msgs:
        seqs[p.headers["agg"]].append(p.headers["seq"])
    return seqs


def test_relay_publishes_each_row_once_with_event_id_as_message_id(app_broker, app_db, tmp_path):
    q = qname("basic")
    declare(app_broker, q)
    rows = events(3, 4, routing_key=q)
    # Hostile rows: every byte value in the body, an empty body, no content type, nested headers
    # of every JSON type, a unicode aggregate id, a 255-byte event id.
    rows.append({"event_id": "x" * 255, "aggregate_id": "agg-é-✓", "routing_key": q,
                 "headers": {"agg": "odd", "seq": 0, "nested": {"list": [1, "two", True, None, 2.5]}, "neg": -7},
                 "content_type": None, "body": bytes(range(256)) * 3})
    rows.append({"event_id": "empty-body", "aggregate_id": "agg-é-✓", "routing_key": q,
                 "headers": {"agg": "odd", "seq": 1}, "content_type": "text/plain", "body": b""})
    rows.append({"event_id": "one-mib", "aggregate_id": "big", "routing_key": q, "headers": {"agg": "big", "seq": 0},
                 "content_type": "application/octet-stream", "body": os.urandom(1 << 20)})
    app_db.insert(rows)
    r = Relay(app_db.url, app_broker.url, "--poll", "50ms", log_path=str(tmp_path / "relay.log"))
    wait_depth(app_broker, q, len(rows))
    log = r.stop()
    assert r.sent_count() == len(rows), log
    msgs = drain_amqp(app_broker, q)
    assert len(msgs) == len(rows)
    want = {x["event_id"]: x for x in rows}
    for p, b in msgs:
        w = want.pop(p["message_id"])
        assert b == w["body"]
        assert p["delivery_mode"] == 2
        assert p.get("content_type") == w["content_type"]
        # (quorum queues add x-delivery-count; the relay's headers are all there, unchanged)
        got = {k: v for k, v in p["application_headers"].items() if k != "x-delivery-count"}
        assert got == w["headers"]
    assert not want
    assert [p["application_headers"]["seq"] for p, _ in msgs if p["application_headers"]["agg"] == "a1"] == [0, 1, 2, 3]
    # Sent rows are kept (default retention 7 days) with sent_at set.
    assert app_db.pending() == 0 and app_db.sent() == len(rows)
    delete(app_broker, q)


@pytest.mark.cluster_short
def test_relay_killed_between_publish_and_mark_publishes_again_and_effect_is_once(app_broker, app_db, tmp_path):
    ex = f"outbox-fan-{uuid.uuid4().hex[:8]}"
    q_plain, q_dedup = qname("plain"), qname("dedup")
    c = conn(app_broker.url)
    ch = c.channel()
    ch.exchange_declare(ex, "fanout", durable=True)
    ch.queue_declare(q_plain, durable=True, arguments=app_broker.queue_args())
    ch.queue_bind(q_plain, ex)
    if app_broker.ferry:
        ch.queue_declare(q_dedup, durable=True, arguments={"x-deduplication-window": 600000})
        ch.queue_bind(q_dedup, ex)
    c.close()
    rows = events(2, 5, exchange=ex, routing_key="")
    app_db.insert(rows)

    # 1. The relay dies (SIGKILL, from the FERRY_OUTBOX_FAULT test hook) after the broker
    #    confirmed the batch and before the rows are marked sent.
    # (--lease 1s: on SQLite the dead relay's lease must expire before the next one publishes)
    r1 = Relay(app_db.url, app_broker.url, "--lease", "1s", env={"FERRY_OUTBOX_FAULT": "kill-after-confirm"},
               log_path=str(tmp_path / "relay1.log"))
    assert r1.wait(30) == -9, r1.text()
    assert "kill-after-confirm" in r1.text()
    assert app_db.pending() == len(rows), "no row may be marked: the relay died before marking"
    wait_depth(app_broker, q_plain, len(rows))

    # 2. A new relay finds the rows pending and publishes them again (at-least-once).
    r2 = Relay(app_db.url, app_broker.url, "--poll", "50ms", "--lease", "1s", log_path=str(tmp_path / "relay2.log"))
    wait_depth(app_broker, q_plain, 2 * len(rows))
    r2.stop()
    assert app_db.pending() == 0
    assert r2.sent_count() == len(rows)

    if app_broker.ferry:
        # ferryd's x-deduplication-window drops the second copy (message_id = event_id).
        time.sleep(0.3)
        assert depth(app_broker, q_dedup) == len(rows)

    # 3. The idempotent consumer reads both copies of every event; its effect happens once.
    out = subprocess.run([idem_consumer_path(), "--uri", app_broker.url, "--queue", q_plain, "--db", app_db.url,
                          "--consumer", "orders", "--idle-ms", "1500"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    processed = [lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "processed"]
    dups = [lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "duplicate"]
    assert sorted(processed) == sorted(x["event_id"] for x in rows)
    assert sorted(dups) == sorted(x["event_id"] for x in rows)
    effects = app_db.query("SELECT message_id, count(*) FROM effects GROUP BY message_id")
    assert sorted(effects) == sorted((x["event_id"], 1) for x in rows)
    delete(app_broker, q_plain, *([q_dedup] if app_broker.ferry else []))


@pytest.mark.cluster_short
def test_two_relays_keep_per_aggregate_order(app_broker, app_db, tmp_path):
    q = qname("order")
    declare(app_broker, q)
    n_aggs, per = 8, 30
    allrows = events(n_aggs, per, routing_key=q)
    half = len(allrows) // 2
    app_db.insert(allrows[:half])
    relays = [Relay(app_db.url, app_broker.url, "--batch", "7", "--poll", "20ms", log_path=str(tmp_path / f"r{i}.log"))
              for i in range(2)]
    # The rest arrives while both relays run, in small transactions.
    for i in range(half, len(allrows), 10):
        app_db.insert(allrows[i:i + 10])
        time.sleep(0.02)
    wait_depth(app_broker, q, len(allrows), timeout=60)
    for r in relays:
        r.stop()
    msgs = drain(app_broker, q)
    assert len(msgs) == len(allrows), "no duplicates without a crash"
    seqs = by_aggregate(msgs)
    for a in range(n_aggs):
        assert seqs[f"a{a}"] == list(range(per)), f"aggregate a{a} out of order: {seqs[f'a{a}']}"
    counts = sorted(r.sent_count() for r in relays)
    assert sum(counts) == len(allrows)
    if app_db.kind == "sqlite":
        # One lease: exactly one relay is active while both live.
        assert counts == [0, len(allrows)], counts
    else:
        # Advisory locks per aggregate: both relays share the work.
        assert counts[0] > 0, counts
    assert app_db.pending() == 0
    delete(app_broker, q)


def test_standby_relay_takes_over_when_the_active_one_dies(app_broker, app_db, tmp_path):
    q = qname("takeover")
    declare(app_broker, q)
    rows = events(4, 20, routing_key=q)
    a = Relay(app_db.url, app_broker.url, "--lease", "1s", "--poll", "20ms", log_path=str(tmp_path / "a.log"))
    app_db.insert(rows[:40])
    wait_depth(app_broker, q, 40)
    b = Relay(app_db.url, app_broker.url, "--lease", "1s", "--poll", "20ms", log_path=str(tmp_path / "b.log"))
    time.sleep(0.3)
    a.kill()
    app_db.insert(rows[40:])
    wait_depth(app_broker, q, len(rows), timeout=30)
    b.stop()
    assert b.sent_count() >= 40, b.text()
    msgs = drain(app_broker, q)
    seqs = by_aggregate(msgs)
    for agg, s in seqs.items():
        # a kill may repeat an event (at-least-once); first deliveries stay in order, none missing
        first = list(dict.fromkeys(s))
        assert first == list(range(20)), (agg, s)
    assert app_db.pending() == 0
    delete(app_broker, q)


def test_relay_survives_the_broker_going_away_and_publishes_after_it_returns(ferryd_factory, app_db, tmp_path):
    d = ferryd_factory()
    q = qname("down")
    c = conn(d.url)
    c.channel().queue_declare(q, durable=True)
    c.close()
    r = Relay(app_db.url, d.url, "--poll", "50ms", log_path=str(tmp_path / "relay.log"))
    app_db.insert(events(1, 3, routing_key=q))
    deadline = time.time() + 10
    while app_db.pending() and time.time() < deadline:
        time.sleep(0.05)
    assert app_db.pending() == 0
    d.stop_and_check()
    app_db.insert(events(1, 4, routing_key=q))
    time.sleep(1)
    assert app_db.pending() == 4, "nothing is marked sent while the broker is away"
    d.start()  # same port, same data dir
    deadline = time.time() + 20
    while app_db.pending() and time.time() < deadline:
        time.sleep(0.1)
    assert app_db.pending() == 0, r.text()
    log = r.stop()
    assert "retrying" in log and "recovered" in log, log
    c = conn(d.url)
    assert c.channel().queue_declare(q, passive=True).method.message_count == 7
    c.close()


def test_postgres_notify_wakes_the_relay_without_polling(broker, pg_server, tmp_path):
    db = make_db("postgresql", tmp_path, pg_server)
    q = qname("notify")
    c = conn(broker.url)
    c.channel().queue_declare(q, durable=True)
    c.close()
    r = Relay(db.url, broker.url, "--poll", "1h", log_path=str(tmp_path / "relay.log"))
    time.sleep(0.5)  # the relay's first round found nothing; from now on only NOTIFY can wake it
    for i in range(3):
        t0 = time.time()
        db.insert(events(1, 1, routing_key=q))
        wait_depth(broker, q, i + 1, timeout=5)
        assert time.time() - t0 < 2.0, "a NOTIFY should wake the relay at once (poll is 1h)"
    r.stop()
    delete(broker, q)


def test_sent_rows_are_deleted_after_the_retention(broker, app_db, tmp_path):
    q = qname("retention")
    c = conn(broker.url)
    c.channel().queue_declare(q, durable=True)
    c.close()
    app_db.insert(events(1, 5, routing_key=q))
    r = Relay(app_db.url, broker.url, "--poll", "50ms", "--retention", "200ms", log_path=str(tmp_path / "relay.log"))
    wait_depth(broker, q, 5)
    deadline = time.time() + 10
    while app_db.query("SELECT count(*) FROM ferry_outbox")[0][0] and time.time() < deadline:
        time.sleep(0.1)
    assert app_db.query("SELECT count(*) FROM ferry_outbox")[0][0] == 0
    r.stop()
    assert depth(broker, q) == 5
    delete(broker, q)


def test_a_row_the_broker_cannot_take_holds_back_only_its_aggregate(broker, tmp_path):
    db = make_db("sqlite", tmp_path)
    q = qname("poison")
    c = conn(broker.url)
    c.channel().queue_declare(q, durable=True)
    c.close()
    # A row whose headers are not a JSON object, written past the table's CHECK (as a table
    # made by hand without it would allow), then a good row of the same aggregate, and a
    # good aggregate.
    import sqlite3
    s = sqlite3.connect(db.path)
    s.execute("PRAGMA ignore_check_constraints = ON")
    s.execute("INSERT INTO ferry_outbox (event_id, aggregate_id, routing_key, headers, body) "
              "VALUES ('bad-1', 'poisoned', ?, '[1, 2]', x'00')", (q,))
    s.commit()
    s.close()
    db.insert([{"event_id": "bad-2", "aggregate_id": "poisoned", "routing_key": q, "headers": {"agg": "p", "seq": 1}}])
    # A valid JSON object nested deeper than an AMQP table the relay will build (32 levels).
    deep = {"agg": "deep", "seq": 0}
    for _ in range(40):
        deep = {"n": deep}
    db.insert([{"event_id": "deep-1", "aggregate_id": "deep", "routing_key": q, "headers": deep}])
    db.insert(events(1, 3, routing_key=q))
    r = Relay(db.url, broker.url, "--poll", "50ms", log_path=str(tmp_path / "relay.log"))
    wait_depth(broker, q, 3)
    time.sleep(0.5)
    log = r.stop()
    assert depth(broker, q) == 3
    assert sorted(x[0] for x in db.query("SELECT event_id FROM ferry_outbox WHERE sent_at IS NULL")) == \
        ["bad-1", "bad-2", "deep-1"]
    assert "bad-1" in log and "headers must be a JSON object" in log, log
    assert "deep-1" in log and "nesting deeper than 32" in log, log
    delete(broker, q)


def test_schema_makes_the_table_the_issue_defines_and_is_idempotent(app_db):
    r = app_db.schema()  # a second time: nothing breaks, nothing is dropped
    j = subprocess.run([cli_path(), "outbox", "schema", "--db", app_db.url, "--json"], capture_output=True, text=True)
    assert j.returncode == 0 and json.loads(j.stdout)["tables"] == ["ferry_outbox", "ferry_processed"], j
    app_db.insert(events(1, 1))
    app_db.schema()
    assert app_db.pending() == 1
    if app_db.kind == "sqlite":
        cols = [x[1] for x in app_db.query("PRAGMA table_info(ferry_outbox)")]
    else:
        cols = [x[0] for x in app_db.query("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'ferry_outbox' ORDER BY ordinal_position")]
        trig = app_db.query("SELECT tgname FROM pg_trigger WHERE tgrelid = 'ferry_outbox'::regclass AND NOT tgisinternal")
        assert trig == [("ferry_outbox_notify",)]
        assert "NOTIFY trigger" in r.stdout
    assert cols == ["id", "event_id", "aggregate_id", "exchange", "routing_key", "headers", "content_type", "body",
                    "created_at", "sent_at"]
    # The table refuses what cannot become a message: a duplicate event id, a non-object
    # headers value, an empty aggregate id.
    for bad in ({"event_id": events(1, 1)[0]["event_id"] + "x", "aggregate_id": ""},):
        with pytest.raises(Exception):
            app_db.insert([dict(events(1, 1)[0], **bad)])
    first = app_db.query("SELECT event_id FROM ferry_outbox")[0][0]
    with pytest.raises(Exception):
        app_db.insert([dict(events(1, 1)[0], event_id=first)])
    c = app_db.connect()
    with pytest.raises(Exception):
        c.cursor().execute("INSERT INTO ferry_outbox (event_id, aggregate_id, headers) VALUES ('h', 'a', '[1]')")
    c.close()


def _run(*args, env=None, timeout=30):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([cli_path(), "outbox"] + list(args), capture_output=True, text=True, timeout=timeout, env=e)


@pytest.mark.parametrize("sub", ["relay", "schema"])
@pytest.mark.parametrize("db", ["mysql://root@127.0.0.1/app", "", "sqlite:", "postgresql://", "app.db",
                                "SQLITE:/x.db", "sqlite3:/tmp/x.db"])
def test_bad_db_value_is_a_clear_error_naming_it(sub, db):
    r = _run(sub, "--db", db)
    assert r.returncode == 2, r
    assert f"--db '{db}'" in r.stderr and "sqlite:PATH or postgresql://" in r.stderr, r.stderr


def test_relay_usage_errors_name_the_flag(tmp_path, broker):
    assert "--db is required" in _run("relay").stderr
    assert _run("relay").returncode == 2
    db = make_db("sqlite", tmp_path)
    for args, flag in ((["--poll", "5"], "--poll"), (["--poll", "0ms"], "--poll"), (["--lease", "fast"], "--lease"),
                       (["--retention", "-1s"], "--retention"), (["--batch", "0"], "--batch"),
                       (["--batch", "1e3"], "--batch"), (["--frobnicate"], "--frobnicate"), (["--uri"], "--uri")):
        r = _run("relay", "--db", db.url, *args)
        assert r.returncode == 2 and flag in r.stderr, (args, r.stderr)
    r = _run("relay", "--db", db.url, "--uri", "http//nope")
    assert r.returncode == 2 and "invalid AMQP URI 'http//nope'" in r.stderr, r.stderr
    r = _run("bogus")
    assert r.returncode == 2 and "'bogus'" in r.stderr


def test_relay_errors_say_which_database_or_broker_failed(tmp_path, pg_server, broker):
    missing = str(tmp_path / "nope" / "app.db")
    r = _run("relay", "--db", f"sqlite:{missing}", "--uri", broker.url)
    assert r.returncode == 1 and missing in r.stderr, r.stderr
    import sqlite3
    empty = str(tmp_path / "empty.db")
    sqlite3.connect(empty).execute("CREATE TABLE other (x)")
    r = _run("relay", "--db", f"sqlite:{empty}", "--uri", broker.url)
    assert r.returncode == 1 and "no ferry_outbox table" in r.stderr and "ferry outbox schema" in r.stderr, r.stderr
    r = _run("relay", "--db", f"postgresql://postgres@127.0.0.1:{pg_server.port}/no_such_db", "--uri", broker.url)
    assert r.returncode == 1 and "cannot connect to PostgreSQL" in r.stderr and "no_such_db" in r.stderr, r.stderr
    db = make_db("sqlite", tmp_path)
    r = _run("relay", "--db", db.url, "--uri", "amqp://guest:guest@127.0.0.1:1/")
    assert r.returncode == 3 and "cannot reach the broker" in r.stderr, r.stderr
    r = _run("relay", "--db", db.url, "--uri", f"amqp://guest:wrong@127.0.0.1:{broker.port}/")
    assert r.returncode == 3 and "login" in r.stderr, r.stderr


def test_relay_takes_the_broker_from_ferry_url(tmp_path, broker):
    db = make_db("sqlite", tmp_path)
    q = qname("env")
    c = conn(broker.url)
    c.channel().queue_declare(q, durable=True)
    c.close()
    db.insert(events(1, 2, routing_key=q))
    import signal as sig
    p = subprocess.Popen([cli_path(), "outbox", "relay", "--db", db.url], env=dict(os.environ, FERRY_URL=broker.url),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_depth(broker, q, 2)
    p.send_signal(sig.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert f"127.0.0.1:{broker.port}" in err
    delete(broker, q)
