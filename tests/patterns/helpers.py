"""Small helpers shared by the pattern tests."""
import time


def drain(conn, ch, queue, n, timeout=5.0, auto_ack=True):
    """Consumes until n messages arrived (or timeout); returns [(method, props, body, t)]."""
    got = []

    def on(c, m, p, b):
        got.append((m, p, b, time.time()))

    tag = ch.basic_consume(queue, on, auto_ack=auto_ack)
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    ch.basic_cancel(tag)
    return got


def get_all(ch, queue):
    out = []
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((m, p, b))


def wait_count(ch, queue, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        c = ch.queue_declare(queue, passive=True).method.message_count
        if c == n or time.monotonic() > deadline:
            return c
        time.sleep(0.02)


def crash(conn):
    """Drops a pika BlockingConnection's socket without any AMQP goodbye: what the broker
    sees when a consumer process dies."""
    import socket
    transport = conn._impl._transport
    transport._sock.shutdown(socket.SHUT_RDWR)
