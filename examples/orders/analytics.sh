#!/bin/sh
# analytics.sh — the analytics subscriber (run by `ferry worker --queue analytics`): appends each
# order.placed event, as received, to $ORDERS_OUT/analytics.jsonl.
body=$(cat)
printf '%s\n' "$body" >> "$ORDERS_OUT/analytics.jsonl"
