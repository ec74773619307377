#!/usr/bin/env bash
# Installs what building, running and testing Ferry needs, if it is missing.
# Usage: scripts/install-deps.sh [build|test|bench]  (each level includes the ones before it)
# A fresh machine has only the compiler; this is the one place that knows what else is needed.
set -euo pipefail
level=${1:-build}

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
want() { for p in "$@"; do have_pkg "$p" || need_apt+=("$p"); done; }

# libssl-dev: OpenSSL for TLS (amqps) in ferryd and `ferry bench`, and its PBKDF2, SHA-2 and
# CSPRNG for password hashes; libjansson-dev: the JSON parser of definitions files.
want make gcc libc6-dev libssl-dev libjansson-dev
# librabbitmq-dev: rabbitmq-c, the AMQP client libferry (lib/) and `ferry worker|publish` build on.
want librabbitmq-dev
# libsqlite3-dev, libpq-dev: the outbox and the idempotent consumer in libferry write through the
# application's own SQLite or PostgreSQL connection (`ferry outbox` links both).
want libsqlite3-dev libpq-dev
# tzdata: the IANA time zone files (/usr/share/zoneinfo) that x-ferry-timezone names; ferryd
# reads them itself (src/tzfile.c), so without them only UTC schedules work.
want tzdata
# The management API (issue 11): libmicrohttpd-dev serves HTTP on its own thread; librabbitmq-dev
# (rabbitmq-c) lets that thread do declares, publishes and gets as an AMQP client of ferryd;
# libcurl4-openssl-dev POSTs alert webhooks (with retries) from the webhook thread.
want libmicrohttpd-dev librabbitmq-dev libcurl4-openssl-dev
# zlib1g-dev: gzipped management answers for clients that ask (browsers, Prometheus, curl
# --compressed): a list of 10,000 queues is 18 MB of JSON, about 1 MB gzipped.
want zlib1g-dev
# libcurl4-openssl-dev: the HTTP client of the `ferry` management commands (queues, dlq, top...);
# librabbitmq-dev: rabbitmq-c, the AMQP client of `ferry consume`.
want libcurl4-openssl-dev librabbitmq-dev
if [ "$level" = test ]; then
  # python3-pytest drives the tests; the clients are the ones Ferry must serve unchanged;
  # rabbitmq-server is the reference for differential tests; clang + its runtime for
  # ASan/UBSan/libFuzzer.
  want python3 python3-pytest python3-pytest-timeout python3-pika python3-kombu python3-celery amqp-tools \
       rabbitmq-server clang libclang-rt-14-dev procps openssl
  # the management API tests: promtool and python3-prometheus-client parse /metrics;
  # rabbitmqadmin (in rabbitmq-server) is driven against ferryd
  want prometheus python3-prometheus-client
  # chromium: the real browser the dashboard test (tests/dashboard) drives headless.
  want chromium
  # Node.js may come with the machine (not from Debian's packages): then Debian's nodejs/npm
  # would conflict with it, so they are only installed where there is no node at all.
  # postgresql-15 + python3-psycopg2: tests/app start a private PostgreSQL (initdb on a free
  # port) for the outbox relay and the idempotent consumer, and read it back from Python.
  want postgresql-15 python3-psycopg2
  command -v node >/dev/null 2>&1 || want nodejs
  command -v npm >/dev/null 2>&1 || want npm
fi
if [ "$level" = bench ]; then
  want python3 gnuplot-nox rabbitmq-server procps openssl
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # Debian's rabbitmq-server package tries to start a system service; we start our own
  # private instances, so keep the packaging from starting one.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

if [ "$level" = test ]; then
  # node amqplib for the JavaScript client tests, pinned by tests/node/package-lock.json.
  if [ -f tests/node/package.json ] && [ ! -d tests/node/node_modules/amqplib ]; then
    (cd tests/node && npm ci --no-audit --no-fund --silent)
  fi
  # playwright-core drives Debian's chromium (installed above) in the dashboard test,
  # pinned by tests/dashboard/package-lock.json; it downloads no browser of its own.
  if [ -f tests/dashboard/package.json ] && [ ! -d tests/dashboard/node_modules/playwright-core ]; then
    (cd tests/dashboard && npm ci --no-audit --no-fund --silent)
  fi
fi
