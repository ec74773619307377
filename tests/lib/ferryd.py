"""Start and stop a real ferryd process for tests (no mocks: the real binary, real sockets)."""
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    """A TCP port free on loopback right now (the kernel picks it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host, port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} not listening after {timeout}s")


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")



def on_free_port(start):
    """start(port) with a port free_port() found; once more with another if it raises
    RuntimeError (another process bound the port before the server did). Returns (port,
    what start returned)."""
    for attempt in (1, 2):
        port = free_port()
        try:
            return port, start(port)
        except RuntimeError:
            if attempt == 2:
                raise

class ExternalBroker:
    """A broker someone else started (FERRY_TEST_AMQP_URL)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.url = f"amqp://guest:guest@{host}:{port}/"

    def running(self):
        return True


class Ferryd:
    """One ferryd process on a free loopback port; stderr goes to a log file in the data dir."""

    def __init__(self, data_dir=None, port=None, args=None, binary=None, env=None):
        self.binary = binary or os.environ.get("FERRYD") or os.path.join(ROOT, "build", "ferryd")
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="ferryd-")
        self.port = port or free_port()
        self.own_port = port is None  # chosen here: may be chosen again if taken (start)
        self.host = "127.0.0.1"
        self.args = list(args or [])
        self.env = env
        self.proc = None
        self.url = f"amqp://guest:guest@{self.host}:{self.port}/"
        self.log_path = os.path.join(os.path.dirname(self.data_dir.rstrip("/")) or ".",
                                     os.path.basename(self.data_dir.rstrip("/")) + ".log")

    def start(self, timeout=10.0):
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if self.env:
            env.update(self.env)
        first = self.proc is None
        for attempt in (1, 2):
            self.log = open(self.log_path, "ab")
            cmd = [self.binary, "--port", str(self.port), "--data-dir", self.data_dir,
                   "--http-port", "0"] + self.args
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
            try:
                wait_port(self.host, self.port, timeout, self.proc)
                return self
            except RuntimeError:
                # free_port() found the port free, but another process bound it before ferryd
                # did: on a first start (a restart keeps its port), once more on a new port.
                taken = f"cannot listen on 127.0.0.1 port {self.port}: Address already in use"
                if (not first or not self.own_port or attempt == 2 or self.proc.poll() is None
                        or taken not in self.log_text()):
                    raise
                self.log.close()
                self.port = free_port()
                self.url = f"amqp://guest:guest@{self.host}:{self.port}/"
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                raise AssertionError(f"ferryd did not exit within {timeout}s of SIGTERM")
        self.log.close()
        return self.proc.returncode

    def stop_and_check(self):
        """Stop, then assert a clean exit (0) and no sanitizer report in the log."""
        rc = self.stop()
        text = self.log_text()
        bad = [m for m in SANITIZER_MARKERS if m in text]
        assert not bad, f"sanitizer report in ferryd log {self.log_path}:\n{text[-4000:]}"
        assert rc == 0, f"ferryd exited {rc} on SIGTERM; log {self.log_path}:\n{text[-2000:]}"
