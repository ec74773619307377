#!/usr/bin/env bash
# Issue 11, must-show 5: what the management HTTP thread costs the broker. Runs `make bench`'s
# row 1 (1P/1C, 16 B, throughput) and row 6 (10,000 msg/s, latency) against ferryd holding
# 10,000 queues, without and with a `GET /api/queues` every 100 ms, interleaved, and writes
# the medians and spread to the "HTTP cost" section of bench/results/latest.md.
# HTTP_COST_REPEAT (default 5), HTTP_COST_DURATION (s, default 10), HTTP_COST_QUEUES (10000),
# HTTP_COST_CONDS (default off,full,fullgz,paged,loopback: which conditions to run).
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory build/ferry build/ferryd
exec /usr/bin/python3 bench/http_cost.py "$@"
