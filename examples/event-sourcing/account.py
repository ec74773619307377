#!/usr/bin/python3
"""An account's balance rebuilt from its events: event sourcing on a Ferry (or RabbitMQ) stream.

Every change to an account is an event appended to the stream "account-events" (a queue with
x-queue-type stream); nothing is ever updated in place. The balance is not stored anywhere: it
is rebuilt by replaying the account's events from the start of the stream.

    account.py deposit  ACCOUNT AMOUNT     append a Deposited event (confirmed: it is on disk)
    account.py withdraw ACCOUNT AMOUNT     append a Withdrawn event, refused if it would overdraw
    account.py balance  ACCOUNT            replay the stream and print the balance
    account.py history  ACCOUNT            replay the stream and print every event of the account

--url amqp://... (or FERRY_URL) names the broker; default amqp://guest:guest@127.0.0.1:5672/.
Amounts are integers (cents). Events carry the account id as x-stream-filter-value, so other
readers (a per-account projection) can ask a broker with stream filtering (ferryd, RabbitMQ
3.13+) for one account's events only; this program reads the stream up to its newest event
and picks the account's events itself, which works on any broker with streams.
"""
import argparse
import json
import os
import sys
import time

import pika

STREAM = "account-events"


def connect(url):
    return pika.BlockingConnection(pika.URLParameters(url))


def declare(ch):
    ch.queue_declare(STREAM, durable=True, arguments={"x-queue-type": "stream"})


def last_offset(conn):
    """The offset of the newest event in the stream, or None if it is empty: a consumer
    attached at "last" gets exactly that event first."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    seen = []
    ch.basic_consume(STREAM, lambda c, m, p, b: seen.append(p.headers["x-stream-offset"]),
                     arguments={"x-stream-offset": "last"})
    deadline = time.monotonic() + 1.0
    while not seen and time.monotonic() < deadline:
        conn.process_data_events(0.05)
    ch.close()
    return seen[0] if seen else None


def replay(conn, account):
    """Yields the account's events, oldest first, up to the newest event in the stream now."""
    end = last_offset(conn)
    if end is None:
        return
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    pending = []
    state = {"done": False}

    def on(c, m, p, body):
        offset = p.headers["x-stream-offset"]
        if p.headers.get("x-stream-filter-value") == account:
            pending.append(json.loads(body))
        c.basic_ack(m.delivery_tag)
        if offset >= end:
            state["done"] = True

    # Every event from the first: the newest one (end) may belong to another account, so the
    # stream is read unfiltered up to it and the account's events are picked here.
    ch.basic_consume(STREAM, on, arguments={"x-stream-offset": "first"})
    while not state["done"] or pending:
        if not pending:
            conn.process_data_events(0.05)
        while pending:
            yield pending.pop(0)
    ch.close()


def balance_of(events):
    total = 0
    for e in events:
        if e["type"] == "Deposited":
            total += e["amount"]
        elif e["type"] == "Withdrawn":
            total -= e["amount"]
    return total


def append(conn, account, event):
    ch = conn.channel()
    ch.confirm_delivery()  # returns once the broker has the event on disk
    event = dict(event, account=account, at=time.time())
    ch.basic_publish("", STREAM, json.dumps(event).encode(),
                     pika.BasicProperties(headers={"x-stream-filter-value": account}, delivery_mode=2,
                                          content_type="application/json"))
    ch.close()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("FERRY_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    p.add_argument("command", choices=["deposit", "withdraw", "balance", "history"])
    p.add_argument("account")
    p.add_argument("amount", nargs="?", type=int)
    a = p.parse_args(argv)
    if a.command in ("deposit", "withdraw") and (a.amount is None or a.amount <= 0):
        p.error("deposit and withdraw need a positive integer AMOUNT")
    try:
        conn = connect(a.url)
    except pika.exceptions.AMQPConnectionError as e:
        print(f"cannot reach the broker at {a.url}: {e!r}", file=sys.stderr)
        return 3
    ch = conn.channel()
    declare(ch)
    if a.command == "deposit":
        append(conn, a.account, {"type": "Deposited", "amount": a.amount})
        print(f"deposited {a.amount} to {a.account}")
    elif a.command == "withdraw":
        # The decision is made on the state rebuilt from the events (no stored balance).
        current = balance_of(replay(conn, a.account))
        if a.amount > current:
            print(f"refused: {a.account} has {current}, cannot withdraw {a.amount}", file=sys.stderr)
            conn.close()
            return 1
        append(conn, a.account, {"type": "Withdrawn", "amount": a.amount})
        print(f"withdrew {a.amount} from {a.account}")
    elif a.command == "balance":
        print(balance_of(replay(conn, a.account)))
    else:
        for e in replay(conn, a.account):
            print(json.dumps({k: e[k] for k in ("type", "amount") if k in e}))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
