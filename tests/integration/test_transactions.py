"""tx.select / tx.commit / tx.rollback: publishes and acks on a transactional channel take
effect only at commit; rollback discards them."""
from .helpers import bodies, channel_error, depth, get_all, pump, temp_queue, unique, wait_depth


def _observer(connect):
    """A second connection that watches the queue depth."""
    c = connect()
    return c, c.channel()


def test_published_messages_appear_only_after_commit(connect, cleanup):
    q = cleanup.queue(unique("tx"))
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    obs_conn, obs = _observer(connect)
    pump(conn, 0.2)
    assert depth(obs, q) == 0
    ch.tx_commit()
    assert wait_depth(obs_conn, obs, q, 3) == 3
    assert bodies(get_all(obs, q)) == [b"0", b"1", b"2"]


def test_rolled_back_publishes_vanish(conn, ch):
    q = temp_queue(ch)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled-back")
    ch.tx_rollback()
    ch.basic_publish("", q, b"committed")
    ch.tx_commit()
    assert bodies(get_all(conn.channel(), q)) == [b"committed"]


def test_rolled_back_ack_is_not_applied(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")
    ch.tx_select()
    m, _p, _b = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.close()  # the message is still unacked, so closing the channel requeues it
    assert [(mm.redelivered, b) for mm, _p, b in get_all(conn.channel(), q)] == [(True, b"m")]


def test_committed_ack_is_applied(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")
    ch.tx_select()
    m, _p, _b = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert get_all(conn.channel(), q) == []


def test_ack_after_rollback_can_be_done_again_and_committed(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")
    ch.tx_select()
    m, _p, _b = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert get_all(conn.channel(), q) == []


def test_channel_stays_transactional_after_commit(connect, cleanup):
    q = cleanup.queue(unique("tx"))
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.tx_select()
    ch.basic_publish("", q, b"1")
    ch.tx_commit()
    ch.basic_publish("", q, b"2")  # in the next transaction
    obs_conn, obs = _observer(connect)
    assert wait_depth(obs_conn, obs, q, 1) == 1
    pump(conn, 0.2)
    assert depth(obs, q) == 1
    ch.tx_rollback()
    assert bodies(get_all(obs, q)) == [b"1"]


def test_uncommitted_publishes_are_dropped_when_channel_closes(conn, ch):
    q = temp_queue(ch)
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"never")
    tx.close()
    pump(conn, 0.1)
    assert get_all(ch, q) == []


def test_tx_commit_without_select_fails_406(conn, ch):
    with channel_error(conn, 406, "PRECONDITION_FAILED - channel is not transactional"):
        ch.tx_commit()


def test_tx_rollback_without_select_fails_406(conn, ch):
    with channel_error(conn, 406, "PRECONDITION_FAILED - channel is not transactional"):
        ch.tx_rollback()


def test_tx_select_twice_is_fine(ch):
    ch.tx_select()
    ch.tx_select()
    ch.tx_commit()
    assert ch.is_open


def test_confirm_select_on_transactional_channel_fails_406(conn, ch):
    ch.tx_select()
    with channel_error(conn, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"):
        ch.confirm_delivery()


def test_tx_select_on_confirm_channel_fails_406(conn, ch):
    ch.confirm_delivery()
    with channel_error(conn, 406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode"):
        ch.tx_select()
