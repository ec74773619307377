#!/usr/bin/python3
"""The CMD of the `ferry worker` tests: appends one JSON line about its run to LOG (time, the
FERRY_* environment, the body read from stdin), then behaves as MODE says:
  ok | exit:N | kill9 | sleep:SECONDS (then exit 0) | echo (stdout = body upper-cased) |
  publish:QUEUE (runs `ferry publish --event` to QUEUE, passing the job's ids on) |
  exit:N@ATTEMPT... (exit N on the listed attempts, 0 otherwise)"""
import json
import os
import subprocess
import sys
import time

log, mode = sys.argv[1], sys.argv[2]
body = sys.stdin.buffer.read()
rec = {"t": time.time(), "pid": os.getpid(), "mode": mode, "body": body.decode(errors="replace")}
for k in ("FERRY_MESSAGE_ID", "FERRY_CORRELATION_ID", "FERRY_ROUTING_KEY", "FERRY_ATTEMPT", "FERRY_HEADERS"):
    rec[k] = os.environ.get(k)
with open(log, "a") as f:
    f.write(json.dumps(rec) + "\n")
    f.flush()
if mode == "ok":
    sys.exit(0)
if mode.startswith("exit:"):
    spec = mode[5:]
    if "@" in spec:
        code, attempts = spec.split("@")
        sys.exit(int(code) if os.environ.get("FERRY_ATTEMPT") in attempts.split(",") else 0)
    sys.exit(int(spec))
if mode == "kill9":
    os.kill(os.getpid(), 9)
if mode.startswith("sleep:"):
    time.sleep(float(mode[6:]))
    with open(log, "a") as f:
        f.write(json.dumps({"done": rec["FERRY_MESSAGE_ID"], "t": time.time()}) + "\n")
    sys.exit(0)
if mode == "echo":
    sys.stdout.buffer.write(body.upper())
    sys.exit(0)
if mode.startswith("publish:"):
    ferry = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "ferry")
    r = subprocess.run([ferry, "publish", "--routing-key", mode[8:], "--event", "job.done", "--source", "/tests",
                        "--data", json.dumps({"from": rec["FERRY_MESSAGE_ID"]})])
    sys.exit(r.returncode)
sys.exit(99)
