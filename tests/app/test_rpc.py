"""Request/reply over direct reply-to (include/ferry/rpc.h) on every broker: a call answered
by a libferry worker (in-process, tests/app/c/rpctest.c) and by `ferry worker` running a command;
a call with no answer times out on time; a late reply is not taken for the next call's; a
request no queue takes is reported as unroutable at once."""
import os
import subprocess
import time

import pytest

from apptools import reap_workers, Worker, prog, qname

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobscript.py")


def env_for(broker):
    e = dict(os.environ)
    if broker.kind == "cluster":
        e["FERRY_TEST_QUEUE_TYPE"] = "quorum"
    return e


@pytest.mark.cluster_short
def test_rpc_success_timeout_late_reply_and_unroutable(app_broker):
    r = subprocess.run([prog("rpctest"), app_broker.url, qname("rpc"), "selftest"], capture_output=True, text=True,
                       timeout=90, env=env_for(app_broker))
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    assert "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    assert ("mode native" if app_broker.ferry else "mode queues") in r.stdout


def test_rpc_call_answered_by_ferry_worker_command(app_broker, tmp_path):
    q = qname("rpccli")
    w = Worker(app_broker, q, ["/usr/bin/python3", JOB, str(tmp_path / "runs"), "echo"], "--retry", "",
               tmp_path=tmp_path)
    w.wait_consuming()
    r = subprocess.run([prog("rpctest"), app_broker.url, q, "call", "ping me", "10000"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == "reply PING ME", r.stdout + r.stderr
    assert w.stop() == 0


def test_rpc_call_without_a_server_times_out(app_broker, tmp_path):
    q = qname("rpcnone")
    # the queue exists (so the request is routed) but nobody consumes it
    import pika
    c = pika.BlockingConnection(pika.URLParameters(app_broker.url))
    c.channel().queue_declare(q, durable=True, arguments=app_broker.queue_args())
    c.close()
    t0 = time.monotonic()
    r = subprocess.run([prog("rpctest"), app_broker.url, q, "call", "x", "500"], capture_output=True, text=True,
                       timeout=30)
    took = time.monotonic() - t0
    assert r.stdout.strip() == "error timed out", r.stdout + r.stderr
    assert took < 5
