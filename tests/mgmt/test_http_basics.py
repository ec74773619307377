"""The management HTTP server (issue 11): basic auth with RabbitMQ's tag rules, RabbitMQ's
JSON error bodies and codes, the dashboard's files, and hostile HTTP input. Run against a
private ferryd (ASan build in `make test`), which must exit cleanly afterwards."""
import json
import socket
import subprocess

import pika
import pytest

from mgmtlib import Api
from ferryd import free_port, wait_port

NOT_FOUND = {"error": "Object Not Found", "reason": "Not Found"}


def test_overview_answers_guest_from_loopback_with_rabbitmq_fields(mgmt):
    status, body, headers = mgmt.api.get("/api/overview")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    for k in ("management_version", "rabbitmq_version", "message_stats", "queue_totals", "object_totals",
              "listeners", "node", "exchange_types"):
        assert k in body, k
    assert body["object_totals"]["queues"] == 0
    assert any(l["protocol"] == "amqp" and l["port"] == mgmt.broker.port for l in body["listeners"])


def test_wrong_password_is_401_with_rabbitmqs_body_and_challenge(mgmt):
    status, body, headers = mgmt.api.get("/api/overview", auth=("guest", "nope"))
    assert status == 401
    assert body == {"error": "not_authorized", "reason": "Login failed"}
    assert headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    status, body, headers = mgmt.api.get("/api/overview", auth=(None, None))
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    status, body, _ = mgmt.api.get("/api/overview", auth=("nobody", "x"))
    assert status == 401 and body["reason"] == "Login failed"


def test_user_without_management_tag_is_refused_and_monitoring_may_read(mgmt):
    api = mgmt.api
    assert api.put("/api/users/plain", {"password": "p1", "tags": ""})[0] == 201
    status, body, _ = api.get("/api/overview", auth=("plain", "p1"))
    assert status == 401 and body == {"error": "not_authorised", "reason": "Not management user"}
    assert api.put("/api/users/mon", {"password": "p2", "tags": "monitoring"})[0] == 201
    assert api.get("/api/overview", auth=("mon", "p2"))[0] == 200
    assert api.get("/api/queues", auth=("mon", "p2"))[0] == 200
    # monitoring is not administrator: the user list is refused
    status, body, _ = api.get("/api/users", auth=("mon", "p2"))
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Not administrator user"})
    # the password is checked off the loop (PBKDF2): a wrong one still fails
    assert api.get("/api/overview", auth=("mon", "wrong"))[0] == 401


def test_guest_from_a_non_loopback_address_is_refused(ferryd_factory):
    addrs = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
             if "." in a and not a.startswith("127.")]
    if not addrs:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    ip = addrs[0]
    port = free_port()
    d = ferryd_factory("--http-port", str(port), "--bind", "127.0.0.1", "--bind", ip)
    wait_port("127.0.0.1", port, 10, d.proc)
    status, body, _ = Api(ip, port).get("/api/overview")
    assert status == 401
    assert body == {"error": "not_authorised", "reason": "User can only log in via localhost"}
    assert Api("127.0.0.1", port).get("/api/overview")[0] == 200


def test_unknown_objects_are_404_with_rabbitmqs_body(mgmt):
    api = mgmt.api
    for path in ("/api/queues/nope", "/api/queues/%2F/nope", "/api/exchanges/nope", "/api/vhosts/nope",
                 "/api/nothing-here", "/api/queues/%2F/nope/bindings", "/api/exchanges/%2F/nope"):
        status, body, _ = api.get(path)
        assert (status, body) == (404, NOT_FOUND), path


def test_wrong_methods_are_405(mgmt):
    api = mgmt.api
    assert api.call("PATCH", "/api/queues")[0] == 405
    assert api.post("/api/overview")[0] == 405
    assert api.delete("/api/queues")[0] == 405
    assert api.call("PUT", "/metrics", raw=b"")[0] == 405


def test_bad_json_is_400_and_the_broker_goes_on(mgmt):
    api = mgmt.api
    for raw in (b"{bad", b"[1,2]", b"\xff\xfe", b'"str"', b"null"):
        status, body, _ = api.call("PUT", "/api/queues/%2F/q", raw=raw)
        assert status == 400, raw
        assert body["error"] == "bad_request"
    # wrong types inside good JSON
    status, body, _ = api.put("/api/queues/%2F/q", {"arguments": "nope"})
    assert status == 400
    status, body, _ = api.post("/api/queues/%2F/absent/get", {"count": 1, "ackmode": "ack_requeue_true"})
    assert status == 404
    assert api.get("/api/overview")[0] == 200


def test_huge_body_is_413(mgmt):
    s = socket.create_connection(("127.0.0.1", mgmt.http_port))
    s.sendall(b"PUT /api/queues/%2F/big HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
              b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n")
    s.settimeout(10)
    answer = s.recv(4096).decode(errors="replace")
    s.close()
    assert answer.startswith("HTTP/1.1 413"), answer
    # a body that grows past the limit without announcing its length (chunked)
    s = socket.create_connection(("127.0.0.1", mgmt.http_port))
    s.sendall(b"PUT /api/queues/%2F/big HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 1000000
    s.settimeout(10)
    answer = b""
    try:
        for _ in range(25):
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        answer = s.recv(4096)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert mgmt.api.get("/api/queues/%2F/big")[0] == 404
    assert mgmt.api.get("/api/overview")[0] == 200


def test_malformed_urls_and_headers_do_not_hurt(mgmt):
    for req in (b"GET /api/queues/%ZZ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n",
                b"GET /api/queues/%2 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n",
                b"GET /api/" + b"a/" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /api/overview HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!!\r\n\r\n",
                b"\x00\x01\x02garbage\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", mgmt.http_port))
        s.settimeout(10)
        s.sendall(req)
        try:
            answer = s.recv(200)
        except OSError:
            answer = b""
        s.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), (req[:40], answer)
    assert mgmt.api.get("/api/overview")[0] == 200


def test_dashboard_files_are_served_from_the_binary(mgmt):
    status, body, headers = mgmt.api.get("/", auth=(None, None))
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "<html" in body.lower()
    status, body2, _ = mgmt.api.get("/index.html", auth=(None, None))
    assert status == 200 and body2 == body
    assert mgmt.api.get("/no-such-file.js", auth=(None, None))[0] == 404
    assert mgmt.api.get("/../Makefile", auth=(None, None))[0] == 404


def test_http_port_zero_turns_the_server_off(ferryd_factory):
    d = ferryd_factory()  # the fixture passes --http-port 0
    assert "listening for HTTP" not in d.log_text()


def test_a_busy_http_port_refuses_to_start(tmp_path):
    import os
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    binary = os.environ.get("FERRYD") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "ferryd")
    r = subprocess.run([binary, "--port", str(free_port()), "--data-dir", str(tmp_path / "busy"), "--http-port",
                        str(port)], capture_output=True, text=True, timeout=30)
    s.close()
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1 port %d for HTTP" % port in r.stderr
    assert "ERROR: AddressSanitizer" not in r.stderr and "LeakSanitizer" not in r.stderr


def test_answers_are_gzipped_only_for_clients_that_take_gzip(mgmt):
    """A client sending Accept-Encoding with gzip (browsers, Prometheus, `curl --compressed`) gets
    a large answer gzipped — the queue list (the shared text of the second) and any other JSON
    or /metrics alike — and the same content once unzipped. No Accept-Encoding (rabbitmqadmin),
    identity, deflate only or gzip;q=0 (even beside "*") gets the plain text; a small answer is never
    gzipped."""
    import base64
    import gzip
    import http.client
    import urllib.parse

    c = pika.BlockingConnection(pika.URLParameters(mgmt.broker.url))
    ch = c.channel()
    for i in range(300):
        ch.queue_declare(f"gz-{i:03d}")
    c.close()
    u = urllib.parse.urlparse(mgmt.api.base)
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def fetch(path, ae):
        hc = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        headers = {"Authorization": auth}
        if ae is not None:
            headers["Accept-Encoding"] = ae
        hc.request("GET", path, headers=headers)
        r = hc.getresponse()
        body = r.read()
        hc.close()
        return r.status, r.getheader("Content-Encoding"), body

    def content(path, body):
        if path == "/metrics":  # values move between calls; the metric families do not
            return sorted(ln for ln in body.decode().splitlines() if ln.startswith("# TYPE"))
        j = json.loads(body)
        if path.startswith("/api/queues"):  # (idle_since of a queue never used is "now")
            items = j["items"] if isinstance(j, dict) else j
            return [(q["name"], q["messages"], q["durable"]) for q in items]
        return j

    for path in ("/api/queues", "/api/queues?page=2&page_size=100&sort=name", "/api/definitions", "/metrics"):
        st, enc, plain = fetch(path, None)
        assert (st, enc) == (200, None), path
        want = content(path, plain)
        for ae in ("gzip", "deflate, gzip;q=0.5", "x-gzip", "*", "br, GZIP"):
            st, enc, z = fetch(path, ae)
            assert (st, enc) == (200, "gzip"), (path, ae)
            assert len(z) < len(plain) / 4, (path, ae, len(z), len(plain))
            assert content(path, gzip.decompress(z)) == want, (path, ae)
        for ae in ("identity", "gzip;q=0", "gzip; q=0.0, identity", "deflate", "gzip;q=0, *", "*;q=0"):
            st, enc, body = fetch(path, ae)
            assert (st, enc) == (200, None), (path, ae)
            assert content(path, body) == want, (path, ae)
    st, enc, body = fetch("/api/whoami", "gzip")
    assert (st, enc) == (200, None) and json.loads(body)["name"] == "guest"


def test_the_http_thread_runs_below_the_loop_and_never_preempts_it(mgmt):
    """After serving a request, the HTTP thread (libmicrohttpd's, named MHD-…) runs at nice 10
    and as SCHED_BATCH (a woken SCHED_BATCH thread does not preempt the running one: woken by the
    loop's answer, a normal thread took the loop's CPU for the milliseconds of writing a list);
    the loop thread stays a normal thread at nice 0."""
    import os

    assert mgmt.api.get("/api/overview")[0] == 200
    pid = mgmt.broker.proc.pid
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd (state) on
        nice, policy = int(fields[16]), int(fields[38])  # stat fields 19 and 41
        threads.setdefault(comm, []).append((int(tid), nice, policy))
    served = [t for name, ts in threads.items() if name.startswith("MHD") for t in ts if t[2] != 0]
    assert served, threads
    assert all((nice, policy) == (10, 3) for _, nice, policy in served), served  # 3: SCHED_BATCH
    main = [t for t in threads.get("ferryd", []) if t[0] == pid]
    assert main and main[0][1:] == (0, 0), threads
