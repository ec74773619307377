"""Helpers shared by the hostile-client tests (importable: conftest adds tests/malformed
to sys.path for rawamqp)."""


def proc_status(pid):
    """/proc/PID/status as a dict of kB figures (VmRSS, VmSize, VmHWM, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            parts = v.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[k] = int(parts[0])
    return out
