#!/usr/bin/python3
"""Row 11 (issue 14): declares (or deletes) many queues as fast as the broker answers.

usage: queues.py HOST PORT N PREFIX declare|delete [--window W] [--first K] [--rss-pid PID]
Queues PREFIX000000 .. PREFIX(N-1), every other one durable (half durable, as row 11 asks).
Declares go out in pipelined windows of W (default 1,000) on one channel and each window's
declare-oks are read before the next is sent, so the figure is the broker's rate, not a
round trip per queue. --first K starts at queue K (to grow a set in stages). With
--rss-pid, the broker's RSS is sampled every 10,000 queues. Prints one JSON line:
{"op", "queues", "seconds", "per_s", "curve": [[queues done, seconds, rss KiB], ...]}.
Raw frames (tests/malformed/rawamqp.py): a client library's per-call overhead would
measure the client."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "malformed"))
import rawamqp as R  # noqa: E402

QUEUE_DECLARE_OK = (50, 11)
QUEUE_DELETE_OK = (50, 41)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    args = sys.argv[1:]
    opts = {"--window": 1000, "--first": 0, "--rss-pid": None}
    for flag in list(opts):
        if flag in args:
            i = args.index(flag)
            opts[flag] = int(args[i + 1])
            del args[i:i + 2]
    window, first, pid = opts["--window"], opts["--first"], opts["--rss-pid"]
    if len(args) != 5 or args[4] not in ("declare", "delete"):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, n, prefix, op = args[0], int(args[1]), int(args[2]), args[3], args[4]
    c = R.Connection(host, port, timeout=30)
    c.handshake()
    c.open_channel(1)
    want = QUEUE_DECLARE_OK if op == "declare" else QUEUE_DELETE_OK
    t0 = time.monotonic()
    curve = []
    for start in range(first, first + n, window):
        frames = []
        for i in range(start, min(first + n, start + window)):
            name = f"{prefix}{i:06d}"
            if op == "declare":
                frames.append(R.method_frame(1, R.QUEUE_DECLARE, R.queue_declare_args(name, durable=i % 2 == 0)))
            else:
                frames.append(R.method_frame(1, R.QUEUE_DELETE, R.queue_delete_args(name)))
        c.send(b"".join(frames))
        for _ in frames:
            f = c.recv_frame(timeout=120)
            if f.method != want:
                print(json.dumps({"op": op, "error": f"expected {want}, got {f!r}"}))
                return 1
        done = min(first + n, start + window) - first
        if pid and (done % 10000 == 0 or done == n):
            curve.append([first + done, round(time.monotonic() - t0, 3), rss_kib(pid)])
    secs = time.monotonic() - t0
    c.close()
    print(json.dumps({"op": op, "queues": n, "seconds": round(secs, 3), "per_s": round(n / secs, 1), "curve": curve}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
