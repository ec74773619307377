"""exchange.declare / exchange.delete / bindings: what is allowed, and the exact error
(reply code, text, channel or connection level) for everything that is not."""
import pytest

from .helpers import bodies, channel_error, connection_error, get_all, roundtrip, temp_queue, unique

DEFAULT_EXCHANGE_REFUSED = "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_declare_with_unknown_exchange_type_closes_connection_503(conn, ch):
    x = unique("badtype")
    with connection_error(conn, 503, "COMMAND_INVALID - unknown exchange type 'no-such-type'"):
        ch.exchange_declare(x, "no-such-type")


def test_redeclare_exchange_with_different_type_fails_406(conn, ch, cleanup):
    x = cleanup.exchange(unique("x"))
    ch.exchange_declare(x, "fanout")
    ch.exchange_declare(x, "fanout")  # the same declaration again is fine
    text = f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': " \
           "received 'direct' but current is 'fanout'"
    with channel_error(conn, 406, text):
        ch.exchange_declare(x, "direct")


def test_redeclare_exchange_with_different_durable_flag_fails_406(conn, ch, cleanup):
    x = cleanup.exchange(unique("x"))
    ch.exchange_declare(x, "fanout")
    text = f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': " \
           "received 'true' but current is 'false'"
    with channel_error(conn, 406, text):
        ch.exchange_declare(x, "fanout", durable=True)


def test_redeclare_exchange_with_different_auto_delete_fails_406(conn, ch, cleanup):
    x = cleanup.exchange(unique("x"))
    ch.exchange_declare(x, "fanout", auto_delete=True)
    text = f"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '{x}' in vhost '/': " \
           "received 'false' but current is 'true'"
    with channel_error(conn, 406, text):
        ch.exchange_declare(x, "fanout")


def test_redeclare_exchange_without_its_arguments_fails_406(conn, ch, cleanup):
    x = cleanup.exchange(unique("x"))
    ch.exchange_declare(x, "fanout", arguments={"alternate-exchange": "ae"})
    text = f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': " \
           "received none but current is the value 'ae' of type 'longstr'"
    with channel_error(conn, 406, text):
        ch.exchange_declare(x, "fanout")


def test_passive_declare_ignores_type_of_existing_exchange(ch):
    ch.exchange_declare("amq.direct", "fanout", passive=True)
    assert ch.is_open


def test_passive_declare_of_missing_exchange_fails_404(conn, ch):
    x = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.exchange_declare(x, passive=True)


def test_declaring_exchange_with_amq_prefix_is_refused_403(conn, ch):
    x = "amq." + unique("foo")
    with channel_error(conn, 403, f"ACCESS_REFUSED - exchange name '{x}' contains reserved prefix 'amq.*'"):
        ch.exchange_declare(x, "direct")


@pytest.mark.parametrize("op", ["declare", "passive_declare", "delete", "bind"])
def test_operations_on_the_default_exchange_are_refused_403(conn, ch, op):
    q = temp_queue(ch)
    with channel_error(conn, 403, DEFAULT_EXCHANGE_REFUSED):
        if op == "declare":
            ch.exchange_declare("", "direct")
        elif op == "passive_declare":
            ch.exchange_declare("", passive=True)
        elif op == "delete":
            ch.exchange_delete("")
        else:
            ch.queue_bind(q, "", "k")


def test_amq_default_is_not_a_name_for_the_default_exchange(conn, ch):
    with channel_error(conn, 404, "NOT_FOUND - no exchange 'amq.default' in vhost '/'"):
        ch.exchange_declare("amq.default", passive=True)


def test_deleting_a_predefined_amq_exchange_is_refused_403(conn, ch):
    with channel_error(conn, 403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"):
        ch.exchange_delete("amq.direct")


def test_publish_to_missing_exchange_closes_channel_404(conn, ch):
    x = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.basic_publish(x, "k", b"m")
        roundtrip(ch)


def test_publish_to_internal_exchange_is_refused_403(conn, ch, cleanup):
    x = cleanup.exchange(unique("internal"))
    ch.exchange_declare(x, "fanout", internal=True)
    with channel_error(conn, 403, f"ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'"):
        ch.basic_publish(x, "", b"m")
        roundtrip(ch)


def test_internal_exchange_still_receives_from_exchange_bindings(ch, cleanup):
    src, internal = cleanup.exchange(unique("src")), cleanup.exchange(unique("internal"))
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(internal, "fanout", internal=True)
    q = temp_queue(ch)
    ch.queue_bind(q, internal)
    ch.exchange_bind(destination=internal, source=src)
    ch.basic_publish(src, "", b"via-src")
    assert bodies(get_all(ch, q)) == [b"via-src"]


def test_bind_missing_queue_fails_404(conn, ch):
    q = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_bind(q, "amq.direct", "k")


def test_bind_queue_to_missing_exchange_fails_404(conn, ch):
    q, x = temp_queue(ch), unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.queue_bind(q, x, "k")


def test_exchange_bind_with_missing_destination_fails_404(conn, ch):
    x = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.exchange_bind(destination=x, source="amq.direct", routing_key="k")


def test_exchange_bind_with_missing_source_fails_404(conn, ch):
    x = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.exchange_bind(destination="amq.fanout", source=x, routing_key="k")


def test_exchange_delete_if_unused_with_queue_binding_fails_406(conn, ch, cleanup):
    x = cleanup.exchange(unique("x"))
    ch.exchange_declare(x, "fanout")
    ch.queue_bind(temp_queue(ch), x)
    with channel_error(conn, 406, f"PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"):
        ch.exchange_delete(x, if_unused=True)
    conn.channel().exchange_declare(x, passive=True)  # still there


def test_exchange_delete_if_unused_when_source_of_exchange_binding_fails_406(conn, ch, cleanup):
    src, dst = cleanup.exchange(unique("src")), cleanup.exchange(unique("dst"))
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(destination=dst, source=src)
    with channel_error(conn, 406, f"PRECONDITION_FAILED - exchange '{src}' in vhost '/' in use"):
        ch.exchange_delete(src, if_unused=True)


def test_exchange_delete_if_unused_counts_only_bindings_where_it_is_the_source(conn, ch, cleanup):
    src, dst = cleanup.exchange(unique("src")), cleanup.exchange(unique("dst"))
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(destination=dst, source=src)
    ch.exchange_delete(dst, if_unused=True)
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{dst}' in vhost '/'"):
        ch.exchange_declare(dst, passive=True)


def test_exchange_delete_if_unused_deletes_an_unbound_exchange(conn, ch):
    x = unique("x")
    ch.exchange_declare(x, "direct")
    ch.exchange_delete(x, if_unused=True)
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.exchange_declare(x, passive=True)


def test_deleting_a_missing_exchange_succeeds(ch):
    ch.exchange_delete(unique("never-declared"))
    assert ch.is_open


def test_deleting_an_exchange_removes_its_bindings(ch, cleanup):
    x = cleanup.exchange(unique("x"))
    ch.exchange_declare(x, "direct")
    q = temp_queue(ch)
    ch.queue_bind(q, x, "k")
    ch.exchange_delete(x)
    ch.exchange_declare(x, "direct")
    ch.basic_publish(x, "k", b"m")
    assert get_all(ch, q) == []


def test_auto_delete_exchange_is_deleted_when_its_last_binding_goes(conn, ch):
    x = unique("autodel")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q1, q2 = temp_queue(ch), temp_queue(ch)
    ch.queue_bind(q1, x, "k")
    ch.queue_bind(q2, x, "k")
    ch.queue_unbind(q1, x, "k")
    ch.exchange_declare(x, passive=True)  # one binding left
    ch.queue_delete(q2)
    with channel_error(conn, 404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.exchange_declare(x, passive=True)


def test_auto_delete_exchange_never_bound_stays(ch, cleanup):
    x = cleanup.exchange(unique("autodel"))
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.exchange_declare(x, passive=True)
    assert ch.is_open
