"""queue.declare / delete / purge: server-named queues, passive declares, equivalence
checks, exclusivity and auto-delete, with the exact errors RabbitMQ gives."""
import re

import pytest

from .helpers import channel_error, get_all, temp_queue, unique, wait_depth

LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{}' in vhost '/'. "
          "It could be originally declared on another connection or the exclusive property value "
          "does not match that of the original declaration.")


def test_server_named_queue_gets_amq_gen_name(ch):
    ok = ch.queue_declare("", exclusive=True).method
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", ok.queue), ok.queue
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    assert ch.queue_declare("", exclusive=True).method.queue != ok.queue


def test_empty_queue_name_means_the_last_queue_declared_on_the_channel(ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")
    assert ch.queue_purge("").method.message_count == 1
    ch.basic_publish("", q, b"m2")
    m, _p, b = ch.basic_get("", auto_ack=True)
    assert (m.routing_key, b) == (q, b"m2")


def test_empty_queue_name_without_a_previous_declare_fails_404(conn, ch):
    with channel_error(conn, 404, "NOT_FOUND - no previously declared queue"):
        ch.basic_get("")


def test_declare_ok_reports_ready_message_and_consumer_counts(conn, ch):
    q = unique("q")
    ch.queue_declare(q, exclusive=True)
    for _ in range(3):
        ch.basic_publish("", q, b"m")
    assert wait_depth(conn, ch, q, 3) == 3
    ok = ch.queue_declare(q, exclusive=True).method  # a non-passive redeclare answers too
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 3, 0)
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(q, lambda *a: None)  # holds 1 unacked: 2 stay ready
    assert wait_depth(conn, ch, q, 2) == 2
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (2, 1)


def test_redeclaring_a_server_named_queue_by_name_is_refused_403(conn, ch):
    q = temp_queue(ch)
    ch.queue_declare(q, passive=True)  # a passive declare is fine
    with channel_error(conn, 403, f"ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"):
        ch.queue_declare(q, exclusive=True)


def test_passive_declare_of_missing_queue_fails_404(conn, ch):
    q = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_declare(q, passive=True)


def test_declaring_queue_with_amq_prefix_is_refused_403(conn, ch):
    q = "amq." + unique("q")
    with channel_error(conn, 403, f"ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"):
        ch.queue_declare(q)


def test_redeclare_queue_with_different_argument_fails_406(conn, ch, cleanup):
    q = cleanup.queue(unique("q"))
    ch.queue_declare(q, arguments={"x-message-ttl": 1000})
    ch.queue_declare(q, arguments={"x-message-ttl": 1000})  # same arguments: fine
    text = f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': " \
           "received '2000' but current is '1000'"
    with channel_error(conn, 406, text):
        ch.queue_declare(q, arguments={"x-message-ttl": 2000})


def test_redeclare_queue_without_its_argument_fails_406(conn, ch, cleanup):
    q = cleanup.queue(unique("q"))
    ch.queue_declare(q, arguments={"x-max-length": 1})
    text = f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': " \
           "received none but current is the value '1' of type 'signedint'"
    with channel_error(conn, 406, text):
        ch.queue_declare(q)


def test_redeclare_queue_with_extra_unknown_argument_is_accepted(ch, cleanup):
    q = cleanup.queue(unique("q"))
    ch.queue_declare(q)
    assert ch.queue_declare(q, arguments={"x-not-a-real-argument": 1}).method.queue == q


def test_redeclare_queue_with_different_durable_flag_fails_406(conn, ch, cleanup):
    q = cleanup.queue(unique("q"))
    ch.queue_declare(q, durable=False)
    text = f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': " \
           "received 'true' but current is 'false'"
    with channel_error(conn, 406, text):
        ch.queue_declare(q, durable=True)


def test_redeclare_queue_with_different_auto_delete_flag_fails_406(conn, ch, cleanup):
    q = cleanup.queue(unique("q"))
    ch.queue_declare(q, auto_delete=True)
    text = f"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': " \
           "received 'false' but current is 'true'"
    with channel_error(conn, 406, text):
        ch.queue_declare(q, auto_delete=False)


def test_passive_declare_ignores_flags_and_arguments(ch, cleanup):
    q = cleanup.queue(unique("q"))
    ch.queue_declare(q, arguments={"x-max-length": 3})
    ok = ch.queue_declare(q, passive=True, durable=True, auto_delete=True, arguments={"x-max-length": 9})
    assert ok.method.queue == q


def test_redeclare_exclusive_queue_as_non_exclusive_is_locked_405(conn, ch):
    q = unique("excl")
    ch.queue_declare(q, exclusive=True)
    with channel_error(conn, 405, LOCKED.format(q)):
        ch.queue_declare(q, exclusive=False)


@pytest.mark.parametrize("op", ["declare", "passive_declare", "consume", "get", "purge", "delete", "bind"])
def test_exclusive_queue_from_another_connection_is_locked_405(conn, ch, connect, op):
    q = unique("excl")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"m")
    other = connect()
    och = other.channel()
    with channel_error(other, 405, LOCKED.format(q)):
        if op == "declare":
            och.queue_declare(q, exclusive=True)
        elif op == "passive_declare":
            och.queue_declare(q, passive=True)
        elif op == "consume":
            och.basic_consume(q, lambda *a: None)
        elif op == "get":
            och.basic_get(q)
        elif op == "purge":
            och.queue_purge(q)
        elif op == "delete":
            och.queue_delete(q)
        else:
            och.queue_bind(q, "amq.direct", "k")
    assert wait_depth(conn, ch, q, 1) == 1  # the owner's queue is untouched


def test_exclusive_queue_is_deleted_when_its_connection_closes(connect):
    owner, other = connect(), connect()
    q = unique("excl")
    owner.channel().queue_declare(q, exclusive=True)
    owner.close()
    och = other.channel()
    with channel_error(other, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        och.queue_declare(q, passive=True)


def test_exclusive_queue_survives_the_channel_that_declared_it(conn):
    c1 = conn.channel()
    q = unique("excl")
    c1.queue_declare(q, exclusive=True)
    c1.close()
    assert conn.channel().queue_declare(q, passive=True).method.queue == q


def test_auto_delete_queue_is_deleted_when_its_last_consumer_cancels(conn, ch):
    q = unique("autodel")
    ch.queue_declare(q, auto_delete=True)
    t1 = ch.basic_consume(q, lambda *a: None)
    t2 = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(t1)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(t2)
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_declare(q, passive=True)


def test_auto_delete_queue_that_never_had_a_consumer_stays(conn, ch, cleanup):
    q = cleanup.queue(unique("autodel"))
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"m")
    assert wait_depth(conn, ch, q, 1) == 1


def test_queue_delete_returns_the_number_of_messages_deleted(conn, ch):
    q = unique("q")
    ch.queue_declare(q)
    for _ in range(4):
        ch.basic_publish("", q, b"m")
    assert ch.queue_delete(q).method.message_count == 4
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_declare(q, passive=True)


def test_deleting_a_missing_queue_succeeds_with_zero_count(ch):
    assert ch.queue_delete(unique("never-declared")).method.message_count == 0


def test_queue_delete_if_unused_with_a_consumer_fails_406(conn, ch):
    q = temp_queue(ch)
    conn.channel().basic_consume(q, lambda *a: None)
    with channel_error(conn, 406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"):
        ch.queue_delete(q, if_unused=True)
    assert conn.channel().queue_declare(q, passive=True).method.consumer_count == 1


def test_queue_delete_if_unused_without_consumers_deletes(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")  # messages do not make a queue "used"
    assert ch.queue_delete(q, if_unused=True).method.message_count == 1


def test_queue_delete_if_empty_with_messages_fails_406(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")
    with channel_error(conn, 406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"):
        ch.queue_delete(q, if_empty=True)
    assert wait_depth(conn, conn.channel(), q, 1) == 1


def test_queue_delete_if_empty_on_empty_queue_deletes(conn, ch):
    q = temp_queue(ch)
    ch.queue_delete(q, if_empty=True)
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_declare(q, passive=True)


def test_queue_purge_returns_the_count_and_empties_the_queue(ch):
    q = temp_queue(ch)
    for _ in range(7):
        ch.basic_publish("", q, b"m")
    assert ch.queue_purge(q).method.message_count == 7
    assert get_all(ch, q) == []
    assert ch.queue_purge(q).method.message_count == 0


def test_queue_purge_leaves_unacked_messages_alone(conn, ch):
    q = temp_queue(ch)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    m, _p, _b = ch.basic_get(q)  # unacked
    assert ch.queue_purge(q).method.message_count == 2
    ch.basic_nack(m.delivery_tag, requeue=True)
    assert [(mm.redelivered, b) for mm, _p, b in get_all(ch, q)] == [(True, b"0")]


def test_queue_purge_of_missing_queue_fails_404(conn, ch):
    q = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_purge(q)


def test_deleting_a_queue_removes_its_bindings(ch):
    q = unique("q")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, "amq.direct", q)
    ch.queue_delete(q)
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("amq.direct", q, b"m")
    assert get_all(ch, q) == []
