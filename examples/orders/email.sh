#!/bin/sh
# email.sh — the email subscriber (run by `ferry worker --queue email`): one line per
# order.placed in $ORDERS_OUT/emails.log, as if it had sent the confirmation email.
body=$(cat)
customer=$(printf '%s' "$body" | sed -n 's/.*"customer":"\([^"]*\)".*/\1/p')
order=$(printf '%s' "$body" | sed -n 's/.*"order_id":\([0-9]*\).*/\1/p')
echo "to $customer: your order $order is confirmed (message $FERRY_MESSAGE_ID)" >> "$ORDERS_OUT/emails.log"
