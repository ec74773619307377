"""The contract scripts rely on: exit 0 ok, 1 the broker said no, 2 bad usage (the message
names the bad flag), 3 the broker cannot be reached; and the broker URL rules (--url, else
FERRY_URL; an amqp:// URL means the same user and host on port 15672; --http-port overrides
the port)."""
import json

import pytest

from clilib import ferry, free_port

COMMANDS = [["queues"], ["exchanges"], ["connections"], ["get", "q"], ["purge", "q"], ["dlq", "list"],
            ["alerts"], ["top", "--count", "1"], ["definitions", "export"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_unreachable_broker_exits_3(cmd):
    port = free_port()  # nothing listens there
    r = ferry(*cmd, url=f"http://guest:guest@127.0.0.1:{port}")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "cannot reach" in r.stderr and str(port) in r.stderr


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_bad_credentials_exit_1_and_say_401(mgmt_broker, cmd):
    r = ferry(*cmd, url=f"http://guest:wrong@127.0.0.1:{mgmt_broker.http_port}")
    assert r.returncode == 1, (r.stdout, r.stderr)
    if mgmt_broker.kind == "rabbitmq" and cmd[0] == "alerts":
        # RabbitMQ answers an unknown path (Ferry's /api/ferry/...) with 404 before any login.
        assert "RabbitMQ has none" in r.stderr
    else:
        assert "401" in r.stderr


@pytest.mark.parametrize("cmd", COMMANDS + [["consume", "q"]], ids=lambda c: " ".join(c[:2]))
def test_unknown_flag_exits_2_naming_it(cmd):
    r = ferry(*cmd, "--no-such-flag")
    assert r.returncode == 2
    assert "--no-such-flag" in r.stderr and "--help" in r.stderr


@pytest.mark.parametrize("args,flag", [
    (["queues", "--http-port", "0"], "--http-port"),
    (["queues", "--http-port", "65536"], "--http-port"),
    (["queues", "--url"], "--url"),
    (["queues", "--json=yes"], "--json"),
    (["queues", "extra"], "extra"),
    (["get"], "missing argument"),
    (["get", "q", "--count", "99999999999999999999"], "--count"),
    (["dlq"], "missing argument"),
    (["dlq", "sideways"], "sideways"),
    (["dlq", "peek"], "QUEUE"),
    (["dlq", "redrive", "q", "--count", "0"], "--count"),
    (["alerts", "snooze"], "snooze"),
    (["alerts", "set", "a"], "--queue"),
    (["alerts", "set", "a", "--queue", "x", "--metric", "depth", "--op", ">", "--threshold", "1"], "--metric"),
    (["alerts", "set", "a", "--queue", "x", "--metric", "messages", "--op", ">=", "--threshold", "1"], "--op"),
    (["alerts", "set", "a", "--queue", "x", "--metric", "messages", "--op", ">", "--threshold", "many"],
     "--threshold"),
    (["alerts", "set", "a", "--queue", "x", "--metric", "messages", "--op", ">", "--threshold", "1",
      "--for", "a while"], "--for"),
    (["alerts", "delete"], "NAME"),
    (["top", "--interval", "10ms"], "--interval"),
    (["top", "--sort", "colour"], "--sort"),
    (["definitions"], "missing argument"),
    (["definitions", "import"], "FILE"),
    (["definitions", "merge", "x"], "merge"),
    (["queues", "--url", "ftp://host/"], "--url"),
    (["queues", "--url", "not a url"], "--url"),
])
def test_bad_usage_exits_2_with_a_message_naming_the_problem(args, flag):
    r = ferry(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert flag in r.stderr, (args, r.stderr)


def test_bad_ferry_url_is_a_usage_error_naming_it():
    r = ferry("queues", env={"FERRY_URL": "gopher://x"})
    assert r.returncode == 2 and "FERRY_URL" in r.stderr


def test_help_exits_0_on_stdout():
    for cmd in ("queues", "exchanges", "connections", "get", "consume", "purge", "dlq", "alerts", "top",
                "definitions"):
        r = ferry(cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: ferry {cmd}") and "Exit status" in r.stdout
    r = ferry("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("queues", "dlq", "top", "definitions"))


def test_ferry_url_is_used_and_url_overrides_it(mgmt_broker):
    r = ferry("queues", "--json", env={"FERRY_URL": mgmt_broker.http_url})
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)
    dead = f"http://guest:guest@127.0.0.1:{free_port()}"
    r = ferry("queues", "--json", url=dead, env={"FERRY_URL": mgmt_broker.http_url})
    assert r.returncode == 3  # --url wins
    r = ferry("queues", "--json", url=mgmt_broker.http_url, env={"FERRY_URL": dead})
    assert r.returncode == 0


def test_amqp_ferry_url_means_port_15672_unless_http_port_says_otherwise(mgmt_broker):
    amqp = f"amqp://guest:guest@127.0.0.1:{mgmt_broker.amqp_port}/"
    r = ferry("queues", "--json", "--http-port", str(mgmt_broker.http_port), env={"FERRY_URL": amqp})
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), list)
    # Without --http-port the amqp URL means port 15672 on the same host (whatever is there).
    r = ferry("queues", "--json", env={"FERRY_URL": amqp})
    assert "127.0.0.1:15672" in r.stderr or r.returncode == 0


def test_credentials_from_the_amqp_url_are_used(mgmt_broker):
    amqp = f"amqp://guest:wrong@127.0.0.1:{mgmt_broker.amqp_port}/"
    r = ferry("queues", "--http-port", str(mgmt_broker.http_port), env={"FERRY_URL": amqp})
    assert r.returncode == 1 and "401" in r.stderr


def test_percent_encoded_credentials_are_decoded(mgmt_broker):
    # "gu%65st" is "guest": a password with @ or : must be written percent-encoded.
    r = ferry("queues", url=f"http://gu%65st:gu%65st@127.0.0.1:{mgmt_broker.http_port}")
    assert r.returncode == 0, r.stderr
