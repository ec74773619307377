#!/usr/bin/env bash
# run.sh — the whole order example, end to end, in one command (`make -C examples/orders run`).
#
# Starts a private ferryd (or uses FERRY_URL=amqp://… if set), the subscribers, the payment
# worker and the outbox relay; places five orders through the order service; crashes the relay
# once between publishing and marking; waits until every effect is visible and checks it; prints
# a summary; stops everything it started (by PID). Exit 0 when every check held.
# README.md beside this file walks through it step by step.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FERRY="${FERRY_CLI:-$ROOT/build/ferry}"
FERRYD_BIN="${FERRYD:-$ROOT/build/ferryd}"
BIN="${ORDERS_BIN:-$ROOT/build/examples/orders}"
WORK=${ORDERS_WORK:-$(mktemp -d /tmp/ferry-orders-XXXXXX)}
export ORDERS_OUT="$WORK/out"
mkdir -p "$ORDERS_OUT"
DB="$WORK/orders.db"
PIDS=()

say() { printf '\n== %s\n' "$*"; }
stop_all() {
  # newest first: the relay and the workers before the broker
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

# Wait until the shell condition $1 holds (evaluated afresh each time, up to 30 s).
await() {
  for _ in $(seq 300); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "run.sh: timed out waiting for: $1" >&2
  return 1
}
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
depth() { "$BIN/order_service" depth --uri "$URI" "$1"; }

say "1. the broker"
OWN_FERRYD=
if [ -n "${FERRY_URL:-}" ]; then
  URI=$FERRY_URL
  echo "using $URI"
else
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$FERRYD_BIN" --port "$PORT" --data-dir "$WORK/ferryd-data" --http-port 0 2> "$WORK/ferryd.log" &
  PIDS+=($!)
  URI="amqp://guest:guest@127.0.0.1:$PORT/"
  OWN_FERRYD=1
  await "exec 3<>/dev/tcp/127.0.0.1/$PORT"
  echo "ferryd on 127.0.0.1:$PORT (data and logs in $WORK)"
fi
export FERRY_URL=$URI

say "2. orders.db, the orders exchange, the subscriber queues"
"$BIN/order_service" "$DB" init --uri "$URI"
"$FERRY" outbox schema --db "sqlite:$DB"

say "3. subscribers and the payment worker"
"$FERRY" worker --queue email --retry "" -- "$HERE/email.sh" > "$WORK/email.log" 2>&1 &
PIDS+=($!)
"$FERRY" worker --queue analytics --retry "" -- "$HERE/analytics.sh" > "$WORK/analytics.log" 2>&1 &
PIDS+=($!)
"$BIN/inventory" --uri "$URI" --db "$WORK/inventory.db" --stock widget=10 --stock gadget=3 > "$WORK/inventory.log" 2>&1 &
PIDS+=($!)
"$FERRY" worker --queue payments --retry 1s,2s --dead-letter-queue payments.dead -- "$HERE/payment.sh" \
  > "$WORK/payment.log" 2>&1 &
PIDS+=($!)
await 'depth payments'          # the payment worker declared its queue (and payments.dead)
await 'depth inventory.dead'    # the inventory worker is up
echo "email, analytics (ferry worker), inventory (libferry worker + idempotent consumer), payments (ferry worker, retries 1s,2s, dead letters to payments.dead)"

say "4. the outbox relay"
"$FERRY" outbox relay --db "sqlite:$DB" 2> "$WORK/relay.log" &
RELAY=$!
PIDS+=($RELAY)

say "5. four orders"
"$BIN/order_service" "$DB" place ada widget 2 4242424242424242
"$BIN/order_service" "$DB" place bob gadget 1 4000000000009995   # payment fails once, then retried
"$BIN/order_service" "$DB" place cy widget 1 4000000000000002    # card declined: dead letter
"$BIN/order_service" "$DB" place dee gadget 5 4242424242424242   # only 3 gadgets: inventory dead-letters
await '[ "$(lines "$ORDERS_OUT/emails.log")" -ge 4 ]'

say "6. the relay crashes after publishing order 5's events, before marking them sent"
kill -TERM "$RELAY"; wait "$RELAY" || true
"$BIN/order_service" "$DB" place eve widget 3 4242424242424242
# (in a subshell whose stderr is dropped: its "Killed" notice is expected)
( FERRY_OUTBOX_FAULT=kill-after-confirm "$FERRY" outbox relay --db "sqlite:$DB" 2>> "$WORK/relay.log" || true ) 2>/dev/null
echo "relay killed; order 5's rows are still pending:"
"$BIN/order_service" "$DB" show | sed -n '1p;$p'
"$FERRY" outbox relay --db "sqlite:$DB" 2>> "$WORK/relay.log" &
RELAY=$!
PIDS+=($RELAY)
echo "relay restarted: it publishes order 5's events a second time"

say "7. waiting for every effect"
await '[ "$(grep -c "already processed" "$WORK/inventory.log")" -ge 1 ]'
await '[ "$(grep -c ": paid" "$ORDERS_OUT/payments.log")" -ge 4 ]'
await '[ "$(grep -c "already paid" "$ORDERS_OUT/payments.log")" -ge 1 ]'
await '[ "$(depth payments.dead)" -eq 1 ]'
await '[ "$(depth inventory.dead)" -eq 1 ]'
await '[ "$(lines "$ORDERS_OUT/analytics.jsonl")" -ge 5 ]'
sleep 0.5

say "summary"
"$BIN/order_service" "$DB" show
echo
echo "stock:        $(sqlite3 "$WORK/inventory.db" "SELECT group_concat(sku || '=' || qty, ' ') FROM (SELECT * FROM stock ORDER BY sku)" 2>/dev/null || echo '(sqlite3 not installed)')"
echo "inventory:"; sed 's/^/  /' "$WORK/inventory.log"
echo "emails:";    sed 's/^/  /' "$ORDERS_OUT/emails.log"
echo "payments:";  sed 's/^/  /' "$ORDERS_OUT/payments.log"
echo "dead letters: payments.dead=$(depth payments.dead) inventory.dead=$(depth inventory.dead)"
echo "analytics events: $(lines "$ORDERS_OUT/analytics.jsonl") (at-least-once: order 5's event is there twice)"

# The checks the example exists to show.
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAILED: $1"; fail=1; fi; }
echo
check "every order's events were sent (no pending outbox row)" \
  "[ \"\$(\"$BIN/order_service\" \"$DB\" show | awk 'NR > 1 { p += \$6 } END { print p + 0 }')\" -eq 0 ]"
check "order 5's event reached inventory twice, reserved once (idempotent consumer)" \
  "[ \$(grep -c 'order 5 reserved' '$WORK/inventory.log') -eq 1 ] && [ \$(grep -c 'order 5: event .* already processed' '$WORK/inventory.log') -ge 1 ]"
check "bob's payment failed once and was paid on the retry" \
  "grep -q 'order 2 attempt 1: provider timed out' '$ORDERS_OUT/payments.log' && grep -q 'order 2 attempt 2: paid' '$ORDERS_OUT/payments.log'"
check "order 5's payment request arrived twice, charged once" \
  "[ \$(grep -c 'order 5 attempt .*: paid' '$ORDERS_OUT/payments.log') -eq 1 ] && grep -q 'order 5: message .* already paid' '$ORDERS_OUT/payments.log'"
check "cy's declined card went to payments.dead, never paid" \
  "[ \"\$(depth payments.dead)\" -eq 1 ] && ! grep -q 'order 3 .*paid' '$ORDERS_OUT/payments.log'"
check "dee's order for 5 gadgets (3 in stock) was dead-lettered by inventory" \
  "[ \"\$(depth inventory.dead)\" -eq 1 ] && grep -q 'order 4: out of stock' '$WORK/inventory.log'"
if [ -n "$OWN_FERRYD" ]; then  # x-deduplication-window is ferryd's (RabbitMQ ignores it)
  check "one email per order: ferryd's dedup window dropped order 5's second copy" \
    "[ \$(lines '$ORDERS_OUT/emails.log') -eq 5 ]"
fi
[ "$fail" -eq 0 ] && echo "all checks passed (work dir $WORK)"
exit "$fail"
