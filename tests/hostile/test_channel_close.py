"""Issue 8, item 15: a client's channel.close that crosses ferryd's own error close of the
same channel. As RabbitMQ 3.10 (checked against rabbitmq-server 3.10.8): the server answers
the client's close with close-ok, keeps the channel closing until the client's close-ok,
and the connection stays open; a channel.open before that close-ok is a 504."""
import rawamqp as amqp

CLOSE_ARGS = amqp.connection_close_args(200, "bye")


def cross_closes(c):
    """An error (basic.get on a missing queue) and, without waiting, our own close."""
    c.send(amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args("hostile-no-such-queue")) +
           amqp.method_frame(1, amqp.CHANNEL_CLOSE, CLOSE_ARGS))
    close = c.read_close()
    assert (close.level, close.channel, close.code) == ("channel", 1, amqp.NOT_FOUND), close
    f = c.recv_frame()
    assert (f.method, f.channel) == (amqp.CHANNEL_CLOSE_OK, 1), f


def test_crossing_channel_close_gets_close_ok_and_the_connection_stays(raw):
    c = raw()
    c.open_channel(1)
    cross_closes(c)
    c.send(amqp.method_frame(1, amqp.CHANNEL_CLOSE_OK))  # the close-ok the server's close requires
    c.open_channel(1)  # the channel number is free again, the connection alive
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("", exclusive=True)))
    c.expect(amqp.QUEUE_DECLARE_OK)


def test_channel_open_on_a_closing_channel_is_a_channel_error(raw):
    c = raw()
    c.open_channel(1)
    cross_closes(c)
    c.send(amqp.method_frame(1, amqp.CHANNEL_OPEN, amqp.channel_open_args()))
    close = c.read_close()
    assert (close.level, close.code) == ("connection", amqp.CHANNEL_ERROR), close
    assert close.text == "CHANNEL_ERROR - second 'channel.open' seen", close
    assert (close.class_id, close.method_id) == amqp.CHANNEL_OPEN, close


def test_methods_on_a_closing_channel_are_ignored_until_close_ok(raw):
    c = raw()
    c.open_channel(1)
    c.send(amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args("hostile-no-such-queue")))
    close = c.read_close()
    assert (close.level, close.code) == ("channel", amqp.NOT_FOUND), close
    # Ignored (spec 2.2.4): no answer on channel 1 until our close-ok.
    c.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("", exclusive=True)))
    c.send(amqp.method_frame(1, amqp.CHANNEL_CLOSE_OK))
    c.open_channel(1)
