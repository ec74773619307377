"""Topic exchange routing: `*` matches exactly one word, `#` zero or more, words are split
on '.', and empty words are words. Each case binds one pattern and publishes one key."""
import pytest

from .helpers import get_all, temp_queue, unique

CASES = [
    # (binding pattern, routing key, routed?)
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a", "a.b", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", "", False),  # '*' needs one word; an empty key has none to give
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("a.*", "a.", True),  # ... but an empty word is a word
    ("*.b", ".b", True),
    ("a.*.b", "a..b", True),
    ("*.*", "a.", True),
    ("*.*.*", "a..b", True),
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),  # '#' matching zero words
    ("a.#", "a.b.c", True),
    ("a.#", "", False),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a..b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.b", "a", False),
    ("#.b.#", "b", True),
    ("#.b.#", "x.b.y", True),
    ("#.b.#", "x.c.y", False),
    ("#.#", "", True),
    ("a.#.#.b", "a.b", True),
    ("*.#", "a", True),
    ("*.#", "", False),
    ("#.*", "", False),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
    ("", "", True),
    ("", "a", False),
]


@pytest.mark.parametrize("pattern,key,routed", CASES, ids=[f"{p!r}~{k!r}" for p, k, _ in CASES])
def test_topic_binding_matches_routing_key(ch, cleanup, pattern, key, routed):
    x = cleanup.exchange(unique("topic"))
    ch.exchange_declare(x, "topic")
    q = temp_queue(ch)
    ch.queue_bind(q, x, pattern)
    ch.basic_publish(x, key, b"m")
    assert len(get_all(ch, q)) == (1 if routed else 0)


def test_topic_exchange_routes_to_every_queue_with_a_matching_binding(ch, cleanup):
    x = cleanup.exchange(unique("topic"))
    ch.exchange_declare(x, "topic")
    qs = {p: temp_queue(ch) for p in ("stock.#", "stock.*.nyse", "*.ibm.*", "#", "forex.*")}
    for p, q in qs.items():
        ch.queue_bind(q, x, p)
    ch.basic_publish(x, "stock.ibm.nyse", b"m")
    got = {p: len(get_all(ch, q)) for p, q in qs.items()}
    assert got == {"stock.#": 1, "stock.*.nyse": 1, "*.ibm.*": 1, "#": 1, "forex.*": 0}


def test_queue_bound_by_two_matching_patterns_gets_one_copy(ch, cleanup):
    x = cleanup.exchange(unique("topic"))
    ch.exchange_declare(x, "topic")
    q = temp_queue(ch)
    ch.queue_bind(q, x, "a.*")
    ch.queue_bind(q, x, "#")
    ch.queue_bind(q, x, "a.b")
    ch.basic_publish(x, "a.b", b"once")
    assert [b for _m, _p, b in get_all(ch, q)] == [b"once"]
