"""x-queue-type: classic, quorum and stream accepted with RabbitMQ's rules; unknown types refused."""
import pika.exceptions as px
import pytest

Q = {"x-queue-type": "quorum"}


def refused(ch, *a, **kw):
    with pytest.raises(px.ChannelClosedByBroker) as e:
        ch.queue_declare(*a, **kw)
    return e.value.reply_code, e.value.reply_text


def test_quorum_queue_is_declared_durable(ch, name):
    q = name("q")
    ok = ch.queue_declare(q, durable=True, arguments=Q)
    assert ok.method.queue == q
    ch.queue_delete(q)


def test_non_durable_quorum_queue_is_refused(ch, name):
    q = name("q")
    assert refused(ch, q, arguments=Q) == (
        406, f"PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'")


def test_exclusive_quorum_queue_is_refused(ch, name):
    q = name("q")
    assert refused(ch, q, durable=True, exclusive=True, arguments=Q) == (
        406, f"PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue '{q}' in vhost '/'")


def test_auto_delete_quorum_queue_is_refused(ch, name):
    q = name("q")
    assert refused(ch, q, durable=True, auto_delete=True, arguments=Q) == (
        406, f"PRECONDITION_FAILED - invalid property 'auto-delete' for queue '{q}' in vhost '/'")


def test_quorum_queue_refuses_x_max_priority(ch, name):
    q = name("q")
    assert refused(ch, q, durable=True, arguments={**Q, "x-max-priority": 5}) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/' "
             "of queue type rabbit_quorum_queue")


def test_classic_queue_refuses_x_delivery_limit(ch, name):
    q = name("q")
    assert refused(ch, q, arguments={"x-delivery-limit": 3}) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{q}' in vhost '/' "
             "of queue type rabbit_classic_queue")


def test_non_durable_stream_queue_is_refused(ch, name):
    q = name("q")
    assert refused(ch, q, arguments={"x-queue-type": "stream"}) == (
        406, f"PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'")


def test_unknown_queue_type_is_refused_with_406(ch, name):
    q = name("q")
    code, text = refused(ch, q, durable=True, arguments={"x-queue-type": "bogus"})
    assert code == 406 and "x-queue-type" in text
