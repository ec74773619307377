"""Work queues: competing consumers share one queue, each message goes to exactly one
consumer, deliveries rotate round-robin and basic.qos bounds what each consumer holds."""
from .helpers import depth, pump, temp_queue, unique, wait_depth, wait_until


def _consumers(conn, queue, count, prefetch):
    """`count` consumers on their own channels (subscribed in order), recording deliveries
    without acking. Returns [(channel, [method, ...], [body, ...])]."""
    out = []
    for _ in range(count):
        c = conn.channel()
        c.basic_qos(prefetch_count=prefetch)
        methods, got = [], []

        def on_msg(_c, m, _p, b, methods=methods, got=got):
            methods.append(m)
            got.append(b)

        c.basic_consume(queue, on_msg)
        out.append((c, methods, got))
    return out


def test_competing_consumers_receive_messages_round_robin(conn, ch):
    q = temp_queue(ch)
    consumers = _consumers(conn, q, 3, prefetch=5)
    for i in range(15):
        ch.basic_publish("", q, str(i).encode())
    assert wait_until(lambda: sum(len(g) for _c, _m, g in consumers) == 15, conn)
    assert [g for _c, _m, g in consumers] == [
        [str(i).encode() for i in range(k, 15, 3)] for k in range(3)
    ]


def test_consumer_at_prefetch_limit_gets_nothing_more_until_it_acks(conn, ch):
    q = temp_queue(ch)
    consumers = _consumers(conn, q, 3, prefetch=5)
    for i in range(18):
        ch.basic_publish("", q, str(i).encode())
    assert wait_until(lambda: sum(len(g) for _c, _m, g in consumers) == 15, conn)
    pump(conn, 0.3)
    assert [len(g) for _c, _m, g in consumers] == [5, 5, 5]
    assert wait_depth(conn, ch, q, 3) == 3
    first_ch, first_methods, first_got = consumers[0]
    first_ch.basic_ack(first_methods[-1].delivery_tag, multiple=True)
    assert wait_until(lambda: len(first_got) == 8, conn)
    assert first_got[5:] == [b"15", b"16", b"17"]
    assert [len(g) for _c, _m, g in consumers[1:]] == [5, 5]


def test_prefetch_one_consumers_share_work_evenly_holding_one_message_each(conn, ch):
    q = temp_queue(ch)
    consumers = _consumers(conn, q, 3, prefetch=1)
    for i in range(30):
        ch.basic_publish("", q, str(i).encode())
    acked = [0, 0, 0]
    max_unacked = 0
    all_bodies = []
    for _round in range(10):
        # Lockstep: wait until every consumer holds a message, then ack them all.
        assert wait_until(lambda: all(len(m) - a >= 1 for (_c, m, _g), a in zip(consumers, acked)), conn)
        pump(conn, 0.02)
        for i, (c, methods, got) in enumerate(consumers):
            max_unacked = max(max_unacked, len(methods) - acked[i])
            assert len(methods) - acked[i] == 1, f"consumer {i} holds {len(methods) - acked[i]} with prefetch 1"
            c.basic_ack(methods[-1].delivery_tag)
            acked[i] = len(methods)
            all_bodies.append(got[-1])
    assert max_unacked == 1
    assert [len(m) for _c, m, _g in consumers] == [10, 10, 10]
    assert sorted(all_bodies, key=int) == [str(i).encode() for i in range(30)]
    assert depth(ch, q) == 0


def test_competing_consumers_on_separate_connections_get_each_message_exactly_once(connect, cleanup):
    prefetch, total = 5, 300
    q = cleanup.queue(unique("work"))
    producer = connect()
    pch = producer.channel()
    pch.queue_declare(q)
    workers = []
    for _ in range(3):
        c = connect()
        wch = c.channel()
        wch.basic_qos(prefetch_count=prefetch)
        pending = []
        wch.basic_consume(q, lambda _c, m, _p, b, pending=pending: pending.append((m, b)))
        workers.append({"conn": c, "ch": wch, "pending": pending, "done": [], "max": 0})
    pch.confirm_delivery()
    for i in range(total):
        pch.basic_publish("", q, str(i).encode())

    def step():
        for w in workers:
            w["conn"].process_data_events(time_limit=0.005)
            w["max"] = max(w["max"], len(w["pending"]))
            if w["pending"]:
                w["ch"].basic_ack(w["pending"][-1][0].delivery_tag, multiple=True)
                w["done"].extend(w["pending"])
                w["pending"].clear()
        return sum(len(w["done"]) for w in workers) >= total

    assert wait_until(step, [], timeout=15)
    got = [b for w in workers for _m, b in w["done"]]
    assert sorted(got, key=int) == [str(i).encode() for i in range(total)]
    assert not any(m.redelivered for w in workers for m, _b in w["done"])
    assert all(w["done"] for w in workers), "every consumer should get a share"
    assert max(w["max"] for w in workers) <= prefetch
    pump(workers[0]["conn"], 0.1)
    assert depth(pch, q) == 0
