"""libferry's worker from C (include/ferry/worker.h; tests/app/c/rpctest.c serve): a handler's
FERRY_RETRY runs the job again after each delay with the attempt counted, FERRY_FAIL
dead-letters at once with the handler's reason in x-ferry-failure beside x-death, FERRY_OK
acks — on every broker (ferryd's x-retry-delays, retry queues on RabbitMQ)."""
import subprocess

import pytest

from apptools import depth, get_all, prog, publish, qname
from test_rpc import env_for


@pytest.mark.cluster_short
def test_c_worker_ok_retry_fail(app_broker):
    q = qname("capi")
    # declare the topology first (the worker does it at start), then publish, then serve 6 runs:
    # ok (1) + retry:1 (2) + fail (1) + retry:5 (3: dead-lettered after 1 + 2 delays)
    p = subprocess.Popen([prog("rpctest"), app_broker.url, q, "serve", "7"], stdout=subprocess.PIPE, text=True,
                         env=env_for(app_broker))
    first = p.stdout.readline()
    assert first.startswith("mode "), first
    for body in (b"ok", b"retry:1", b"fail", b"retry:5"):
        publish(app_broker.url, q, body, message_id=body.decode())
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    jobs = [l.split()[1:] for l in out.splitlines() if l.startswith("job ")]
    assert sorted(jobs) == sorted([["ok", "1"], ["retry:1", "1"], ["retry:1", "2"], ["fail", "1"],
                                   ["retry:5", "1"], ["retry:5", "2"], ["retry:5", "3"]])
    dead = get_all(app_broker.url, q + ".dead", want=2)
    reasons = {props.message_id: props.headers["x-ferry-failure"] for props, _ in dead}
    assert reasons == {"fail": "bad order", "retry:5": "not yet"}
    assert all(props.headers["x-death"][0]["queue"] == q for props, _ in dead)
    assert depth(app_broker.url, q) == 0
