"""Celery, unchanged, with a real worker process: tasks, retries with countdown, and results over
the rpc:// backend (AMQP replies to the caller's own auto-delete queue with x-expires).

One worker (prefork pool, 2 processes) serves the whole module; it is started as a subprocess
in its own session and stopped by its process-group id when the module ends, pass or fail.
"""
import importlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"   # Debian's python: the one with python3-celery


def _tail(path, n=4000):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")[-n:]


@pytest.fixture(scope="module")
def celery_worker(broker, tmp_path_factory):
    """(app module, worker log path): a running worker consuming this module's own queue."""
    queue = f"ferry.test.celery.{uuid.uuid4().hex[:12]}"
    saved_env = {k: os.environ.get(k) for k in ("FERRY_CELERY_BROKER", "FERRY_CELERY_QUEUE")}
    os.environ["FERRY_CELERY_BROKER"] = broker.url   # read by celery_app when it is imported
    os.environ["FERRY_CELERY_QUEUE"] = queue
    sys.path.insert(0, HERE)
    mod = importlib.import_module("celery_app")
    assert mod.app.conf.broker_url == broker.url and mod.app.conf.task_default_queue == queue

    log_path = str(tmp_path_factory.mktemp("celery") / "worker.log")
    log = open(log_path, "wb")
    name = f"ferrytest-{uuid.uuid4().hex[:8]}@%h"
    proc = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "celery_app", "worker", "--pool=prefork", "-c", "2",
         "-n", name, "-Q", queue, "-E", "--loglevel=INFO"],
        cwd=HERE, env=dict(os.environ, PYTHONPATH=HERE), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while " ready." not in _tail(log_path, 100000):
            assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{_tail(log_path)}"
            assert time.monotonic() < deadline, f"worker not ready after 30 s:\n{_tail(log_path)}"
            time.sleep(0.1)
        yield mod, log_path
        assert proc.poll() is None, f"worker died during the tests:\n{_tail(log_path)}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)   # warm shutdown of the worker and its pool
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        _delete_queue(broker, queue)
        sys.path.remove(HERE)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _delete_queue(broker, queue):
    import pika
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url + "?heartbeat=0&socket_timeout=5"))
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(queue)
        conn.close()
    except Exception:
        pass


def test_worker_runs_1000_tasks_and_every_result_comes_back_correct(celery_worker):
    from celery import group
    mod, log_path = celery_worker
    t0 = time.monotonic()
    result = group(mod.add.s(i, i) for i in range(1000)).apply_async()
    values = result.get(timeout=60)
    assert values == [2 * i for i in range(1000)]
    assert time.monotonic() - t0 < 60


def test_tasks_retried_with_countdown_succeed_after_their_retries(celery_worker):
    mod, log_path = celery_worker
    t0 = time.monotonic()
    results = [mod.flaky.delay(f"job-{i}", 2) for i in range(10)]
    values = [r.get(timeout=30) for r in results]
    elapsed = time.monotonic() - t0
    assert values == [{"key": f"job-{i}", "retries": 2} for i in range(10)]
    # two retries with countdown=1 each: the ETA'd redeliveries cannot all be done in under 2 s
    assert elapsed >= 2.0, f"retries with countdown=1 finished in {elapsed:.2f}s"
    assert all(r.state == "SUCCESS" for r in results)
    log = _tail(log_path, 10 ** 7)
    assert log.count("Retry in 1s") >= 20, "the worker did not log 20 retries"


def test_task_exception_reaches_the_caller_through_the_rpc_backend(celery_worker):
    mod, _ = celery_worker
    r = mod.explode.delay("boom from the worker")
    with pytest.raises(ValueError, match="boom from the worker"):
        r.get(timeout=20)
    assert r.state == "FAILURE"


def test_results_of_tasks_mixed_with_retries_are_not_crossed(celery_worker):
    """Retrying tasks and quick tasks in flight together: each AsyncResult gets its own value."""
    mod, _ = celery_worker
    slow = [mod.flaky.delay(f"slow-{i}", 1) for i in range(5)]
    quick = [mod.add.delay(i, 1000) for i in range(200)]
    assert [r.get(timeout=30) for r in quick] == [i + 1000 for i in range(200)]
    assert [r.get(timeout=30) for r in slow] == [{"key": f"slow-{i}", "retries": 1} for i in range(5)]
