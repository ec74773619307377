"""`ferry worker` against every broker of tests/app (ferryd, RabbitMQ, the 3-node cluster with
quorum queues): the job's stdin and environment; retries after each delay within tolerance;
dead-letter reasons (exit 65 at once; exit 1, signal 9, timeout after the retries;
unknown_schema_version without running CMD) with x-ferry-failure beside x-death; a worker
killed mid-job → the job runs again; SIGTERM lets running jobs finish; replies to reply_to;
correlation ids passed on to what the job publishes. Retries use ferryd's x-retry-delays there
(detected from its capabilities) and per-delay queues on RabbitMQ."""
import decimal
import json
import os
import signal
import subprocess
import time

import pytest

from apptools import reap_workers, FERRY, Worker, conn, depth, get_all, publish, qname, records, wait_for

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobscript.py")


def job(log, mode):
    return ["/usr/bin/python3", JOB, str(log), mode]


def runs(log):
    return [r for r in records(log) if "mode" in r]


def dead_letters(broker, q, n=1, timeout=15):
    got = get_all(broker.url, q + ".dead", want=n, timeout=timeout)
    assert len(got) == n, f"{len(got)} dead letters in {q}.dead, wanted {n}"
    return got


@pytest.mark.cluster_short
def test_job_gets_body_on_stdin_and_message_in_environment(app_broker, tmp_path):
    q, log = qname("env"), tmp_path / "runs"
    w = Worker(app_broker, q, job(log, "ok"), "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, b"the body", message_id="m-1", correlation_id="c-1",
            headers={"tenant": "acme", "n": 5})
    assert wait_for(lambda: runs(log))
    r, = runs(log)
    assert r["body"] == "the body"
    assert r["FERRY_MESSAGE_ID"] == "m-1" and r["FERRY_CORRELATION_ID"] == "c-1"
    assert r["FERRY_ROUTING_KEY"] == q and r["FERRY_ATTEMPT"] == "1"
    assert json.loads(r["FERRY_HEADERS"]) == {"tenant": "acme", "n": 5}
    assert wait_for(lambda: depth(app_broker.url, q) == 0)
    assert w.stop() == 0
    assert depth(app_broker.url, q) == 0 and depth(app_broker.url, q + ".dead") == 0


@pytest.mark.cluster_short
def test_retries_after_each_delay_then_dead_letters_with_exit_1(app_broker, tmp_path):
    q, log = qname("retry"), tmp_path / "runs"
    # a shell job that logs its start time at once (no interpreter start-up in the measure)
    cmd = ["/bin/sh", "-c", 'printf \'{"mode": "sh", "t": %s, "FERRY_ATTEMPT": "%s"}\\n\' "$(date +%s.%N)" '
           f'"$FERRY_ATTEMPT" >> {log}; exit 1']
    w = Worker(app_broker, q, cmd, "--retry", "300ms,700ms", tmp_path=tmp_path)
    w.wait_consuming()
    mode = "x-retry-delays" if app_broker.ferry else "retry queues"
    assert f"retries {mode}" in w.text()
    publish(app_broker.url, q, b"x", message_id="r-1")
    (props, body), = dead_letters(app_broker, q)
    rs = runs(log)
    assert [r["FERRY_ATTEMPT"] for r in rs] == ["1", "2", "3"]  # 1 + number of delays
    gaps = [rs[1]["t"] - rs[0]["t"], rs[2]["t"] - rs[1]["t"]]
    # each retry comes after its delay: never early (20 ms for clock granularity), and late by at
    # most 600 ms (the machine is shared)
    assert 0.28 <= gaps[0] <= 0.90, gaps
    assert 0.68 <= gaps[1] <= 1.30, gaps
    assert body == b"x" and props.message_id == "r-1"
    assert props.headers["x-ferry-failure"] == "exit 1"
    death = props.headers["x-death"]
    assert any(d["queue"] == q and d["reason"] == "rejected" for d in death), death
    time.sleep(0.5)
    assert len(runs(log)) == 3
    assert w.stop() == 0


@pytest.mark.cluster_short
@pytest.mark.parametrize("mode, flags, reason, nruns", [
    ("exit:65", ["--retry", "200ms,200ms"], "exit 65", 1),   # EX_DATAERR: dead-lettered at once
    ("kill9", ["--retry", "200ms"], "signal 9", 2),
    ("sleep:5", ["--retry", "", "--timeout", "400ms"], "timeout", 1),
])
def test_dead_letter_reasons(app_broker, tmp_path, mode, flags, reason, nruns):
    q, log = qname("dl"), tmp_path / "runs"
    cmd = job(log, mode)
    if mode.startswith("sleep:"):
        # a shell, which logs its start at once (Python's start-up alone can pass 400 ms on a
        # loaded machine), then sleeps past the timeout
        cmd = ["/bin/sh", "-c", f"echo '{{\"mode\": \"sh\"}}' >> {log}; exec sleep {mode[6:]}"]
    w = Worker(app_broker, q, cmd, *flags, tmp_path=tmp_path)
    w.wait_consuming()
    t0 = time.monotonic()
    publish(app_broker.url, q, b"payload", message_id="d-1")
    (props, body), = dead_letters(app_broker, q)
    assert props.headers["x-ferry-failure"] == reason
    assert props.headers["x-death"][0]["queue"] == q
    assert body == b"payload"
    if reason == "timeout":
        assert time.monotonic() - t0 < 3.0  # killed at 400 ms, not after the job's 5 s
    time.sleep(0.4)
    assert len(runs(log)) == nruns
    assert w.stop() == 0


def test_unknown_schema_version_is_dead_lettered_without_running(app_broker, tmp_path):
    q, log = qname("schema"), tmp_path / "runs"
    w = Worker(app_broker, q, job(log, "ok"), "--schema-versions", "1,2", "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    e = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    for v, mid in (("3", "v3"), ("2", "v2")):
        subprocess.run([FERRY, "publish", "--uri", app_broker.url, "--routing-key", q, "--event", "t", "--source",
                        "/s", "--data", "{}", "--schema-version", v, "--id", mid], check=True, env=e)
    publish(app_broker.url, q, b"{}", message_id="none")  # no schema version at all: also unknown
    got = dead_letters(app_broker, q, n=2)
    assert sorted(p.message_id for p, _ in got) == ["none", "v3"]
    assert all(p.headers["x-ferry-failure"] == "unknown_schema_version" for p, _ in got)
    assert wait_for(lambda: runs(log))
    time.sleep(0.3)
    assert [r["FERRY_MESSAGE_ID"] for r in runs(log)] == ["v2"]
    assert w.stop() == 0


def test_worker_killed_mid_job_runs_the_job_again(app_broker, tmp_path):
    q, log = qname("kill"), tmp_path / "runs"
    w = Worker(app_broker, q, job(log, "sleep:1.5"), "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, b"x", message_id="k-1")
    assert wait_for(lambda: runs(log))
    w.kill9()  # the message was not acked: the broker gives it to the next worker
    w2 = Worker(app_broker, q, job(log, "sleep:0.2"), "--retry", "", tmp_path=tmp_path)
    assert wait_for(lambda: len([r for r in records(log) if r.get("done") == "k-1"]) >= 2, timeout=15)
    starts = [r for r in runs(log) if r["FERRY_MESSAGE_ID"] == "k-1"]
    assert len(starts) == 2
    assert wait_for(lambda: depth(app_broker.url, q) == 0)
    assert w2.stop() == 0


def test_sigterm_finishes_running_jobs_and_takes_no_new_ones(app_broker, tmp_path):
    q, log = qname("term"), tmp_path / "runs"
    w = Worker(app_broker, q, job(log, "sleep:1.5"), "--concurrency", "2", "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, b"a", message_id="t-1")
    publish(app_broker.url, q, b"b", message_id="t-2")
    assert wait_for(lambda: len(runs(log)) == 2)
    w.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    publish(app_broker.url, q, b"c", message_id="t-3")  # after SIGTERM: not taken
    assert w.stop() == 0
    done = sorted(r["done"] for r in records(log) if "done" in r)
    assert done == ["t-1", "t-2"]  # both running jobs finished before the worker exited
    time.sleep(0.3)
    (props, _), = get_all(app_broker.url, q, want=1)
    assert props.message_id == "t-3"
    assert get_all(app_broker.url, q, want=1, timeout=0.5) == []  # t-1 and t-2 were acked


@pytest.mark.cluster_short
def test_reply_to_gets_stdout_with_the_correlation_id(app_broker, tmp_path):
    q, log, replies = qname("rpcsrv"), tmp_path / "runs", qname("replies")
    c = conn(app_broker.url)
    c.channel().queue_declare(replies, durable=True, arguments=app_broker.queue_args())
    c.close()
    w = Worker(app_broker, q, job(log, "echo"), "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, b"ping", reply_to=replies, correlation_id="corr-7")
    (props, body), = get_all(app_broker.url, replies)
    assert body == b"PING" and props.correlation_id == "corr-7"
    assert w.stop() == 0


def test_correlation_id_passes_to_what_the_job_publishes(app_broker, tmp_path):
    q, log, out = qname("corr"), tmp_path / "runs", qname("out")
    c = conn(app_broker.url)
    c.channel().queue_declare(out, durable=True, arguments=app_broker.queue_args())
    c.close()
    w = Worker(app_broker, q, job(log, f"publish:{out}"), "--retry", "", tmp_path=tmp_path,
               env={"FERRY_URL": app_broker.url})
    w.wait_consuming()
    publish(app_broker.url, q, b"{}", message_id="cause-1", correlation_id="conv-42")
    (props, body), = get_all(app_broker.url, out)
    assert props.correlation_id == "conv-42"
    assert props.headers["cloudEvents:causationid"] == "cause-1"
    assert json.loads(body) == {"from": "cause-1"}
    assert w.stop() == 0


def test_retry_succeeds_on_a_later_attempt(app_broker, tmp_path):
    q, log = qname("later"), tmp_path / "runs"
    w = Worker(app_broker, q, job(log, "exit:3@1"), "--retry", "200ms,200ms", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, b"x", message_id="l-1")
    assert wait_for(lambda: len(runs(log)) == 2)
    time.sleep(0.5)
    assert [r["FERRY_ATTEMPT"] for r in runs(log)] == ["1", "2"]
    assert depth(app_broker.url, q + ".dead") == 0 and depth(app_broker.url, q) == 0
    assert w.stop() == 0


@pytest.mark.parametrize("args, names", [
    (["--", "true"], b"--queue"),
    (["--queue", "q"], b"CMD"),
    (["--queue", "q", "--retry", "1s,fast", "--", "true"], b"--retry"),
    (["--queue", "q", "--concurrency", "0", "--", "true"], b"--concurrency"),
    (["--queue", "q", "--concurrency", "99999", "--", "true"], b"--concurrency"),
    (["--queue", "q", "--prefetch", "65536", "--", "true"], b"--prefetch"),
    (["--queue", "q", "--timeout", "30", "--", "true"], b"--timeout"),
    (["--queue", "q", "--schema-versions", "1,x", "--", "true"], b"--schema-versions"),
    (["--queue", "q", "--schema-versions", "", "--", "true"], b"--schema-versions"),
    (["--queue", "q", "--frobnicate", "--", "true"], b"--frobnicate"),
    (["--queue", "q", "--queue-type", "stream", "--", "true"], b"--queue-type"),
])
def test_worker_bad_usage_exits_2_naming_the_flag(args, names):
    r = subprocess.run([FERRY, "worker", "--uri", "amqp://guest:guest@127.0.0.1:1/"] + args,
                       capture_output=True, timeout=20)
    assert r.returncode == 2, r.stderr
    assert names in r.stderr


def test_worker_unreachable_broker_exits_3():
    r = subprocess.run([FERRY, "worker", "--uri", "amqp://guest:guest@127.0.0.1:1/", "--queue", "q", "--", "true"],
                       capture_output=True, timeout=20)
    assert r.returncode == 3 and b"cannot start" in r.stderr


def test_large_body_and_a_command_that_does_not_read_stdin(app_broker, tmp_path):
    """A 4 MiB body: written to CMD's stdin without blocking the worker (a CMD that never reads
    it still exits 0 and is acked); a CMD that reads it all sees every byte."""
    q, replies = qname("big"), qname("bigreplies")
    c = conn(app_broker.url)
    c.channel().queue_declare(replies, durable=True, arguments=app_broker.queue_args())
    c.close()
    w = Worker(app_broker, q, ["/bin/sh", "-c", 'if [ "$FERRY_ATTEMPT" ] && [ -n "$READ" ]; then wc -c; fi'],
               "--retry", "", "--timeout", "20s", tmp_path=tmp_path, env={"READ": ""})
    w.wait_consuming()
    body = os.urandom(4 * 1024 * 1024)
    publish(app_broker.url, q, body, message_id="big-1")
    assert wait_for(lambda: depth(app_broker.url, q) == 0, timeout=20)
    time.sleep(0.3)
    assert depth(app_broker.url, q + ".dead") == 0
    assert w.stop() == 0
    w = Worker(app_broker, q, ["/bin/sh", "-c", "wc -c"], "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, body, message_id="big-2", reply_to=replies, correlation_id="big")
    (props, got), = get_all(app_broker.url, replies, timeout=20)
    assert got.strip() == str(len(body)).encode() and props.correlation_id == "big"
    assert w.stop() == 0


def test_headers_json_keeps_nested_tables_and_odd_bytes(app_broker, tmp_path):
    q, log = qname("hdrs"), tmp_path / "runs"
    w = Worker(app_broker, q, job(log, "ok"), "--retry", "", tmp_path=tmp_path)
    w.wait_consuming()
    publish(app_broker.url, q, b"", message_id="h-1",
            headers={"nested": {"a": [1, "two", {"b": True}]}, "big": 2**62, "neg": -7, "empty": "",
                     "raw": b"\xff\xfeok", "price": decimal.Decimal("1.23")})
    assert wait_for(lambda: runs(log))
    h = json.loads(runs(log)[0]["FERRY_HEADERS"])
    # bytes that are not UTF-8 cannot be JSON text: kept as ASCII with '?' for the rest
    # an AMQP decimal (value 123, scale 2) is its value, 1.23, not the unscaled 123
    assert h == {"nested": {"a": [1, "two", {"b": True}]}, "big": 2**62, "neg": -7, "empty": "", "raw": "??ok",
                 "price": 1.23}
    assert runs(log)[0]["body"] == ""
    assert w.stop() == 0


def test_worker_reconnects_after_the_broker_restarts(ferryd_factory, tmp_path):
    """ferryd killed for 3.5 s and started again on the same port: the worker reconnects with back-off,
    declares again and goes on working the queue (no restart of the worker needed)."""
    d = ferryd_factory()

    class B:  # what Worker needs of a broker
        kind, url = "ferryd", d.url
    q, log = qname("reconn"), tmp_path / "runs"
    w = Worker(B, q, job(log, "ok"), "--retry", "200ms", tmp_path=tmp_path)
    w.wait_consuming()
    publish(d.url, q, b"before", message_id="before")
    assert wait_for(lambda: len(runs(log)) == 1)
    d.kill9()
    time.sleep(3.5)  # long enough for the back-off to grow past the worker's 1 s poll
    d.start()
    assert wait_for(lambda: "reconnected" in w.text(), timeout=20), w.text()
    publish(d.url, q, b"after", message_id="after")
    assert wait_for(lambda: "after" in [r["FERRY_MESSAGE_ID"] for r in runs(log)], timeout=10), w.text()
    # "before" may run again: its ack can die with the broker (at-least-once), nothing else runs
    assert set(r["FERRY_MESSAGE_ID"] for r in runs(log)) == {"before", "after"}
    assert w.stop() == 0


def test_ferryd_announces_x_retry_delays_and_rabbitmq_does_not(app_broker):
    """What the worker's retry mode is detected from: connection.start's capabilities."""
    c = conn(app_broker.url)
    caps = c._impl.server_capabilities
    c.close()
    assert caps.get("x-retry-delays") is (True if app_broker.ferry else None)
    assert caps.get("publisher_confirms") is True and caps.get("direct_reply_to") is True
