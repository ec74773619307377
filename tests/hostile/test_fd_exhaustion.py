"""Running out of file descriptors: more connections than ferryd may open must not spin its
loop (accept4 failing with EMFILE on a level-triggered listener), and ferryd serves again
once descriptors are free (issue 8 item 9)."""
import os
import resource
import socket
import time

import pytest
import rawamqp as R
from rawclient import open_conn

pytestmark = pytest.mark.ferry_only


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_does_not_spin_and_recovers(ferryd_factory):
    d = ferryd_factory()
    pid = d.proc.pid
    base = len(os.listdir(f"/proc/{pid}/fd"))
    limit = base + 8
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    socks = []
    for _ in range(40):  # far more than the 8 descriptors left
        s = socket.create_connection((d.host, d.port), timeout=5)
        socks.append(s)
    time.sleep(0.5)
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(3)
    used = cpu_seconds(pid) - c0
    wall = time.monotonic() - t0
    print(f"cpu {used:.3f} s in {wall:.2f} s")
    assert used < 0.1 * wall, f"ferryd used {used:.2f} s of CPU in {wall:.2f} s while out of descriptors"
    for s in socks:
        s.close()
    # Served again: the waiting connections are accepted, found closed and freed, and a new
    # client gets through the whole handshake.
    deadline = time.monotonic() + 20
    while True:
        try:
            c = open_conn(d.host, d.port, timeout=5)
            break
        except (OSError, R.Closed, TimeoutError, AssertionError):
            assert time.monotonic() < deadline, "ferryd does not serve again after descriptors were freed"
            time.sleep(0.5)
    c.send(R.method_frame(1, R.QUEUE_DECLARE, R.queue_declare_args("fd-after")))
    assert c.expect(R.QUEUE_DECLARE_OK, 10).args["queue"] == "fd-after"
    c.close()
