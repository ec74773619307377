"""The CLI against a broker that answers badly: a stub HTTP server (Python's http.server on a
free loopback port) returning what a broken or hostile server might. Every case must end
with a clear message and exit 1 (never a crash, a hang or a traceback-like dump), or, for
wrong-typed fields in an otherwise valid list, a table with "-" in the unknown cells."""
import http.server
import json
import threading

import pytest

from clilib import ferry, free_port

REPLIES = {
    "/api/queues": (200, "application/json", '[{"name": 5, "vhost": null, "messages": "lots", '
                                             '"message_stats": {"publish_details": {"rate": "fast"}}}, 7, null]'),
    "/api/exchanges": (200, "application/json", "this is not JSON"),
    "/api/connections": (200, "application/json", '{"items": []}'),
    "/api/overview": (500, "text/html", "<html><body>Internal error</body></html>"),
    "/api/definitions/deep": (200, "application/json", "[" * 100000 + "]" * 100000),
    "/api/definitions": (200, "application/json", '["not", "an", "object"]'),
    "/api/queues/%2F/q/get": (200, "application/json", '{"not": "a list"}'),
}


class Stub(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, ctype, body = REPLIES.get(self.path, (404, "application/json",
                                                      '{"error":"Object Not Found","reason":"Not Found"}'))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def stub():
    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://guest:guest@127.0.0.1:{port}"
    srv.shutdown()
    srv.server_close()


def test_wrong_typed_fields_print_as_dashes(stub):
    r = ferry("queues", url=stub)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["vhost", "name", "type", "messages"]
    assert all(set(l.split()[3:8]) <= {"-", "0"} for l in lines[1:]), r.stdout


@pytest.mark.parametrize("args,needle", [
    (["exchanges"], "not JSON"),
    (["connections"], "not a JSON list"),
    (["get", "q"], "not a JSON list"),
    (["definitions", "export"], "not a JSON object"),
    (["top", "--count", "1"], "500"),
])
def test_bad_replies_exit_1_with_a_message(stub, args, needle):
    r = ferry(*args, url=stub)
    assert r.returncode == 1, (args, r.stdout, r.stderr)
    assert needle in r.stderr, (args, r.stderr)
    assert len(r.stderr) < 2000


def test_json_nested_too_deep_is_refused_not_a_crash(stub):
    # 100,000 nested lists: beyond jansson's depth limit (2,048)
    r = ferry("definitions", "export", "--vhost", "deep", url=stub)
    assert r.returncode == 1, (r.stdout[:200], r.stderr)
    assert "not JSON" in r.stderr


def test_the_alerts_and_dlq_commands_on_a_broker_without_them(stub):
    r = ferry("alerts", url=stub)
    assert r.returncode == 1 and "no alerts API" in r.stderr
    r = ferry("dlq", "peek", "q", url=stub)
    assert r.returncode == 1 and "404" in r.stderr
