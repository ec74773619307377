"""Hash flooding (issue 8, item 10). ferryd's maps of client-chosen strings (message ids in
a deduplication window, queue names, consumer tags) hashed with unkeyed FNV-1a and probed
linearly: a client can compute keys that all land in one probe run, and every insert then
walks all the earlier ones — N inserts cost N²/2 probes. The hash is keyed now (SipHash-1-3,
random key per process), so no key set computed offline collides.

The colliding keys are made here, offline, for the old function: FNV-1a's low k bits after a
byte depend only on the low k bits before it, so two blocks that agree in the low 24 bits
from one state agree from any state with the same low bits; 14 such pairs, one after the
other, give 2^14 keys that agree in their low 24 bits — one slot for any table up to 2^24.
The assertion is on complexity, not speed: inserting the colliding set may take at most a
few times as long as inserting as many random keys of the same length."""
import os
import random
import time

import pipeline as p
from hostile_lib import still_serves

FNV_OFFSET, FNV_PRIME, M64 = 1469598103934665603, 1099511628211, 2 ** 64
BITS = 24
BLOCKS = 14  # 2^14 = 16,384 keys
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def fnv1a(data, h=FNV_OFFSET):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) % M64
    return h


def colliding_keys(prefix=b"flood-", seed=8):
    """2^BLOCKS distinct keys whose old hash agrees in the low BITS bits."""
    rnd = random.Random(seed)
    mask = (1 << BITS) - 1
    state = fnv1a(prefix)
    pairs = []
    for _ in range(BLOCKS):
        seen = {}
        while True:
            blk = bytes(rnd.choice(ALPHABET) for _ in range(5))
            low = fnv1a(blk, state) & mask
            other = seen.setdefault(low, blk)
            if other != blk:
                pairs.append((other, blk))
                state = fnv1a(blk, state)
                break
    keys = [prefix]
    for a, b in pairs:
        keys = [k + a for k in keys] + [k + b for k in keys]
    return [k.decode() for k in keys]


def random_keys(n, length, seed=9):
    rnd = random.Random(seed)
    return ["".join(chr(rnd.choice(ALPHABET)) for _ in range(length)) for _ in range(n)]


def test_the_generator_really_collides_under_the_old_hash():
    keys = colliding_keys()
    assert len(set(keys)) == 2 ** BLOCKS
    lows = {fnv1a(k.encode()) & ((1 << BITS) - 1) for k in keys}
    assert len(lows) == 1


def timed(c, frames, chunk=2000):
    t0 = time.monotonic()
    for i in range(0, len(frames), chunk):
        c.send(b"".join(frames[i:i + chunk]))
    p.sync(c, timeout=120)
    return time.monotonic() - t0


def ratio_bound():
    return float(os.environ.get("FERRY_FLOOD_RATIO", "4"))


def test_message_ids_colliding_under_the_old_hash_do_not_slow_a_dedup_window(ferryd):
    bad = colliding_keys()
    good = random_keys(len(bad), len(bad[0]))
    c = p.open_conn(ferryd)
    c.send(p.queue_declare("dedup-good", arguments={"x-deduplication-window": 600000, "x-max-length": 1}) +
           p.queue_declare("dedup-bad", arguments={"x-deduplication-window": 600000, "x-max-length": 1}))
    p.sync(c)
    t_good = timed(c, [p.publish("", "dedup-good", b"", message_id=k) for k in good])
    t_bad = timed(c, [p.publish("", "dedup-bad", b"", message_id=k) for k in bad])
    # every id was remembered: publishing the set again adds nothing
    c.send(b"".join(p.publish("", "dedup-bad", b"dup", message_id=k) for k in bad[:100]))
    p.sync(c)
    c.close()
    assert t_bad < ratio_bound() * t_good + 0.5, \
        f"{len(bad)} colliding ids took {t_bad:.2f} s, as many random ones {t_good:.2f} s"
    assert still_serves(ferryd)


def test_queue_names_colliding_under_the_old_hash_do_not_slow_declares(ferryd):
    bad = colliding_keys(prefix=b"q-")
    good = random_keys(len(bad), len(bad[0]))
    c = p.open_conn(ferryd)
    t_good = timed(c, [p.queue_declare(k) for k in good])
    t_bad = timed(c, [p.queue_declare(k) for k in bad])
    c.close()
    assert t_bad < ratio_bound() * t_good + 0.5, \
        f"{len(bad)} colliding queue names took {t_bad:.2f} s, as many random ones {t_good:.2f} s"
    assert still_serves(ferryd)
