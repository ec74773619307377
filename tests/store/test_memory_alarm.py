"""The memory alarm: above --memory-high-watermark bytes of messages, publishing connections
get connection.blocked (RabbitMQ's resource alarm), and connection.unblocked once consumers
have brought it back down; nothing published is lost meanwhile."""
from . import helpers
from .helpers import connect, drain


def test_publishers_are_blocked_above_the_memory_high_watermark_and_unblocked_when_it_clears(
        ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"), "--memory-high-watermark", str(1 << 20))
    conn = connect(d)
    conn.channel().queue_declare("q", durable=True)
    conn.close()
    run = helpers.Run(d)
    p = run.publisher("mem", "", "q", ["q"], sizes=[16000], window=10)
    state = {"drained": []}

    def until():
        if p.blocked and not state["drained"]:
            state["confirmed_when_blocked"] = len(p.confirmed)
            state["drained"] = drain(d, "q").ids or ["-"]  # a consumer is never blocked
        return p.unblocked and len(p.confirmed) >= state.get("confirmed_when_blocked", 1 << 30) + 20

    run.go(30, until=until)
    assert p.blocked, f"no connection.blocked after {len(p.confirmed)} messages of 16 kB over a 1 MiB watermark"
    assert p.unblocked, "no connection.unblocked after the queue was drained"
    assert len(p.confirmed) >= state["confirmed_when_blocked"] + 20, "publishing did not resume"
    assert not p.nacked
    got = set(state["drained"]) | set(drain(d, "q").ids)
    assert not [m for m in p.confirmed if m not in got], "confirmed messages lost around the alarm"
