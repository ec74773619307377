"""libferry's reliable publisher (include/ferry/ferry.h) through a C test program
(tests/app/c/pubtest.c, ASan + UBSan): confirmed publishes, refusals reported as errors
(404 no exchange, mandatory + unroutable), pipelined sends settled in order, bad input; and
a broker killed mid-stream: the publisher reconnects with back-off and republishes, so every
message is confirmed and none is lost."""
import subprocess
import time

import pytest

from apptools import depth, get_all, prog, qname


@pytest.mark.cluster_short
def test_publisher_confirms_refusals_and_pipelining(app_broker):
    q = qname("pub")
    r = subprocess.run([prog("pubtest"), app_broker.url, q, "cases"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    # 2 single publishes + the mandatory one + 999 pipelined are in the queue
    assert depth(app_broker.url, q) == 1002


def test_publisher_reconnects_and_republishes_after_broker_kill(ferryd_factory):
    d = ferryd_factory()
    q = qname("pubkill")
    p = subprocess.Popen([prog("pubtest"), d.url, q, "stream", "200"], stdout=subprocess.PIPE, text=True)
    seen = []
    killed = False
    for line in p.stdout:
        seen.append(line.split())
        if not killed and len(seen) == 40:
            d.kill9()  # mid-stream: publishes in flight lose their connection
            time.sleep(0.5)
            d.start()  # same port, same data directory
            killed = True
    try:
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert killed
    confirmed = [int(w[1]) for w in seen if w[0] == "confirmed"]
    errors = [w for w in seen if w[0] == "error"]
    assert not errors, f"publishes reported errors: {errors[:5]}"
    assert confirmed == list(range(1, 201))
    # every confirmed message is in the queue (a duplicate is allowed, a loss is not)
    got = get_all(d.url, q, want=10_000, timeout=3)
    ids = {int(props.message_id) for props, body in got}
    assert ids == set(range(1, 201))
