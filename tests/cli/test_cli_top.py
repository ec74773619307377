"""`ferry top`: plain snapshots when stdout is not a terminal, JSON lines with --json, and on
a terminal (a pty here) a full-screen view that q and Ctrl-C end cleanly, giving the
terminal back (alternate screen left, cursor shown)."""
import json
import os
import pty
import select
import signal
import subprocess
import time

from clilib import FERRY, ferry


def test_snapshots_when_stdout_is_not_a_tty(world):
    r = ferry("top", "--count", "2", "--interval", "200ms", url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    snaps = r.stdout.split("ferry top  ")
    assert len(snaps) == 3, r.stdout  # "" before the first, then two snapshots
    for s in snaps[1:]:
        assert "\x1b" not in s  # no terminal escapes in a pipe
        assert "messages" in s and "connections" in s and "memory" in s and "alarms:" in s
        lines = [l.split() for l in s.splitlines()]
        row = [l for l in lines if len(l) > 2 and l[1] == world.depth]
        assert row and row[0][2:6] == ["3", "2", "1", "1"], s


def test_queues_are_sorted_by_backlog(world):
    r = ferry("top", "--count", "1", url=world.b.http_url)
    names = [l.split()[1] for l in r.stdout.splitlines() if len(l.split()) > 2 and l.split()[1].startswith(world.prefix)]
    assert names.index(world.big) < names.index(world.small)
    r = ferry("top", "--count", "1", "--sort", "name", url=world.b.http_url)
    names = [l.split()[1] for l in r.stdout.splitlines() if len(l.split()) > 2 and l.split()[1].startswith(world.prefix)]
    assert names == sorted(names)


def test_json_lines(world):
    r = ferry("top", "--count", "2", "--interval", "100ms", "--json", url=world.b.http_url)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(lines) == 2
    for snap in lines:
        assert {"time", "overview", "nodes", "queues", "alerts"} <= set(snap)
        assert any(q["name"] == world.depth and q["messages"] == 3 for q in snap["queues"])
        assert "queue_totals" in snap["overview"]
    if world.b.kind == "rabbitmq":
        assert lines[0]["alerts"] is None  # RabbitMQ has no alerts API
    else:
        assert isinstance(lines[0]["alerts"], list)


def run_in_pty(args):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(FERRY, [FERRY] + args)
    return pid, fd


def read_until(fd, needle, timeout=10):
    out = b""
    deadline = time.time() + timeout
    while needle not in out and time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def wait_exit(pid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        p, status = os.waitpid(pid, os.WNOHANG)
        if p == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("ferry top did not exit")


def test_tty_q_quits_and_restores_the_terminal(world):
    pid, fd = run_in_pty(["top", "--interval", "200ms", "--url", world.b.http_url])
    try:
        out = read_until(fd, world.depth.encode())
        assert b"\x1b[?1049h" in out and world.depth.encode() in out  # alternate screen, then the view
        assert b"q quits" in out
        os.write(fd, b"q")
        out += read_until(fd, b"\x1b[?1049l")
        assert wait_exit(pid) == 0
        assert b"\x1b[?25h\x1b[?1049l" in out  # cursor back, main screen back
    finally:
        os.close(fd)


def test_tty_ctrl_c_quits_cleanly(world):
    pid, fd = run_in_pty(["top", "--interval", "5s", "--url", world.b.http_url])
    try:
        read_until(fd, world.depth.encode())
        os.kill(pid, signal.SIGINT)
        out = read_until(fd, b"\x1b[?1049l")
        assert wait_exit(pid) == 0
        assert b"\x1b[?1049l" in out
    finally:
        os.close(fd)


def test_tty_s_changes_the_sort(world):
    pid, fd = run_in_pty(["top", "--interval", "5s", "--url", world.b.http_url])
    try:
        assert b"sort: messages" in read_until(fd, b"sort: messages")
        os.write(fd, b"s")
        assert b"sort: unacked" in read_until(fd, b"sort: unacked")
        os.write(fd, b"q")
        assert wait_exit(pid) == 0
    finally:
        os.close(fd)


def test_a_broker_that_goes_away_is_retried_not_fatal(ferryd_factory):
    """After a first good refresh, top keeps going when the broker stops answering (it says
    so on stderr) and still exits 0 on Ctrl-C."""
    from clilib import free_port, wait_port
    http_port = free_port()
    d = ferryd_factory("--http-port", str(http_port))
    wait_port("127.0.0.1", http_port, 10, d.proc)
    p = subprocess.Popen([FERRY, "top", "--interval", "200ms", "--url", f"http://guest:guest@127.0.0.1:{http_port}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("ferry top  ")
        d.stop_and_check()
        line = p.stderr.readline()
        assert "cannot reach the broker" in line and "retrying" in line, line
        assert p.poll() is None  # still running
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
