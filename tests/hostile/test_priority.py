"""x-max-priority at its edges (issue 8, item 1). RabbitMQ accepts 0..255
(rabbit_amqqueue:check_max_priority_arg, ?MAX_SUPPORTED_PRIORITY = 255) and refuses more with
406 PRECONDITION_FAILED. ferryd kept the level count in a uint8_t: 255 + 1 wrapped to 0 levels
and the first publish wrote levels[-1]."""
import pika
import pytest
from pika import exceptions

from hostile_lib import params, still_serves


def publish_and_drain(ch, q, prios):
    for i, p in enumerate(prios):
        ch.basic_publish("", q, str(i).encode(), pika.BasicProperties(priority=p))
    got = []
    for _ in range(len(prios)):
        m, props, body = ch.basic_get(q, auto_ack=True)
        assert m is not None, f"only {len(got)} of {len(prios)} messages came back"
        got.append((props.priority, int(body)))
    assert ch.basic_get(q, auto_ack=True)[0] is None
    return got


@pytest.mark.parametrize("maxp", [0, 1, 254, 255])
def test_max_priority_edge_values_queue_and_deliver_by_priority(ferryd, connect, maxp):
    ch = connect().channel()
    q = f"prio-{maxp}"
    ch.queue_declare(q, arguments={"x-max-priority": maxp})
    prios = [0, 1, 2, 128, 254, 255, 0, 255]
    got = publish_and_drain(ch, q, prios)

    # Expected order: by effective priority min(p, maxp) descending (one level when maxp is
    # 0), FIFO within a level, as RabbitMQ's priority queue delivers.
    def level(p):
        return min(p, maxp) if maxp > 0 else 0
    want = sorted(((prios[i], i) for i in range(len(prios))), key=lambda t: (-level(t[0]), t[1]))
    assert got == want
    assert still_serves(ferryd)


def test_max_priority_256_is_refused_as_rabbitmq_does(ferryd, connect):
    ch = connect().channel()
    with pytest.raises(exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("prio-256", arguments={"x-max-priority": 256})
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue "
                                  "'prio-256' in vhost '/': {max_value_exceeded,256}")
    ch = connect().channel()
    with pytest.raises(exceptions.ChannelClosedByBroker):
        ch.queue_declare("prio-256", passive=True)  # it was not created
    assert still_serves(ferryd)


def test_max_priority_255_durable_persistent_messages_survive_restart(ferryd_factory):
    """The recovery path rebuilds the 256 levels too (recovered entries carry their level)."""
    d = ferryd_factory()
    c = pika.BlockingConnection(params(d))
    ch = c.channel()
    ch.queue_declare("prio-durable", durable=True, arguments={"x-max-priority": 255})
    ch.confirm_delivery()
    for p in (3, 255, 0, 200):
        ch.basic_publish("", "prio-durable", str(p).encode(), pika.BasicProperties(priority=p, delivery_mode=2))
    c.close()
    d.stop_and_check()
    d2 = ferryd_factory(data_dir=d.data_dir)
    c = pika.BlockingConnection(params(d2))
    ch = c.channel()
    got = [int(ch.basic_get("prio-durable", auto_ack=True)[2]) for _ in range(4)]
    assert got == [255, 200, 3, 0]
    c.close()
