#!/usr/bin/env bash
# `make bench`: runs the benchmark matrix (bench/matrix.py) against a fresh ferryd and a
# private Debian RabbitMQ and writes bench/results/latest.md and latest.png.
# BENCH_QUICK=1 for a short development run; BENCH_BROKERS=ferry|rabbitmq for one side.
set -euo pipefail
cd "$(dirname "$0")/.."

# The load generator is required; the broker is optional (its column reads n/a if it does
# not build or start), so a broken broker build never hides the RabbitMQ figures.
make --no-print-directory build/ferry
make --no-print-directory build/ferryd || echo "bench: build/ferryd did not build; ferry rows will be n/a" >&2

# Row 8 holds 10,000 connections: the helper, ferryd and RabbitMQ each need that many fds.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  echo "bench: ulimit -n is $(ulimit -n); row 8 (10,000 connections) may fail" >&2
fi

exec /usr/bin/python3 bench/matrix.py
