"""The Celery application test_celery.py runs in a real worker process (celery -A celery_app worker).

The broker and the task queue come from the environment so that every test run uses its own
queue on a shared broker: FERRY_CELERY_BROKER (an amqp:// URL) and FERRY_CELERY_QUEUE.
Results travel back over the rpc:// backend: AMQP replies to a per-client queue, no other
service needed.
"""
import os

from celery import Celery

app = Celery("ferry_celery_test",
             broker=os.environ.get("FERRY_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
             backend="rpc://")
queue = os.environ.get("FERRY_CELERY_QUEUE", "ferry.test.celery")
app.conf.update(
    task_default_queue=queue,
    task_default_exchange=queue,
    task_default_routing_key=queue,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=5,
    worker_prefetch_multiplier=4,
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=5)
def flaky(self, key, fail_times):
    """Fails (retrying after 1 s) `fail_times` times, then succeeds and reports how often it ran."""
    if self.request.retries < fail_times:
        raise self.retry(countdown=1)
    return {"key": key, "retries": self.request.retries}


@app.task
def explode(message):
    raise ValueError(message)
