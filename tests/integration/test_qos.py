"""basic.qos: prefetch_count per consumer (global=false, RabbitMQ's reading) and per
channel (global=true); prefetch_size is not implemented."""
from .helpers import connection_error, pump, temp_queue, wait_depth, wait_until


def _fill(ch, q, n):
    for i in range(n):
        ch.basic_publish("", q, str(i).encode())


def _consume_into(chan, q, sink):
    chan.basic_consume(q, lambda _c, m, _p, _b: sink.append(m))


def test_per_consumer_prefetch_limits_each_consumer_separately(conn, ch):
    q1, q2 = temp_queue(ch), temp_queue(ch)
    _fill(ch, q1, 5)
    _fill(ch, q2, 5)
    c = conn.channel()
    c.basic_qos(prefetch_count=2)  # global=False: each new consumer gets a limit of 2
    a, b = [], []
    _consume_into(c, q1, a)
    _consume_into(c, q2, b)
    assert wait_until(lambda: len(a) == 2 and len(b) == 2, conn)
    pump(conn, 0.3)
    assert (len(a), len(b)) == (2, 2)


def test_global_prefetch_limits_the_whole_channel(conn, ch):
    q1, q2 = temp_queue(ch), temp_queue(ch)
    _fill(ch, q1, 5)
    _fill(ch, q2, 5)
    c = conn.channel()
    c.basic_qos(prefetch_count=3, global_qos=True)
    a, b = [], []
    _consume_into(c, q1, a)
    _consume_into(c, q2, b)
    assert wait_until(lambda: len(a) + len(b) == 3, conn)
    pump(conn, 0.3)
    assert len(a) + len(b) == 3
    assert wait_depth(conn, ch, q1, 5 - len(a)) == 5 - len(a)
    c.basic_ack(0, multiple=True)  # frees the whole channel's credit
    assert wait_until(lambda: len(a) + len(b) == 6, conn)


def test_global_and_per_consumer_prefetch_both_apply(conn, ch):
    q = temp_queue(ch)
    _fill(ch, q, 10)
    c = conn.channel()
    c.basic_qos(prefetch_count=5, global_qos=True)
    c.basic_qos(prefetch_count=2)
    got = []
    _consume_into(c, q, got)
    assert wait_until(lambda: len(got) == 2, conn)
    pump(conn, 0.3)
    assert len(got) == 2


def test_prefetch_applies_to_consumers_created_after_the_qos_only(conn, ch):
    q = temp_queue(ch)
    _fill(ch, q, 6)
    c = conn.channel()
    first = []
    _consume_into(c, q, first)  # unlimited: takes everything
    assert wait_until(lambda: len(first) == 6, conn)
    c.basic_qos(prefetch_count=1)
    pump(conn, 0.1)
    assert len(first) == 6


def test_prefetch_zero_means_unlimited(conn, ch):
    q = temp_queue(ch)
    _fill(ch, q, 50)
    c = conn.channel()
    c.basic_qos(prefetch_count=0)
    got = []
    _consume_into(c, q, got)
    assert wait_until(lambda: len(got) == 50, conn)


def test_raising_prefetch_lets_more_flow_to_existing_consumer(conn, ch):
    q = temp_queue(ch)
    _fill(ch, q, 6)
    c = conn.channel()
    c.basic_qos(prefetch_count=2, global_qos=True)
    got = []
    _consume_into(c, q, got)
    assert wait_until(lambda: len(got) == 2, conn)
    c.basic_qos(prefetch_count=4, global_qos=True)
    assert wait_until(lambda: len(got) == 4, conn)
    pump(conn, 0.2)
    assert len(got) == 4


def test_basic_get_ignores_prefetch(conn, ch):
    q = temp_queue(ch)
    _fill(ch, q, 3)
    c = conn.channel()
    c.basic_qos(prefetch_count=1, global_qos=True)
    methods = [c.basic_get(q)[0] for _ in range(3)]
    assert all(m is not None for m in methods)


def test_qos_prefetch_size_is_not_implemented_540(conn, ch):
    with connection_error(conn, 540, "NOT_IMPLEMENTED - prefetch_size!=0 (10)"):
        ch.basic_qos(prefetch_size=10)
