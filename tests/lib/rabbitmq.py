"""A private RabbitMQ (Debian's rabbitmq-server) for differential tests and benchmarks.

Each instance gets its own node name, ports, data and log directories under a temp dir, so
runs never collide with each other or with a system RabbitMQ. Listens on loopback only.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from ferryd import free_port, wait_port

RABBIT_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def available():
    return os.path.exists(RABBIT_BIN)


class RabbitMQ:
    def __init__(self, plugins=(), base=None, port=None, extra_conf="", tls=None):
        """tls: {"cacert": ..., "cert": ..., "key": ...} adds an amqps listener (.tls_port,
        .tls_url) with that certificate; client certificates are not asked for."""
        self.base = base or tempfile.mkdtemp(prefix="rabbit-")
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.tls_url = f"amqps://guest:guest@127.0.0.1:{self.tls_port}/" if tls else None
        self.dist_port = free_port()
        self.host = "127.0.0.1"
        self.url = f"amqp://guest:guest@{self.host}:{self.port}/"
        self.node = f"ferrytest{os.getpid()}x{self.port}@localhost"
        self.plugins = list(plugins)
        self.extra_conf = extra_conf
        self.proc = None

    def _env(self):
        env = dict(os.environ)
        home = os.path.join(self.base, "home")
        os.makedirs(home, exist_ok=True)
        conf = os.path.join(self.base, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
                    "loopback_users.guest = true\n"
                    "log.console = false\n"
                    "log.file.level = warning\n" + self.extra_conf)
            if self.tls:
                f.write(f"\nlisteners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                        f"ssl_options.cacertfile = {self.tls['cacert']}\n"
                        f"ssl_options.certfile = {self.tls['cert']}\n"
                        f"ssl_options.keyfile = {self.tls['key']}\n"
                        "ssl_options.verify = verify_none\n"
                        "ssl_options.fail_if_no_peer_cert = false\n")
        with open(os.path.join(self.base, "enabled_plugins"), "w") as f:
            f.write("[" + ",".join(self.plugins) + "].\n")
        env.update({
            "HOME": home,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": conf,
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.base, "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.base, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.base, "log"),
            "RABBITMQ_PID_FILE": os.path.join(self.base, "rabbit.pid"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.base, "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def start(self, timeout=90.0):
        env = self._env()
        self.log = open(os.path.join(self.base, "stdout.log"), "wb")
        # cwd: the node's own directory, so an Erlang crash dump (erl_crash.dump, MnesiaCore.*)
        # lands there and is removed with it, not in the directory the tests run from
        self.proc = subprocess.Popen([RABBIT_BIN], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=self.base)
        wait_port(self.host, self.port, timeout, self.proc)
        if self.tls_port:
            wait_port(self.host, self.tls_port, timeout, self.proc)
        return self

    def ctl(self, *args, timeout=60):
        """Runs rabbitmqctl against this node; returns its stdout."""
        r = subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node] + list(args), env=self._env(),
                              capture_output=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args}: {r.stdout.decode()} {r.stderr.decode()}")
        return r.stdout.decode()

    def pid(self):
        """The beam process's pid (for RSS measurements)."""
        try:
            with open(os.path.join(self.base, "rabbit.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    # Handy for development: python3 tests/lib/rabbitmq.py [plugin ...] -> prints the URL, runs until ^C
    import sys
    port = int(os.environ.get("RABBIT_PORT", "0")) or None
    r = RabbitMQ(plugins=sys.argv[1:], port=port).start()
    print(r.url, flush=True)
    try:
        while r.proc.poll() is None:
            time.sleep(1)
    finally:
        r.stop()
