#!/usr/bin/python3
"""Issue 14, must-show 3: rows 1-9 of `make bench` with two ferryd binaries, interleaved.

usage: compare.py BEFORE_FERRYD AFTER_FERRYD [--reps 3] [--rows 1,2,...] [--duration S]
For each repetition, each binary in turn (before, after; the order alternates between
repetitions so neither always runs first) gets a fresh ferryd and runs the rows with
bench/matrix.py's own row functions. Prints a markdown table: per row and metric the median
of the repetitions for each binary, the spread (min-max), and after / before; the raw runs go
to bench/results/tmp/compare.json. The machine is shared: interleaving gives both binaries the
same conditions on average, the spread shows how much they swung.
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import matrix  # noqa: E402
from certs import Certs  # noqa: E402

HIGHER_BETTER = {"consume", "publish", "confirmed", "drain", "sustainable"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", default="1,2,3,4,5,6,7,8,9")
    ap.add_argument("--duration", type=int, default=10)
    a = ap.parse_args()
    rows = [int(x) for x in a.rows.split(",")]
    os.makedirs(matrix.RAW, exist_ok=True)
    matrix.CERTS = Certs(tempfile.mkdtemp(prefix="ferry-compare-certs-"))
    matrix.D_THROUGHPUT = a.duration
    matrix.D_LATENCY = a.duration
    runs = {"before": [], "after": []}
    for rep in range(a.reps):
        order = ["before", "after"] if rep % 2 == 0 else ["after", "before"]
        for which in order:
            matrix.FERRYD = os.path.abspath(getattr(a, which))
            b = matrix.FerryBroker()
            if not b.start():
                print(f"{which}: {b.why}", file=sys.stderr)
                return 1
            res = {}
            try:
                for n in rows:
                    matrix.wait_quiet(b.pid(), 30)
                    _, _, fn, _ = matrix.ROW_INDEX[n]
                    t = time.time()
                    try:
                        res[n] = {k: v for k, v in fn(b).items() if not k.startswith("_")}
                    except Exception as e:  # noqa: BLE001
                        res[n] = {"error": str(e)}
                    matrix.log(f"rep {rep + 1} {which} row {n} ({time.time() - t:.0f}s): {res[n]}")
                    if not b.alive():
                        b.restart()
            finally:
                b.stop()
            runs[which].append(res)
    with open(os.path.join(matrix.RAW, "compare.json"), "w") as f:
        json.dump(runs, f, indent=1)
    print(f"| row | metric | before median (min–max) | after median (min–max) | after ÷ before |")
    print("|---|---|---:|---:|---:|")
    for n in rows:
        keys = [k for k, _l, _h in matrix.ROW_INDEX[n][3]]
        for k in keys:
            vals = {}
            for which in ("before", "after"):
                v = sorted(r[n][k] for r in runs[which] if isinstance(r.get(n, {}).get(k), (int, float)))
                vals[which] = v
            if not vals["before"] or not vals["after"]:
                continue
            med = {w: v[len(v) // 2] for w, v in vals.items()}
            ratio = med["after"] / med["before"] if med["before"] else float("nan")
            worse = (ratio < 0.9) if k in HIGHER_BETTER else (ratio > 1.1 if k not in ("p50", "p99", "p999") else False)
            f = lambda x: matrix.fmt(x, k)  # noqa: E731
            print(f"| {n} | {k} | {f(med['before'])} ({f(vals['before'][0])}–{f(vals['before'][-1])}) | "
                  f"{f(med['after'])} ({f(vals['after'][0])}–{f(vals['after'][-1])}) | {ratio:.2f}{' ⚠' if worse else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
