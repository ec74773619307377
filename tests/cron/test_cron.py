"""Broker-held cron: a publish with x-ferry-cron to an x-delayed-message exchange is a
schedule named by its message_id; ferryd routes one copy per tick (x-ferry-scheduled-at,
message_id NAME:TICK), exactly once per tick across restarts, one catch-up copy for ticks
that fell while it was down. Ferry-only (RabbitMQ ignores x-ferry-* headers)."""
import time

import pika
import pika.exceptions as px
import pytest

from cron_util import connect, drain, recovered_at, schedule, topology, wait_until_second

pytestmark = pytest.mark.ferry_only

EVERY_2S = "*/2 * * * * *"


def assert_consecutive(ticks, step=2):
    assert ticks == sorted(ticks), ticks
    assert len(set(ticks)) == len(ticks), f"duplicate ticks: {ticks}"
    for a, b in zip(ticks, ticks[1:]):
        assert b - a == step, f"gap or double between {a} and {b}: {ticks}"


def test_six_field_schedule_every_2s_fires_once_per_tick(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    t0 = time.time()
    schedule(ch, x, "beat", EVERY_2S, body=b"payload", content_type="text/plain",
             headers={"team": "ops", "x-delay": 5000, "x-ferry-scheduled-at": 7})
    got = drain(ch, q, 7.0)
    ticks = [g[0] for g in got]
    assert len(ticks) >= 3, ticks
    assert_consecutive(ticks)
    assert all(t % 2 == 0 for t in ticks)
    assert ticks[0] > t0 - 0.001  # the creating publish itself was not routed
    for tick, redelivered, props, body in got:
        assert body == b"payload"
        assert props.message_id == f"beat:{tick}"
        assert props.content_type == "text/plain" and props.delivery_mode == 2
        assert props.headers["team"] == "ops"
        # the schedule's own headers (and x-delay) are not on the copies
        assert "x-ferry-cron" not in props.headers and "x-delay" not in props.headers
        assert not redelivered
        # each copy arrives at its tick (within the loop's and the test's polling slack)
    assert abs(ticks[-1] - time.time()) < 3


def test_five_field_schedule_is_accepted_and_confirmed(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "minutely", "* * * * *")  # confirmed (no exception)
    schedule(ch, x, "yearly", "59 59 23 31 12 *")
    schedule(ch, x, "macro", "@hourly")
    for n in ("minutely", "yearly", "macro"):
        schedule(ch, x, n, "")  # removed again


def test_tick_missed_while_stopped_fires_once_at_start(ferryd_factory, name):
    d = ferryd_factory()
    c = connect(d)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "beat", EVERY_2S)
    time.sleep(4.2)  # two ticks at least (an interval of L seconds holds floor(L/2) even ones)
    wait_until_second(1)
    c.close()
    assert d.stop() == 0  # SIGTERM: a clean stop
    stopped = time.time()
    time.sleep(4.4)  # at least two ticks fall while ferryd is down
    started = time.time()
    d.start()
    c = connect(d)
    ch = c.channel()
    got = drain(ch, q, 3.5)
    c.close()
    ticks = [g[0] for g in got]
    back, n_missed = recovered_at(d)  # schedules re-armed (a slow start counts as down)
    assert n_missed == 1
    missed = [t for t in range(int(stopped) + 1, int(back) + 1) if t % 2 == 0]
    assert len([t for t in missed if t < started]) >= 2, (stopped, started)  # while surely down
    down = [t for t in ticks if stopped < t <= back]
    assert len(down) == 1, f"catch-up copies for ticks while down: {down} (ticks that fell: {missed})"
    assert down[0] == missed[-1]  # the latest missed tick, not the first
    before = [t for t in ticks if t <= stopped]
    after = [t for t in ticks if t > back]
    assert len(before) >= 2 and len(after) >= 1, (before, after)
    assert_consecutive(before)  # every tick up to the stop, once
    assert_consecutive(down + after)  # then the catch-up, then every tick again
    assert len(set(ticks)) == len(ticks)
    d.stop_and_check()


def test_kill9_never_fires_a_tick_twice_and_catches_up_once(ferryd_factory, name):
    d = ferryd_factory()
    c = connect(d)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "beat", EVERY_2S)
    time.sleep(4.2)  # two ticks at least
    wait_until_second(1, 0.5)  # 1.5 s after a tick: its copy and its mark are synced
    c.close()
    d.kill9()
    killed = time.time()
    time.sleep(3.6)
    started = time.time()
    d.start()
    c = connect(d)
    ch = c.channel()
    got = drain(ch, q, 3)
    c.close()
    ticks = [g[0] for g in got]
    assert len(set(ticks)) == len(ticks), f"a tick fired twice: {sorted(ticks)}"
    back, n_missed = recovered_at(d)
    assert n_missed == 1 and back > started
    before = [g for g in got if g[0] < killed]
    assert len(before) >= 2, [g[0] for g in got]
    assert all(g[1] for g in before)  # recovered after the crash: redelivered, not fired again
    down = [g for g in got if killed < g[0] <= back]
    assert len(down) == 1 and not down[0][1], f"catch-up: {[(g[0], g[1]) for g in down]}"
    assert down[0][0] == max(t for t in range(int(killed) + 1, int(back) + 1) if t % 2 == 0)
    assert_consecutive([g[0] for g in before])
    assert_consecutive([g[0] for g in got if g[0] > killed])
    d.stop_and_check()


def test_republishing_the_same_message_id_replaces_the_schedule(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "job", "* * * * * *", body=b"old")
    time.sleep(2.2)
    sent = time.time()
    schedule(ch, x, "job", EVERY_2S, body=b"new")
    confirmed = time.time()  # the replacement took effect between sent and confirmed
    time.sleep(4.5)
    schedule(ch, x, "job", "")
    got = drain(ch, q, 0.5)
    old = [g for g in got if g[3] == b"old"]
    new = [g for g in got if g[3] == b"new"]
    assert len(old) >= 1 and all(g[0] <= confirmed for g in old)
    # a replacement starts afresh: its first tick is the first one after it was made
    assert len(new) >= 2 and all(g[0] > int(sent) and g[0] % 2 == 0 for g in new)
    assert_consecutive([g[0] for g in new])


def test_empty_x_ferry_cron_removes_the_schedule(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "job", "* * * * * *")
    time.sleep(1.5)
    schedule(ch, x, "job", "")
    removed = time.time()
    got = drain(ch, q, 2.5)
    assert got and all(g[0] <= removed for g in got)
    schedule(ch, x, "never-existed", "")  # removing nothing is not an error


def test_schedules_on_two_exchanges_and_names_are_independent(conn, ch, name):
    x1, q1 = topology(ch, lambda s: name("a." + s))
    x2, q2 = topology(ch, lambda s: name("b." + s))
    ch.confirm_delivery()
    schedule(ch, x1, "same", "* * * * * *", body=b"one")
    schedule(ch, x2, "same", "* * * * * *", body=b"two")
    schedule(ch, x1, "other", "* * * * * *", body=b"three")
    time.sleep(2.5)
    for x, n in ((x1, "same"), (x2, "same"), (x1, "other")):
        schedule(ch, x, n, "")
    a = drain(ch, q1, 0.3)
    b = drain(ch, q2, 0.3)
    assert {g[3] for g in a} == {b"one", b"three"} and {g[3] for g in b} == {b"two"}


def test_schedule_and_its_removal_survive_restart(ferryd_factory, name):
    d = ferryd_factory()
    c = connect(d)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "kept", "* * * * * *", body=b"kept", expiration="60000", content_type="text/plain", priority=3)
    schedule(ch, x, "gone", "* * * * * *", body=b"gone")
    schedule(ch, x, "gone", "")
    c.close()
    assert d.stop() == 0
    d.start()
    c = connect(d)
    ch = c.channel()
    drain(ch, q, 0.3)
    got = drain(ch, q, 2.5)
    assert {g[3] for g in got} == {b"kept"}
    assert all(g[2].expiration == "60000" and g[2].content_type == "text/plain" and g[2].priority == 3 for g in got)
    c.close()
    d.stop_and_check()


def test_deleting_the_exchange_deletes_its_schedules(ferryd_factory, name):
    d = ferryd_factory()
    c = connect(d)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "job", "* * * * * *")
    ch.exchange_delete(x)
    # the same exchange again: the old schedule does not come back with it
    ch.exchange_declare(x, "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_bind(q, x, "k")
    ch.queue_purge(q)
    assert drain(ch, q, 1.6) == []
    c.close()
    assert d.stop() == 0
    d.start()
    c = connect(d)
    ch = c.channel()
    assert drain(ch, q, 1.6) == []
    c.close()
    d.stop_and_check()


def test_timezones(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    schedule(ch, x, "kolkata", EVERY_2S, tz="Asia/Kolkata", body=b"in")
    schedule(ch, x, "ny", "* * * * * *", tz="America/New_York", body=b"ny")
    schedule(ch, x, "utc", EVERY_2S, tz="", body=b"utc")
    time.sleep(3.2)
    for n in ("kolkata", "ny", "utc"):
        schedule(ch, x, n, "")
    got = drain(ch, q, 0.3)
    for body in (b"in", b"ny", b"utc"):
        assert any(g[3] == body for g in got), body


def expect_406(broker, x, cron, text, tz=None, message_id="bad", body=b"", headers=None):
    c = connect(broker)
    ch = c.channel()
    ch.confirm_delivery()
    h = dict(headers or {})
    if cron is not None:
        h["x-ferry-cron"] = cron
    if tz is not None:
        h["x-ferry-timezone"] = tz
    with pytest.raises(px.ChannelClosedByBroker) as e:
        ch.basic_publish(x, "k", body, pika.BasicProperties(message_id=message_id, headers=h, delivery_mode=2))
    assert e.value.reply_code == 406, e.value
    assert text in e.value.reply_text, e.value.reply_text
    assert c.is_open  # only the channel is closed
    c.close()
    return e.value.reply_text


def test_bad_expressions_close_the_channel_with_406_and_store_nothing(broker, conn, ch, name):
    x, q = topology(ch, name)
    t = expect_406(broker, x, "61 * * * * *", "second 61 out of range 0-59")
    assert t.startswith("PRECONDITION_FAILED - invalid x-ferry-cron '61 * * * * *'")
    expect_406(broker, x, " ", "expected 5 or 6 fields, got 0")
    expect_406(broker, x, "garbage", "expected 5 or 6 fields, got 1")
    expect_406(broker, x, "a b c d e", "minute field 'a' is not a cron field")
    expect_406(broker, x, "* * * *", "expected 5 or 6 fields, got 4")
    expect_406(broker, x, "* * * * * * *", "expected 5 or 6 fields, got 7")
    expect_406(broker, x, "*/0 * * * * *", "step must be a number")
    expect_406(broker, x, "5-1 * * * *", "minute range 5-1 is backwards")
    expect_406(broker, x, "0 0 30 2 *", "never fires")
    expect_406(broker, x, "* " * 300, "longer than 256 characters")
    expect_406(broker, x, 5, "x-ferry-cron: must be a string")
    expect_406(broker, x, "* * * * *", "x-ferry-timezone: must be a string", tz=3)
    expect_406(broker, x, "* * * * *", "invalid x-ferry-timezone 'Mars/Olympus_Mons': unknown time zone",
               tz="Mars/Olympus_Mons")
    expect_406(broker, x, "* * * * *", "not a time zone name", tz="../../../etc/passwd")
    expect_406(broker, x, "* * * * *", "message_id property names the schedule", message_id=None)
    expect_406(broker, x, "* * * * *", "message_id must be 1-234 bytes", message_id="n" * 235)
    expect_406(broker, x, "* * * * *", "body is at most 1048576 bytes", body=b"b" * (1048576 + 1))
    # nothing was stored: nothing fires
    assert drain(ch, q, 1.5) == []


def test_edge_values_are_accepted(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    long_name = "n" * 234  # NAME:TICK is then 245 bytes: fits a message_id
    schedule(ch, x, long_name, "* * * * * *", body=b"b" * 1048576)
    got = drain(ch, q, 1.6)
    schedule(ch, x, long_name, "")
    assert got and got[0][2].message_id == f"{long_name}:{got[0][0]}" and len(got[0][3]) == 1048576


def test_x_ferry_cron_on_other_exchange_types_is_an_ordinary_header(conn, ch, name):
    q = name("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"plain", pika.BasicProperties(message_id="m", headers={"x-ferry-cron": "61 * * * *"}))
    m, p, b = ch.basic_get(q, auto_ack=True)
    assert b == b"plain" and p.headers["x-ferry-cron"] == "61 * * * *"


def test_mandatory_schedule_publish_is_not_returned(conn, ch, name):
    x, q = topology(ch, name)
    ch.confirm_delivery()
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish(x, "k", b"", pika.BasicProperties(message_id="m", headers={"x-ferry-cron": "@yearly"}),
                     mandatory=True)
    conn.process_data_events(0.3)
    schedule(ch, x, "m", "")
    assert returned == []


def test_many_schedules_fire_each_tick_once_across_kill9(ferryd_factory, name):
    """50 schedules firing every second, plus 1,000 that fire yearly (waiting in the same
    heap): every second each of the 50 routes one copy; after kill -9 mid-second and a
    restart, no (schedule, tick) is routed twice and each gets one catch-up copy."""
    d = ferryd_factory()
    c = connect(d)
    ch = c.channel()
    x, q = topology(ch, name)
    ch.confirm_delivery()
    for i in range(1000):
        schedule(ch, x, f"yearly-{i}", "@yearly", body=b"never")
    names = [f"s{i:02d}" for i in range(50)]
    for n in names:
        schedule(ch, x, n, "* * * * * *", body=n.encode())
    time.sleep(3.2)
    wait_until_second(0, 0.5)  # half a second after a tick
    c.close()
    d.kill9()
    killed = time.time()
    time.sleep(2.2)
    started = time.time()
    d.start()
    c = connect(d)
    ch = c.channel()
    got = drain(ch, q, 2)
    c.close()
    back, n_missed = recovered_at(d)
    assert n_missed == 50  # the yearly ones missed nothing
    pairs = [(g[3].decode(), g[0]) for g in got]
    assert len(set(pairs)) == len(pairs), "a schedule routed a tick twice"
    assert {p[0] for p in pairs} == set(names)  # the yearly ones never fired
    for n in names:
        ticks = sorted(t for s, t in pairs if s == n)
        before = [t for t in ticks if t < killed]
        down = [t for t in ticks if killed < t <= back]
        assert len(before) >= 2, (n, ticks)
        assert down == [int(back)], (n, ticks, killed, back)  # the latest missed, once
        assert_consecutive(before, step=1)
        assert_consecutive([t for t in ticks if t > killed], step=1)
    d.stop_and_check()


def test_a_schedule_whose_record_cannot_be_written_is_nacked_and_undone(ferryd_factory, name, tmp_path):
    """An injected EIO on the fdatasync of the batch holding a new schedule's record: the
    publish is nacked and the schedule does not exist (it never fires); ferryd goes on."""
    data = str(tmp_path / "data")
    d = ferryd_factory(data_dir=data)
    c = connect(d)
    x, q = topology(c.channel(), name)
    c.close()
    d.stop_and_check()
    # The Nth fdatasync from start: find the N that hits the schedule's batch.
    for k in range(1, 15):
        d = ferryd_factory(data_dir=data, env={"FERRY_IO_FAULTS": f"op=fdatasync,nth={k},err=EIO"})
        c = connect(d)
        ch = c.channel()
        ch.confirm_delivery()
        try:
            schedule(ch, x, "failed", "* * * * * *", body=b"failed")
        except px.NackError:
            break
        schedule(ch, x, "failed", "")
        c.close()
        d.stop()
    else:
        pytest.fail("no injected fdatasync failure reached the schedule's batch")
    assert "cron: schedule 'failed' on " + x + " not stored" in d.log_text()
    schedule(ch, x, "works", "* * * * * *", body=b"works")  # the next batch is written
    got = drain(ch, q, 2.2)
    assert got and {g[3] for g in got} == {b"works"}
    schedule(ch, x, "works", "")
    c.close()
    d.stop_and_check()


def test_a_schedule_published_in_a_transaction_exists_only_once_committed(conn, ch, name):
    x, q = topology(ch, name)
    ch.tx_select()
    schedule(ch, x, "tx", "* * * * * *", body=b"rolled back")
    ch.tx_rollback()
    schedule(ch, x, "tx", "* * * * * *", body=b"committed")
    assert drain(ch, q, 1.3) == []  # not before the commit
    ch.tx_commit()
    got = drain(ch, q, 1.6)
    schedule(ch, x, "tx", "")
    ch.tx_commit()
    assert got and {g[3] for g in got} == {b"committed"}


def test_only_a_publish_to_the_delayed_exchange_itself_makes_a_schedule(conn, ch, name):
    """Through an exchange-to-exchange binding the header is an ordinary one: routed once."""
    x, q = topology(ch, name)
    front = name("front")
    ch.exchange_declare(front, "direct")
    ch.exchange_bind(x, front, "k")
    ch.confirm_delivery()
    ch.basic_publish(front, "k", b"once", pika.BasicProperties(message_id="m", headers={"x-ferry-cron": "* * * * * *"}))
    time.sleep(1.5)
    got = []
    while True:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        got.append((p, b))
    assert len(got) == 1 and got[0][1] == b"once" and got[0][0].headers["x-ferry-cron"] == "* * * * * *"
    ch.exchange_delete(front)
