#!/usr/bin/env bash
# scripts/fuzz.sh — runs the libFuzzer targets long (`make fuzz` calls it).
#
#   FUZZ_SECONDS=300   run each target this long (per worker), or
#   FUZZ_RUNS=N        run each target until N executions in all (split over the workers)
#   FUZZ_JOBS=1        parallel workers per target, sharing the corpus directory
#   FUZZ_MAX_LEN=N     longest input (libFuzzer's -max_len; default: libFuzzer's own)
#   FUZZ_TARGETS="fuzz_wire fuzz_conn fuzz_cron"
#
# Each worker is its own libFuzzer process (ASan + UBSan; LeakSanitizer at exit) logging to
# build/fuzz/<target>-<worker>.log; new inputs go to build/fuzz/corpus_<name>. Prints, per
# target, the executions summed over the workers from libFuzzer's own final stats, and fails
# if any worker found a crash, a leak or UB (a crash leaves crash-*/leak-* in build/fuzz/).
set -u
cd "$(dirname "$0")/.."
targets=${FUZZ_TARGETS:-fuzz_wire fuzz_conn fuzz_cron}
jobs=${FUZZ_JOBS:-1}
status=0
for t in $targets; do
  c=${t#fuzz_}
  mkdir -p build/fuzz/corpus_$c
  make -s build/fuzz/$t || exit 1
  if [ -n "${FUZZ_RUNS:-}" ]; then
    limit="-runs=$(( (FUZZ_RUNS + jobs - 1) / jobs ))"; what="$FUZZ_RUNS executions"
  else
    limit="-max_total_time=${FUZZ_SECONDS:-300}"; what="${FUZZ_SECONDS:-300} s"
  fi
  echo "== $t: $what, $jobs worker(s)"
  start=$(date +%s)
  pids=()
  for j in $(seq 1 "$jobs"); do
    (cd build/fuzz && exec ./$t $limit ${FUZZ_MAX_LEN:+-max_len=$FUZZ_MAX_LEN} -print_final_stats=1 -artifact_prefix=./ \
        corpus_$c ../../fuzz/corpus_$c > $t-$j.log 2>&1) &
    pids+=($!)
  done
  failed=0
  for j in "${!pids[@]}"; do
    if ! wait "${pids[$j]}"; then
      failed=1
      echo "FAIL $t worker $((j + 1)): see build/fuzz/$t-$((j + 1)).log"
      grep -E 'ERROR|SUMMARY|runtime error|artifact' build/fuzz/$t-$((j + 1)).log | head -8
    fi
  done
  execs=0
  for j in $(seq 1 "$jobs"); do
    n=$(grep -E '^stat::number_of_executed_units:' build/fuzz/$t-$j.log | awk '{print $2}')
    execs=$(( execs + ${n:-0} ))
  done
  secs=$(( $(date +%s) - start ))
  echo "$t: $execs executions in $secs s ($jobs worker(s)), $([ $failed = 0 ] && echo 'no crash, leak or UB' || echo FAILED)"
  [ $failed = 0 ] || status=1
done
exit $status
