"""`ferry bench` smoke tests: a short count-bounded run against the broker under test must
report every message published, confirmed and consumed, with sane latency figures; bad
options must fail fast, naming the option.

The load generator is the tool every performance claim rests on, so these check its
bookkeeping (counts, exit status) rather than any speed."""
import json
import os
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")


def run_bench(*args, timeout=60):
    return subprocess.run([FERRY, "bench", *args], capture_output=True, text=True, timeout=timeout)


def bench_json(broker, *args):
    # A queue prefix of our own: the broker may be shared (FERRY_TEST_AMQP_URL).
    p = run_bench("--uri", broker.url, "--queue-prefix", f"bench-smoke-{os.getpid()}-", "--json", "--quiet", *args)
    assert p.returncode == 0, f"ferry bench failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout)


def assert_latency_sane(lat, count):
    assert lat is not None
    assert lat["count"] == count
    assert 0 <= lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert lat["max"] < 60_000, "a latency over a minute in a seconds-long run is a clock bug"


@pytest.fixture(autouse=True)
def _built():
    if not os.path.exists(FERRY):
        pytest.fail(f"{FERRY} is missing: run `make build/ferry`")


def test_count_bounded_run_consumes_every_published_message(broker):
    r = bench_json(broker, "--count", "5000", "--size", "64")
    assert r["ok"] is True and r["error"] is None
    assert r["published"] == 5000
    assert r["consumed"] == 5000
    assert r["expected"] == 5000
    assert r["publish_rate"] > 0 and r["consume_rate"] > 0
    assert_latency_sane(r["latency_ms"], 5000)
    assert r["confirm_latency_ms"] is None


def test_confirmed_persistent_run_with_manual_acks_counts_every_message(broker):
    r = bench_json(broker, "--count", "3000", "--size", "1024", "--persistent", "--confirm", "100",
                   "--ack-every", "10", "--prefetch", "200", "--producers", "2", "--consumers", "2")
    assert r["published"] == 3000
    assert r["confirmed"] == 3000
    assert r["nacked"] == 0 and r["unconfirmed"] == 0
    assert r["consumed"] == 3000
    assert_latency_sane(r["confirm_latency_ms"], 3000)
    assert_latency_sane(r["latency_ms"], 3000)


def test_large_messages_written_from_the_template_arrive_whole(broker):
    # Messages of 64 KiB and more leave the producer in two parts (the head with the stamp,
    # the rest from the template itself): every byte must reach the broker in order.
    import pika
    size = 300_000  # three body frames at the default frame_max
    prefix = f"bench-smoke-large-{os.getpid()}-"
    p = run_bench("--uri", broker.url, "--queue-prefix", prefix, "--json", "--quiet", "--count", "40",
                  "--size", str(size), "--confirm", "4", "--no-consume")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["published"] == 40 and r["confirmed"] == 40
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    stamps = set()
    for _ in range(40):
        method, _props, body = ch.basic_get(prefix + "0", auto_ack=True)
        assert method is not None
        assert len(body) == size
        assert body[16:] == bytes(size - 16), "the template's bytes after the stamp are zeros"
        stamps.add(body[8:16])  # the sequence number: every message its own
    assert ch.basic_get(prefix + "0", auto_ack=True)[0] is None
    assert len(stamps) == 40
    ch.queue_delete(prefix + "0")
    conn.close()
    r = bench_json(broker, "--count", "200", "--size", str(size), "--persistent", "--confirm", "16")
    assert r["published"] == 200 and r["confirmed"] == 200 and r["consumed"] == 200
    assert_latency_sane(r["latency_ms"], 200)


def test_fanout_delivers_every_message_to_every_queue(broker):
    r = bench_json(broker, "--count", "1000", "--fanout", "3")
    assert r["consumers"] == 3
    assert r["published"] == 1000
    assert r["consumed"] == 3000


def test_publish_only_then_drain_consumes_the_backlog(broker):
    prefix = f"bench-smoke-drain-{os.getpid()}-"
    args = ("--uri", broker.url, "--queue-prefix", prefix, "--json", "--quiet")
    p = run_bench(*args, "--count", "2000", "--no-consume")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["published"] == 2000
    p = run_bench(*args, "--drain")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["expected"] == 2000 and r["consumed"] == 2000
    assert_latency_sane(r["latency_ms"], 2000)


def test_fixed_rate_is_paced(broker):
    r = bench_json(broker, "--rate", "2000", "--duration", "1")
    # 2,000 msg/s for one second, give or take the first message and scheduling.
    assert 1800 <= r["published"] <= 2100
    assert r["consumed"] == r["published"]


def test_bad_flag_exits_non_zero_naming_the_flag():
    p = run_bench("--no-such-flag", "3")
    assert p.returncode == 2
    assert "--no-such-flag" in p.stderr


def test_bad_value_exits_non_zero_naming_the_flag():
    p = run_bench("--size", "lots")
    assert p.returncode == 2
    assert "--size" in p.stderr and "lots" in p.stderr


def test_unreachable_broker_fails_with_a_clear_message():
    p = run_bench("--uri", "amqp://guest:guest@127.0.0.1:1/", "--count", "10")
    assert p.returncode == 1
    assert "cannot connect" in p.stderr
