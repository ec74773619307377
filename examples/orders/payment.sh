#!/bin/sh
# payment.sh — the payment job (run by `ferry worker --queue payments --retry 1s,2s`): charges
# the card of a payment.requested event. Exit 0: paid (ack). Exit 65: the card is declined —
# retrying cannot help, so the message is dead-lettered at once (payments.dead). Any other
# failure is retried after the next delay: the card ending in 9995 fails on its first attempt
# (the payment provider "times out") and goes through on the second.
# Charging twice is the one thing a payment must never do, and the outbox delivers at least
# once: the ids of paid messages are kept in $ORDERS_OUT/paid.ids and a message seen before is
# acknowledged without charging again (an idempotent consumer, file-based for the example).
body=$(cat)
if grep -qxF "$FERRY_MESSAGE_ID" "$ORDERS_OUT/paid.ids" 2>/dev/null; then
  order=$(printf '%s' "$body" | sed -n 's/.*"order_id":\([0-9]*\).*/\1/p')
  echo "order $order: message $FERRY_MESSAGE_ID already paid, not charged again" >> "$ORDERS_OUT/payments.log"
  exit 0
fi
card=$(printf '%s' "$body" | sed -n 's/.*"card":"\([^"]*\)".*/\1/p')
order=$(printf '%s' "$body" | sed -n 's/.*"order_id":\([0-9]*\).*/\1/p')
case "$card" in
  *0002)
    echo "order $order: card declined" >&2
    exit 65 ;;
  *9995)
    if [ "$FERRY_ATTEMPT" = 1 ]; then
      echo "order $order attempt $FERRY_ATTEMPT: provider timed out" >> "$ORDERS_OUT/payments.log"
      exit 1
    fi ;;
esac
echo "order $order attempt $FERRY_ATTEMPT: paid" >> "$ORDERS_OUT/payments.log"
echo "$FERRY_MESSAGE_ID" >> "$ORDERS_OUT/paid.ids"
