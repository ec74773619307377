"""Dead-letter cycles (issue 8, item 14), with RabbitMQ's rule (rabbit_dead_letter:
detect_cycles and mc:is_death_cycle): a dead letter about to enter a queue it already died
in is dropped unless x-death, from the most recent entry down to that queue's entry, holds a
"rejected" reason; a message dead-lettered *because* it was rejected is never checked.

ferryd counted a rejection anywhere in the history, so a message rejected once and then
cycling through an x-max-length 0 queue that dead-letters to itself was never dropped: the
loop spun on it at 100% CPU, serving nobody and ignoring SIGTERM."""
import time

import pika

from hostile_lib import still_serves


def declare_loop(ch, dlx="dlx", loop="loop"):
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(loop, arguments={"x-max-length": 0, "x-dead-letter-exchange": dlx})
    ch.queue_bind(loop, dlx)


def test_rejected_once_then_automatic_cycle_is_dropped_and_broker_stays_responsive(ferryd, connect):
    ch = connect().channel()
    declare_loop(ch)
    ch.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    ch.basic_publish("", "work", b"poison")
    m, _, _ = ch.basic_get("work")
    assert m is not None
    ch.basic_reject(m.delivery_tag, requeue=False)  # -> dlx -> loop (maxlen) -> dlx -> loop ...
    # The cycle loop -> loop has no rejection in it: RabbitMQ drops the message at once.
    t0 = time.monotonic()
    assert still_serves(ferryd)
    assert time.monotonic() - t0 < 15
    ch2 = connect().channel()
    assert ch2.queue_declare("loop", passive=True).method.message_count == 0
    assert ch2.queue_declare("work", passive=True).method.message_count == 0
    # (teardown: SIGTERM must stop it within 20 s, cleanly)


def test_cycle_through_two_queues_after_an_old_rejection_is_dropped(ferryd, connect):
    """work (rejected) -> a (maxlen) -> b (maxlen) -> a: the rejection is older than a's last
    death, so the way back into a is a fully automatic cycle."""
    ch = connect().channel()
    ch.exchange_declare("to-a", "fanout")
    ch.exchange_declare("to-b", "fanout")
    ch.queue_declare("a", arguments={"x-max-length": 0, "x-dead-letter-exchange": "to-b"})
    ch.queue_declare("b", arguments={"x-max-length": 0, "x-dead-letter-exchange": "to-a"})
    ch.queue_bind("a", "to-a")
    ch.queue_bind("b", "to-b")
    ch.queue_declare("work2", arguments={"x-dead-letter-exchange": "to-a"})
    ch.basic_publish("", "work2", b"poison")
    m, _, _ = ch.basic_get("work2")
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert still_serves(ferryd)


def test_cycle_with_a_rejection_in_it_goes_on(ferryd, connect):
    """RabbitMQ's other half of the rule: a client that rejects on every pass decides the
    loop, so the message comes back each time, its x-death count going up."""
    ch = connect().channel()
    ch.exchange_declare("back", "fanout")
    ch.queue_declare("retry-me", arguments={"x-dead-letter-exchange": "back"})
    ch.queue_bind("retry-me", "back")
    ch.basic_publish("", "retry-me", b"again")
    for n in range(1, 4):
        m = None
        for _ in range(200):
            m, props, body = ch.basic_get("retry-me")
            if m:
                break
            ch.connection.sleep(0.01)
        assert m is not None, f"pass {n}: the rejected message did not come back"
        if n > 1:
            death = props.headers["x-death"][0]
            assert death["reason"] == "rejected" and death["queue"] == "retry-me"
            assert death["count"] == n - 1
        ch.basic_reject(m.delivery_tag, requeue=False)
    assert still_serves(ferryd)


def test_self_cycle_without_rejection_is_dropped(ferryd, connect):
    ch = connect().channel()
    declare_loop(ch)
    ch.basic_publish("", "loop", b"straight in")
    ch.basic_publish("dlx", "", b"via the exchange")
    assert still_serves(ferryd)
    assert ch.queue_declare("loop", passive=True).method.message_count == 0


def test_cycle_leaves_exactly_the_deaths_rabbitmq_leaves(ferryd, connect):
    """Checked against RabbitMQ 3.x: an observer bound to the dead-letter exchange sees the
    rejected copy and one copy after a single pass through the x-max-length 0 queue; the
    next pass would re-enter that queue with no rejection since, so it is dropped."""
    ch = connect().channel()
    declare_loop(ch)
    ch.queue_declare("obs")
    ch.queue_bind("obs", "dlx")
    ch.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    ch.basic_publish("", "work", b"poison")
    m, _, _ = ch.basic_get("work")
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert still_serves(ferryd)
    deaths = []
    while (r := ch.basic_get("obs", auto_ack=True))[0]:
        deaths.append([(d["queue"], d["reason"], d["count"]) for d in r[1].headers["x-death"]])
    assert deaths == [[("work", "rejected", 1)], [("loop", "maxlen", 1), ("work", "rejected", 1)]]


def test_a_fanning_out_dead_letter_storm_does_not_hold_the_loop(ferryd, connect):
    """Nine queues with x-max-length 0, each bound to amq.fanout and dead-lettering to it: one
    publish makes every ordering of distinct queues a path (RabbitMQ's cycle rule drops a copy
    only when it would re-enter a queue it died in), about e x 9! = 986,000 dead letters. They
    are legitimate work, but the loop routed them all in one turn: a fresh connection waited
    for minutes and SIGTERM went unanswered (found by test_random_ops). Routed at most a
    budget per turn, everyone else is served meanwhile and SIGTERM stops the broker (the
    fixture checks a clean exit at teardown)."""
    ch = connect().channel()
    for i in range(9):
        ch.queue_declare(f"storm{i}", arguments={"x-max-length": 0, "x-dead-letter-exchange": "amq.fanout"})
        ch.queue_bind(f"storm{i}", "amq.fanout")
    ch.basic_publish("amq.fanout", "", b"x")
    time.sleep(0.2)  # the storm is under way
    t0 = time.monotonic()
    assert still_serves(ferryd, timeout=10), "a fresh connection was not served during a dead-letter storm"
    took = time.monotonic() - t0
    assert took < 5, f"a fresh connection took {took:.1f} s during a dead-letter storm"
