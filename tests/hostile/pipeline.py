"""Raw AMQP for building big topologies fast: methods with nowait set are written in one
stream with no round trip each (20,000 exchange.declare take one send), then one
synchronous method proves the broker handled them all. Built on tests/malformed/rawamqp.py."""
import struct

from rawamqp import (BASIC_GET, BASIC_GET_EMPTY, BASIC_GET_OK, BASIC_PUBLISH, FRAME_HEADER,
                     QUEUE_DECLARE, QUEUE_DECLARE_OK, Connection, basic_get_args, basic_publish_args,
                     bits, body_frame, header_frame, method_frame, octet, short, shortstr, table, longstr)

EXCHANGE_DECLARE = (40, 10)
EXCHANGE_DELETE = (40, 20)
EXCHANGE_BIND = (40, 30)
EXCHANGE_UNBIND = (40, 40)
QUEUE_BIND = (50, 20)
QUEUE_DELETE = (50, 40)
QUEUE_DELETE_OK = (50, 41)
BASIC_CONSUME = (60, 20)
BASIC_DELIVER = (60, 60)
BASIC_REJECT = (60, 90)
CONFIRM_SELECT = (85, 10)


def exchange_declare(name, type_="fanout", durable=False, auto_delete=False, internal=False, arguments=None):
    return method_frame(1, EXCHANGE_DECLARE, short(0) + shortstr(name) + shortstr(type_) +
                        bits(False, durable, auto_delete, internal, True) + table(arguments or {}))


def exchange_bind(destination, source, key=""):
    return method_frame(1, EXCHANGE_BIND, short(0) + shortstr(destination) + shortstr(source) +
                        shortstr(key) + bits(True) + table({}))


def exchange_unbind(destination, source, key=""):
    return method_frame(1, EXCHANGE_UNBIND, short(0) + shortstr(destination) + shortstr(source) +
                        shortstr(key) + bits(True) + table({}))


def exchange_delete(name):
    return method_frame(1, EXCHANGE_DELETE, short(0) + shortstr(name) + bits(False, True))


def queue_declare(name, arguments=None, exclusive=False, auto_delete=False):
    return method_frame(1, QUEUE_DECLARE, short(0) + shortstr(name) +
                        bits(False, False, exclusive, auto_delete, True) + table(arguments or {}))


def queue_bind(queue, exchange, key=""):
    return method_frame(1, QUEUE_BIND, short(0) + shortstr(queue) + shortstr(exchange) + shortstr(key) +
                        bits(True) + table({}))


def queue_delete(name):
    return method_frame(1, QUEUE_DELETE, short(0) + shortstr(name) + bits(False, False, True))


def basic_consume(queue, tag="c", no_ack=False):
    return method_frame(1, BASIC_CONSUME, short(0) + shortstr(queue) + shortstr(tag) +
                        bits(False, no_ack, False, True) + table({}))


def basic_reject(tag, requeue=False):
    return method_frame(1, BASIC_REJECT, struct.pack(">Q", tag) + bits(requeue))


def publish(exchange, key, body, expiration=None, headers=None, message_id=None):
    """basic.publish + header (+ body) frames; properties: headers, expiration, message-id."""
    flags, props = 0, b""
    if headers is not None:
        flags |= 1 << 13
        props += table(headers)
    if expiration is not None:
        flags |= 1 << 8
        props += shortstr(expiration)
    if message_id is not None:
        flags |= 1 << 7
        props += shortstr(message_id)
    out = method_frame(1, BASIC_PUBLISH, basic_publish_args(exchange, key))
    out += header_frame(1, len(body), flags=flags, props=props)
    if body:
        out += body_frame(1, body)
    return out


def open_conn(d, timeout=30.0):
    c = Connection(d.host, d.port, timeout=timeout)
    c.handshake()
    c.open_channel(1)
    return c


def sync(c, timeout=60.0):
    """One round trip on channel 1 (a passive declare of the default exchange's queue list is
    not available, so a throwaway exclusive queue): everything sent before it was handled."""
    c.send(method_frame(1, QUEUE_DECLARE, short(0) + shortstr("") + bits(False, False, True, True, False) + table({})))
    while True:
        f = c.recv_frame(timeout)
        if f.method == QUEUE_DECLARE_OK:
            return
        if f.method in ((20, 40), (10, 50)):
            raise AssertionError(f"broker closed: {f!r}")


def get(c, queue, timeout=30.0):
    """basic.get (no-ack) on channel 1: the body, or None if the queue is empty."""
    c.send(method_frame(1, BASIC_GET, basic_get_args(queue)))
    while True:
        f = c.recv_frame(timeout)
        if f.method == BASIC_GET_EMPTY:
            return None
        if f.method == BASIC_GET_OK:
            h = c.recv_frame(timeout)
            assert h.type == FRAME_HEADER
            size = struct.unpack(">Q", h.payload[4:12])[0]
            body = b""
            while len(body) < size:
                body += c.recv_frame(timeout).payload
            return body
        if f.method in ((20, 40), (10, 50)):
            raise AssertionError(f"broker closed: {f!r}")
