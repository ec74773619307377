"""Topic routing through a trie (issue 8, item 12). ferryd ran the pattern matcher on every
binding of a topic exchange for every message: with 100,000 bindings a publish cost ~24 ms
and one client's pipeline of publishes held the loop for tens of seconds. Topic exchanges now
route through a trie of binding keys (as RabbitMQ's rabbit_exchange_type_topic does), so a
publish costs what its routing key reaches.

Two checks on one exchange with 100,000 bindings to 16 queues:
- speed, robustly: 300 publishes whose keys match nothing must take at most a few times as
  long as the same publishes to an exchange with 16 bindings (before: about 100 times);
- correctness: a randomized set of routing keys lands in exactly the queues the old
  matcher (ported below, word for word) says, message by message."""
import random
import time

import pipeline as p
from hostile_lib import still_serves

NBIND = 100_000
NQ = 16


def old_topic_match(pattern, key):
    """src/topic.c topic_match (the matcher every binding went through), in Python."""
    pw = pattern.split(".") if pattern else []
    kw = key.split(".") if key else []
    m = [True] + [False] * len(kw)
    for w in pw:
        nxt = [False] * (len(kw) + 1)
        for j in range(len(kw) + 1):
            if w == "#":
                nxt[j] = m[j] or (j > 0 and nxt[j - 1])
            elif j > 0 and m[j - 1] and (w == "*" or w == kw[j - 1]):
                nxt[j] = True
        m = nxt
    return m[len(kw)]


def patterns(rnd):
    """NBIND distinct binding keys: a literal first word (1% '*' or '#'), then 0-4 words
    from a small vocabulary with wildcards; every key has at least one literal word."""
    out, seen = [], set()
    while len(out) < NBIND:
        first = rnd.choice("*#") if rnd.random() < 0.01 else f"w{rnd.randrange(100)}"
        rest = [rnd.choice(["*", "#", "", *[f"w{i}" for i in range(10)]]) for _ in range(rnd.randrange(5))]
        words = [first] + rest
        if all(w in ("*", "#") for w in words):
            continue
        k = ".".join(words)
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def bind_all(c, x, keys):
    frames = [p.queue_bind(f"tq-{i % NQ}", x, k) for i, k in enumerate(keys)]
    for i in range(0, len(frames), 5000):
        c.send(b"".join(frames[i:i + 5000]))
    p.sync(c, timeout=120)


def publish_timed(c, x, keys):
    t0 = time.monotonic()
    c.send(b"".join(p.publish(x, k, b"") for k in keys))
    p.sync(c, timeout=120)
    return time.monotonic() - t0


def test_100000_topic_bindings_route_fast_and_as_the_old_matcher(ferryd):
    rnd = random.Random(12)
    keys = patterns(rnd)
    c = p.open_conn(ferryd)
    c.send(p.exchange_declare("big", "topic") + p.exchange_declare("small", "topic") +
           b"".join(p.queue_declare(f"tq-{i}") for i in range(NQ)))
    bind_all(c, "big", keys)
    bind_all(c, "small", [f"w{i}.#" for i in range(NQ)])

    # Speed: keys of "zz" words match no binding (each has a literal w-word).
    misses = [".".join(["zz"] * rnd.randrange(1, 8)) for _ in range(300)]
    t_small = publish_timed(c, "small", misses)
    t_big = publish_timed(c, "big", misses)
    assert t_big < 5 * t_small + 0.5, f"300 publishes: {t_big:.2f} s with {NBIND} bindings, {t_small:.2f} s with {NQ}"

    # Correctness: where each message goes, against the old matcher. Only bindings whose
    # first word is the key's first word (or a wildcard) can match; the rest are skipped.
    by_first = {}
    for i, k in enumerate(keys):
        by_first.setdefault(k.split(".")[0], []).append(i)
    vocab = [f"w{i}" for i in range(10)] + [""]
    tests = [""] + [".".join([f"w{rnd.randrange(100)}"] + [rnd.choice(vocab) for _ in range(rnd.randrange(6))])
                    for _ in range(99)]
    want = {q: set() for q in range(NQ)}
    for n, key in enumerate(tests):
        cand = by_first.get(key.split(".")[0], []) + by_first.get("*", []) + by_first.get("#", [])
        for i in cand:
            if old_topic_match(keys[i], key):
                want[i % NQ].add(n)
    c.send(b"".join(p.publish("big", key, str(n).encode()) for n, key in enumerate(tests)))
    p.sync(c)
    for q in range(NQ):
        got = set()
        while (body := p.get(c, f"tq-{q}")) is not None:
            got.add(int(body))
        assert got == want[q], f"tq-{q}: extra {sorted(got - want[q])[:10]}, missing {sorted(want[q] - got)[:10]}"
    assert any(want.values())
    c.close()
    assert still_serves(ferryd)


def test_unbind_prunes_and_routing_follows(ferryd, connect):
    """Unbinding removes a key from the trie: what it alone matched is no longer routed,
    while a binding sharing its prefix still is."""
    ch = connect().channel()
    ch.exchange_declare("tt", "topic")
    ch.queue_declare("tt-q")
    for k in ("a.b.c", "a.b.#", "a.*.c", "#", "a.b"):
        ch.queue_bind("tt-q", "tt", k)
    for k in ("a.b.c", "a.b.#", "a.*.c", "#"):
        ch.queue_unbind("tt-q", "tt", k)
    for rk in ("a.b.c", "a.b", "a", "x.y"):
        ch.basic_publish("tt", rk, rk.encode())
    got = []
    while (r := ch.basic_get("tt-q", auto_ack=True))[0]:
        got.append(r[2].decode())
    assert got == ["a.b"]
    assert still_serves(ferryd)
