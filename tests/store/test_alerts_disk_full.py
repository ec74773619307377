"""alerts.json on a full disk (issue 11's alert definitions persist across restarts): a change
that cannot be saved is answered 500 naming the reason, not 204; the file on disk stays the last
complete set (written to a .tmp, synced, renamed, so a failed write leaves no half file and no
.tmp taking space); once space returns, the next change saves the whole set and a restart
brings every alert back."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "mgmt"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ferryd import free_port, wait_port  # noqa: E402
from mgmtlib import Api  # noqa: E402


def alert(n):
    return {"vhost": "/", "queue": f"^q{n}$", "metric": "messages", "op": ">", "threshold": n, "for_seconds": 1}


def fill(path):
    """Writes until the disk is full; returns the file to delete to free it."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return path


def test_alert_definitions_on_a_full_disk(small_disk, ferryd_factory):
    data = str(small_disk / "data")
    port = free_port()
    d = ferryd_factory("--http-port", str(port), data_dir=data)
    wait_port("127.0.0.1", port, 10, d.proc)
    api = Api("127.0.0.1", port)
    assert api.put("/api/ferry/alerts/first", alert(1))[0] in (201, 204)
    saved = open(os.path.join(data, "alerts.json")).read()

    filler = fill(str(small_disk / "filler"))
    status, body, _ = api.put("/api/ferry/alerts/second", alert(2))
    assert status == 500, (status, body)
    assert "not saved" in body["reason"] and "No space left on device" in body["reason"]
    assert open(os.path.join(data, "alerts.json")).read() == saved  # the last complete set
    assert not os.path.exists(os.path.join(data, "alerts.json.tmp"))
    # in effect meanwhile (as the answer says)
    names = sorted(a["name"] for a in api.get("/api/ferry/alerts")[1])
    assert names == ["first", "second"]

    os.unlink(filler)
    assert api.put("/api/ferry/alerts/third", alert(3))[0] in (201, 204)
    d.stop_and_check()
    d2 = ferryd_factory("--http-port", str(port), data_dir=data)
    wait_port("127.0.0.1", port, 10, d2.proc)
    names = sorted(a["name"] for a in Api("127.0.0.1", port).get("/api/ferry/alerts")[1])
    assert names == ["first", "second", "third"]
