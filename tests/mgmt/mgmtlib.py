"""The management API tests' HTTP client (urllib: no third-party HTTP library needed). A
module of its own, with a name no other test directory uses, so that the tests import it
the same way whichever directories pytest collects together."""
import base64
import json
import urllib.error
import urllib.request


class Api:
    """HTTP calls against one management port; answers are (status, parsed JSON or text)."""

    def __init__(self, host, port, user="guest", password="guest"):
        self.base = f"http://{host}:{port}"
        self.auth = (user, password)

    def call(self, method, path, body=None, auth=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        user, pw = auth if auth is not None else self.auth
        if user is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, _parse(r.read(), r.headers), r.headers
        except urllib.error.HTTPError as e:
            return e.code, _parse(e.read(), e.headers), e.headers

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body if body is not None else {}, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body if body is not None else {}, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


def _parse(data, headers):
    ctype = headers.get("Content-Type", "")
    if "json" in ctype and data:
        return json.loads(data)
    return data.decode(errors="replace")
