"""--log-format json (issue 11): every log line is one JSON object with time, level and msg;
a line about one message carries its correlation id."""
import json
import time

import pika


def test_every_line_is_json_and_message_lines_carry_the_correlation_id(ferryd_factory):
    d = ferryd_factory("--log-format", "json", "--log-level", "debug")
    c = pika.BlockingConnection(pika.URLParameters(d.url))
    ch = c.channel()
    ch.queue_declare("src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    ch.queue_declare("dlq")
    ch.basic_publish("", "src", b"x", pika.BasicProperties(correlation_id="order-4711"))
    m = ch.basic_get("src")
    ch.basic_reject(m[0].delivery_tag, requeue=False)
    ch.basic_publish("", "src", b"y")  # no correlation id
    m = ch.basic_get("src")
    ch.basic_reject(m[0].delivery_tag, requeue=False)
    c.close()
    time.sleep(0.3)
    lines = [json.loads(l) for l in d.log_text().splitlines() if l.strip()]
    assert lines and all({"time", "level", "msg"} <= set(l) for l in lines)
    assert all(l["time"].endswith("Z") and l["level"] in ("debug", "info", "warning", "error") for l in lines)
    dead = [l for l in lines if l["msg"].startswith("message dead-lettered from queue 'src'")]
    assert len(dead) == 2
    assert dead[0]["correlation_id"] == "order-4711"
    assert "correlation_id" not in dead[1]


def test_text_format_stays_the_default(ferryd_factory):
    d = ferryd_factory()
    first = d.log_text().splitlines()[0]
    assert not first.startswith("{") and "[info]" in first


def test_a_bad_log_format_is_refused(tmp_path):
    import os
    import subprocess
    binary = os.environ.get("FERRYD") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "ferryd")
    r = subprocess.run([binary, "--log-format", "xml", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "log-format" in r.stderr
