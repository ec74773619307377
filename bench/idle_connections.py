#!/usr/bin/python3
"""Opens N idle AMQP 0-9-1 connections with one channel each and holds them (bench row 8).

Usage: idle_connections.py HOST PORT N
Prints "ready N" once every connection has its channel open (or "failed: why" and exits 1),
then holds them until stdin closes or SIGTERM, and closes them cleanly.

Heartbeats are declined (tune-ok heartbeat 0) so the broker keeps them without traffic, as
it would keep a fleet of quiet clients. asyncio keeps this to one process with one socket
per connection; raw frames (no client library) keep the client's own cost out of the way.
"""
import asyncio
import os
import resource
import signal
import struct
import sys

FRAME_END = b"\xce"


def frame(ftype, channel, payload):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + FRAME_END


def method(channel, cls, meth, args=b""):
    return frame(1, channel, struct.pack(">HH", cls, meth) + args)


def shortstr(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


async def read_method(reader):
    """Next method frame as (class, method, args); skips heartbeats."""
    while True:
        hdr = await reader.readexactly(7)
        ftype, channel, size = struct.unpack(">BHI", hdr)
        payload = await reader.readexactly(size + 1)
        if ftype != 1:
            continue
        cls, meth = struct.unpack(">HH", payload[:4])
        if (cls, meth) == (10, 50):
            code = struct.unpack(">H", payload[4:6])[0]
            text = payload[7:7 + payload[6]].decode(errors="replace")
            raise ConnectionError(f"connection.close {code} {text}")
        return cls, meth, payload[4:-1]


async def open_one(host, port, user=b"guest", password=b"guest"):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"AMQP\x00\x00\x09\x01")
    await read_method(reader)  # connection.start
    props = shortstr("product") + b"S" + longstr(b"ferry bench idle connection")
    writer.write(method(0, 10, 11, longstr(props) + shortstr("PLAIN") +
                        longstr(b"\0" + user + b"\0" + password) + shortstr("en_US")))
    cls, meth, args = await read_method(reader)
    if (cls, meth) != (10, 30):
        raise ConnectionError(f"expected connection.tune, got {cls}.{meth}")
    channel_max, frame_max, _hb = struct.unpack(">HIH", args[:8])
    writer.write(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    writer.write(method(0, 10, 40, shortstr("/") + shortstr("") + b"\0"))
    await read_method(reader)  # connection.open-ok
    writer.write(method(1, 20, 10, shortstr("")))
    cls, meth, _ = await read_method(reader)
    if (cls, meth) != (20, 11):
        raise ConnectionError(f"expected channel.open-ok, got {cls}.{meth}")
    return reader, writer


async def close_one(reader, writer):
    try:
        writer.write(method(0, 10, 50, struct.pack(">H", 200) + shortstr("bye") + struct.pack(">HH", 0, 0)))
        await asyncio.wait_for(reader.read(64), 2)
    except Exception:
        pass
    writer.close()


async def main(host, port, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    sem = asyncio.Semaphore(200)  # connection attempts in flight: a burst, not a SYN flood

    async def one():
        async with sem:
            return await open_one(host, port)

    try:
        conns = await asyncio.gather(*(one() for _ in range(n)))
    except Exception as e:  # noqa: BLE001 - report whatever broke, then give up
        print(f"failed: {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"ready {len(conns)}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    await done.wait()
    await asyncio.gather(*(close_one(r, w) for r, w in conns))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
