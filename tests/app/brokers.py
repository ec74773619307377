"""The brokers and databases issue 12's application-side tests run against.

The same test runs against three brokers (must-show 1):
  - "ferryd":   a private ferryd (tests/lib/ferryd.py; FERRYD picks the binary, e.g. the ASan build);
  - "rabbitmq": a single private Debian rabbitmq-server (tests/lib/rabbitmq.py);
  - "cluster":  three RabbitMQ nodes on loopback joined with `rabbitmqctl join_cluster`, each with
                its own node name, AMQP and distribution ports and mnesia directory, all with one
                Erlang cookie made here; queues the tests declare there are quorum queues
                (`Broker.queue_args`).
and two application databases:
  - SQLite files in the test's tmp dir;
  - a private PostgreSQL 15 (Debian's, /usr/lib/postgresql/15/bin): initdb into a temp data dir,
    started on a free loopback port with a private unix-socket dir, as the `postgres` user when
    the tests run as root (PostgreSQL refuses to run as root).

Everything here is started by PID and stopped by that PID (or its own process group).
`python3 tests/app/brokers.py cluster|rabbitmq|ferryd|postgres` starts one by hand and prints its URL.
"""
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from ferryd import Ferryd, free_port, wait_port  # noqa: E402
from rabbitmq import RabbitMQ, available as rabbit_available  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PG_BIN = "/usr/lib/postgresql/15/bin"
KINDS = ("ferryd", "rabbitmq", "cluster")


class Broker:
    """What a test needs to know about the broker under test.

    kind:  "ferryd" | "rabbitmq" | "cluster"
    url:   amqp://guest:guest@127.0.0.1:PORT/ of the node clients connect to (cluster: node 1)
    urls:  every node's URL (one entry but for the cluster)
    ferry: True when the broker is ferryd (x-retry-delays, x-deduplication-window exist)
    """

    def __init__(self, kind, urls, impl):
        self.kind = kind
        self.urls = list(urls)
        self.url = self.urls[0]
        self.impl = impl
        self.ferry = kind == "ferryd"
        self.host = "127.0.0.1"
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def queue_args(self, args=None):
        """Arguments for a durable queue a pattern test declares: on the cluster the queue is a
        quorum queue (replicated on the three nodes); elsewhere the arguments are unchanged."""
        a = dict(args or {})
        if self.kind == "cluster":
            a.setdefault("x-queue-type", "quorum")
        return a

    def __repr__(self):
        return f"<Broker {self.kind} {self.url}>"


class RabbitNode(RabbitMQ):
    """A RabbitMQ node that shares an Erlang cookie with its cluster peers.

    The cookie is written to the node's private HOME (where both the node and rabbitmqctl look
    for it) before anything starts, so peers can talk to each other and to the CLI."""

    def __init__(self, cookie, name, **kw):
        super().__init__(**kw)
        self.cookie = cookie
        self.node = f"{name}@localhost"

    def _env(self):
        env = super()._env()
        path = os.path.join(env["HOME"], ".erlang.cookie")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(self.cookie)
            os.chmod(path, 0o400)
        return env


class RabbitCluster:
    """Three RabbitMQ nodes on loopback, joined into one cluster (quorum queues span all three)."""

    def __init__(self, size=3):
        self.base = tempfile.mkdtemp(prefix="rabbit-cluster-")
        cookie = "FERRYTEST" + os.urandom(12).hex().upper()
        tag = f"ferryc{os.getpid()}x{free_port()}"
        self.nodes = [RabbitNode(cookie, f"{tag}n{i}", base=os.path.join(self.base, f"n{i}"))
                      for i in range(size)]
        self.started_in = None

    def start(self, timeout=90.0):
        t0 = time.time()
        # The nodes boot in parallel (each takes ~10 s of mostly Erlang startup), then nodes 2..n
        # join node 1 in parallel: stop_app, join_cluster, start_app (RabbitMQ's documented way).
        for n in self.nodes:
            os.makedirs(n.base, exist_ok=True)
        errors = []

        def boot(n):
            try:
                n.start(timeout)
            except Exception as e:  # reported below, after every thread is done
                errors.append(f"{n.node}: {e}")

        threads = [threading.Thread(target=boot, args=(n,)) for n in self.nodes]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if errors:
            errors.append(self._log_tails())
            self.stop()
            raise RuntimeError("cluster nodes did not start: " + "; ".join(errors))
        first = self.nodes[0].node

        def join(n):
            try:
                n.ctl("await_startup", timeout=timeout)
                n.ctl("stop_app")
                n.ctl("join_cluster", first)
                n.ctl("start_app", timeout=timeout)
            except Exception as e:
                errors.append(f"{n.node}: {e}")

        threads = [threading.Thread(target=join, args=(n,)) for n in self.nodes[1:]]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if errors:
            errors.append(self._log_tails())
            self.stop()
            raise RuntimeError("cluster join failed: " + "; ".join(errors))
        for n in self.nodes:
            wait_port(n.host, n.port, timeout, n.proc)
        running = self.running_nodes()
        if sorted(running) != sorted(n.node for n in self.nodes):
            self.stop()
            raise RuntimeError(f"cluster has running nodes {running}, expected all three")
        self.started_in = time.time() - t0
        return self

    def _log_tails(self, lines=15):
        """The last lines of each node's RabbitMQ log files (warnings and errors), for a failed start."""
        out = []
        for n in self.nodes:
            d = os.path.join(n.base, "log")
            for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                try:
                    with open(os.path.join(d, f), errors="replace") as fh:
                        tail = fh.read().splitlines()[-lines:]
                except OSError:
                    continue
                if tail:
                    out.append(f"{n.node} {f}:\n" + "\n".join(tail))
        return "\n".join(out) or "no node logs"

    def running_nodes(self):
        """The node names `rabbitmqctl cluster_status` reports as running (asked of node 1)."""
        import json
        out = self.nodes[0].ctl("cluster_status", "--formatter", "json")
        return json.loads(out)["running_nodes"]

    @property
    def urls(self):
        return [n.url for n in self.nodes]

    def stop(self):
        # The joined nodes first, node 1 (the one they joined) last: stopping the seed first
        # made mnesia on the others write MnesiaCore dumps.
        for n in reversed(self.nodes):
            if n.proc is not None:
                n.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def start_broker(kind, tmpdir):
    """Starts the broker of this kind; returns (Broker, stop function)."""
    if kind == "ferryd":
        d = Ferryd(data_dir=os.path.join(tmpdir, "ferryd-data"))
        d.start()
        return Broker("ferryd", [d.url], d), d.stop_and_check
    if not rabbit_available():
        raise RuntimeError("rabbitmq-server is not installed (scripts/install-deps.sh test installs it)")
    if kind == "rabbitmq":
        # One more try on a failed start: on the shared, loaded machine a node's start script
        # once exited (0) before listening, erroring every test of the session on that broker.
        for attempt in (1, 2):
            r = RabbitMQ()
            try:
                r.start()
                break
            except (RuntimeError, TimeoutError):
                if r.proc is not None:
                    r.stop()
                if attempt == 2:
                    raise
        return Broker("rabbitmq", [r.url], r), r.stop
    if kind == "cluster":
        # One more try with fresh nodes (new names, ports and directories): a clean-clone CI run
        # once saw node 2 die while booting ("rabbit_is_not_running" from await_startup), which
        # errored every cluster test of the session. The error of the first try is kept.
        try:
            c = RabbitCluster().start()
        except (RuntimeError, TimeoutError) as first:
            print(f"RabbitMQ cluster did not start ({first}); starting a fresh one", file=sys.stderr)
            c = RabbitCluster().start()
        return Broker("cluster", c.urls, c), c.stop
    raise ValueError(f"unknown broker kind {kind!r} (one of {', '.join(KINDS)})")


class Postgres:
    """A private PostgreSQL 15 server: its own data dir, loopback port and unix-socket dir.

    .url        postgresql://USER@127.0.0.1:PORT/postgres (trust authentication, loopback only)
    .dsn(db)    the URL of database `db`
    .create_db(name) -> URL of a new, empty database
    """

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="ferry-pg-")
        self.data = os.path.join(self.base, "data")
        self.sock = os.path.join(self.base, "sock")
        self.port = free_port()
        self.proc = None
        # PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user
        # (Debian's package creates it) and hand it the directories.
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = "postgres"
            pw = pwd.getpwnam(self.as_user)
            os.chmod(self.base, 0o755)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.user = self.as_user or pwd.getpwuid(os.geteuid()).pw_name
        self.url = self.dsn("postgres")
        self.log_path = os.path.join(self.base, "postgres.log")

    def dsn(self, db):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def _demote(self):
        """preexec_fn: the child becomes the `postgres` user (when we are root), so the PID we
        hold is the postmaster's own and stopping it by PID stops the server."""
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def start(self, timeout=60.0):
        r = subprocess.run([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", self.user,
                            "-E", "UTF8", "--no-sync"], capture_output=True, timeout=timeout,
                           preexec_fn=self._demote, cwd=self.base)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stdout.decode()} {r.stderr.decode()}")
        os.makedirs(self.sock, exist_ok=True)
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
        self.log = open(self.log_path, "ab")
        # fsync off: the tests crash relays and workers, never the database, and the machine is shared.
        self.proc = subprocess.Popen([f"{PG_BIN}/postgres", "-D", self.data, "-p", str(self.port),
                                               "-k", self.sock, "-c", "listen_addresses=127.0.0.1",
                                               "-c", "fsync=off", "-c", "synchronous_commit=off",
                                               "-c", "full_page_writes=off", "-c", "max_connections=200"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=self._demote, cwd=self.base)
        deadline = time.time() + timeout
        while True:
            r = subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                               capture_output=True)
            if r.returncode == 0:
                break
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"postgres did not start; log:\n{open(self.log_path).read()[-2000:]}")
            time.sleep(0.1)
        self._n = 0
        return self

    def sql(self, sql, db="postgres"):
        """Runs SQL through psycopg2 (autocommit); returns the rows of the last statement, if any."""
        import psycopg2
        c = psycopg2.connect(self.dsn(db))
        c.autocommit = True
        try:
            with c.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def create_db(self, prefix="t"):
        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        self.sql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT = PostgreSQL's "fast" shutdown; sent to the postmaster's own PID.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "cluster"
    tmp = tempfile.mkdtemp(prefix="ferry-app-")
    t0 = time.time()
    if what == "postgres":
        p = Postgres().start()
        print(p.url, f"(started in {time.time() - t0:.1f} s)", flush=True)
        stop = p.stop
    else:
        b, stop = start_broker(what, tmp)
        print(" ".join(b.urls), f"(started in {time.time() - t0:.1f} s)", flush=True)
    try:
        if os.environ.get("BROKERS_ONESHOT"):
            pass
        else:
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)
