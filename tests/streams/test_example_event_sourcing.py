"""examples/event-sourcing/account.py: balances rebuilt from the stream, before and after a
restart, with two accounts' events interleaved."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ferry_only  # ferryd's behaviour (FERRY_TEST_AMQP_URL: skipped)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROGRAM = os.path.join(ROOT, "examples", "event-sourcing", "account.py")


def run(url, *args):
    p = subprocess.run([sys.executable, PROGRAM, "--url", url] + list(args), capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout.strip(), p.stderr.strip()


def test_balance_is_rebuilt_from_the_events(ferryd_factory):
    d = ferryd_factory()
    assert run(d.url, "balance", "alice") == (0, "0", "")
    for cmd in [("deposit", "alice", "500"), ("deposit", "bob", "70"), ("deposit", "alice", "250"),
                ("withdraw", "bob", "20"), ("withdraw", "alice", "100")]:
        rc, out, err = run(d.url, *cmd)
        assert rc == 0, (cmd, out, err)
    assert run(d.url, "balance", "alice")[1] == "650"
    assert run(d.url, "balance", "bob")[1] == "50"
    rc, out, err = run(d.url, "withdraw", "alice", "1000")
    assert rc == 1 and "alice has 650" in err
    assert run(d.url, "balance", "alice")[1] == "650", "a refused command appends nothing"
    rc, out, _ = run(d.url, "history", "alice")
    assert out.splitlines() == ['{"type": "Deposited", "amount": 500}', '{"type": "Deposited", "amount": 250}',
                                '{"type": "Withdrawn", "amount": 100}']
    d.stop_and_check()
    d.start()
    assert run(d.url, "balance", "alice")[1] == "650", "the stream's files are the only state"
    assert run(d.url, "balance", "carol") == (0, "0", "")


def test_bad_usage_and_unreachable_broker(ferryd_factory):
    d = ferryd_factory()
    assert run(d.url, "deposit", "alice")[0] == 2
    assert run(d.url, "deposit", "alice", "-5")[0] == 2
    assert run("amqp://guest:guest@127.0.0.1:1/", "balance", "alice")[0] == 3
