"""A consumer process for the ordering test: consumes one partition queue (single active
consumer), appends "entity seq redelivered" for every event it processes to a shared log
(O_APPEND, one write per line, so lines from all processes interleave in processing
order), then acks. Killed with SIGKILL by the test to simulate a crash."""
import os
import sys
import time

import pika

url, queue, log = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.basic_qos(prefetch_count=20)


def on(c, m, p, body):
    entity, seq = body.decode().split()
    os.write(fd, f"{entity} {seq} {int(m.redelivered)}\n".encode())
    time.sleep(0.0005)  # work after recording: a crash here means processed, not acked
    c.basic_ack(m.delivery_tag)


ch.basic_consume(queue, on)
print("ready", flush=True)
ch.start_consuming()
