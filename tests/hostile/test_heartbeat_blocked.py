"""A publisher blocked by a resource alarm is paused, not dropped: ferryd stops reading its
socket while it is blocked, so it must not count the heartbeats it does not read as missed
(RabbitMQ pauses its heartbeat monitor while a connection is blocked)."""
import time

import pytest
import rawamqp as R
from rawclient import CONNECTION_BLOCKED, CONNECTION_UNBLOCKED, declare, expect, open_conn, publish_bytes, purge, wait_method

pytestmark = pytest.mark.ferry_only


def test_blocked_publisher_that_sends_heartbeats_is_not_dropped_for_missed_heartbeats(ferryd_factory):
    d = ferryd_factory("--memory-high-watermark", str(1 << 20), "--heartbeat", "1")
    admin = open_conn(d.host, d.port)
    declare(admin, "hb-blocked")
    pub = open_conn(d.host, d.port, heartbeat=1)
    body = b"x" * 100_000
    pub.send(b"".join(publish_bytes("hb-blocked", body) for _ in range(12)))  # 1.2 MB > 1 MiB
    assert wait_method(pub, CONNECTION_BLOCKED, 10) is not None, "no connection.blocked over the watermark"

    # Blocked for 6 s (three times the 2 s heartbeat timeout), sending heartbeats throughout.
    end = time.monotonic() + 6
    while time.monotonic() < end:
        pub.send(R.heartbeat_frame())
        try:
            f = pub.recv_frame(0.4)
        except TimeoutError:
            continue
        except R.Closed:
            pytest.fail("ferryd dropped a blocked publisher that was sending heartbeats")
        assert f.method != R.CONNECTION_CLOSE, f"ferryd closed the blocked publisher: {f!r}"

    purge(admin, "hb-blocked")  # back under the watermark
    try:
        assert wait_method(pub, CONNECTION_UNBLOCKED, 10) is not None, "no connection.unblocked"
        pub.send(R.method_frame(1, R.QUEUE_DECLARE, R.queue_declare_args("hb-blocked", passive=True)))
        ok = expect(pub, R.QUEUE_DECLARE_OK)
    except R.Closed:
        pytest.fail("ferryd dropped the blocked publisher")
    assert ok.args["queue"] == "hb-blocked"
    pub.close()
    admin.close()
