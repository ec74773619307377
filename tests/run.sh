#!/usr/bin/env bash
# Runs every test suite and ends with one summary line: "N passed, N failed".
#   1. C unit tests (wire codec, topic matching, map, the store layers), built with ASan + UBSan,
#      and the layering check (the store layer includes no broker header: tests/unit/check_layers.py);
#   2. a short libFuzzer smoke run of each fuzz target (wire decoders; whole connections);
#   3. the integration tests (pytest, real clients, a real ferryd) against the sanitizer
#      build of ferryd, which must also exit cleanly (no leak or UB report) on SIGTERM.
# Extra pytest arguments can be passed: tests/run.sh -k topic
set -u
cd "$(dirname "$0")/.."
mkdir -p build/test
passed=0
failed=0
skipped=0
PY=/usr/bin/python3
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

add() { passed=$((passed + $1)); failed=$((failed + $2)); }

echo "== unit tests (ASan + UBSan)"
# Each unit program: its test file and the sources it needs besides the wire codec.
WIRE="src/wire.c src/buf.c src/util.c src/names.c src/map.c"
STORE="src/store.c src/record.c src/segment.c src/writer.c src/meta.c src/recover.c src/paging.c src/storeio.c src/crc32c.c src/message.c src/memacct.c src/loop.c src/streamlog.c"
for spec in "unit:tests/unit/test_wire.c src/topic.c" "unit_chash:tests/unit/test_chash.c src/chash.c src/memacct.c" \
    "unit_store:tests/unit/test_store.c $STORE" "unit_cron:tests/unit/test_cron.c src/cronexpr.c src/tzfile.c" \
    "unit_streamlog:tests/unit/test_streamlog.c $STORE"; do
  name=${spec%%:*}
  srcs=${spec#*:}
  if clang -std=c11 -D_GNU_SOURCE -Isrc -Itests/unit -Wall -Wextra -Werror -g -O1 $SAN \
      -o build/test/$name $srcs $WIRE 2> build/test/$name-build.log; then
    build/test/$name > build/test/$name.log 2>&1
    cat build/test/$name.log
    line=$(grep -E '^unit: [0-9]+ passed, [0-9]+ failed' build/test/$name.log | tail -1)
    if [ -n "$line" ]; then
      p=$(echo "$line" | sed -E 's/unit: ([0-9]+) passed.*/\1/')
      f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed/\1/')
      add "$p" "$f"
      if grep -q 'ERROR: \(Address\|Leak\)Sanitizer\|runtime error:' build/test/$name.log; then add 0 1; fi
    else
      echo "$name crashed"; add 0 1
    fi
  else
    cat build/test/$name-build.log; echo "$name failed to build"; add 0 1
  fi
done

# The store layer includes no broker header and names no broker type (README, Layout).
if $PY tests/unit/check_layers.py; then add 1 0; else add 0 1; fi

# Each libFuzzer target for a short while on its seed corpus (make fuzz runs them long).
for t in wire conn cron; do
  echo "== fuzz smoke: fuzz_$t (libFuzzer, ${FUZZ_SMOKE_SECONDS:-20} s)"
  if make -s build/fuzz/fuzz_$t > build/test/fuzz_$t-build.log 2>&1; then
    mkdir -p build/fuzz/corpus_$t
    if build/fuzz/fuzz_$t -max_total_time="${FUZZ_SMOKE_SECONDS:-20}" -print_final_stats=0 \
        build/fuzz/corpus_$t fuzz/corpus_$t > build/test/fuzz_$t.log 2>&1; then
      echo "PASS fuzz_$t ($(grep -E '^Done [0-9]+ runs' build/test/fuzz_$t.log | tail -1), no crash)"; add 1 0
    else
      tail -40 build/test/fuzz_$t.log; echo "FAIL fuzz_$t"; add 0 1
    fi
  else
    cat build/test/fuzz_$t-build.log; echo "FAIL fuzz_$t build"; add 0 1
  fi
done

echo "== integration tests (pytest, real clients, ferryd with ASan + UBSan)"
export FERRYD="${FERRYD:-$PWD/build/asan/ferryd}"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export PYTHONDONTWRITEBYTECODE=1
# tests/app: every test on ferryd, only those marked cluster_short on the single RabbitMQ and the
# 3-node cluster (make test-app-cluster runs all of them on all three).
export FERRY_APP_CLUSTER="${FERRY_APP_CLUSTER:-short}"
rm -f build/test/pytest.xml
(cd tests && $PY -m pytest -q -p no:cacheprovider --junitxml=../build/test/pytest.xml "$@")
if [ -f build/test/pytest.xml ]; then
  read -r t f e s < <($PY - <<'PYEOF'
import xml.etree.ElementTree as ET
r = ET.parse("build/test/pytest.xml").getroot()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(x.get("tests", 0)) for x in suites)
f = sum(int(x.get("failures", 0)) for x in suites)
e = sum(int(x.get("errors", 0)) for x in suites)
s = sum(int(x.get("skipped", 0)) for x in suites)
print(t, f, e, s)
PYEOF
)
  add $((t - f - e - s)) $((f + e))
  skipped=$((skipped + s))
else
  echo "pytest produced no results"; add 0 1
fi

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
