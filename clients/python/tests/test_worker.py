"""The Worker against a real daemon: functions by kind, results, progress,
failures (retryable and permanent), cancellation of a running function,
a lost lease keeping a result out, SIGTERM, and kill -9 mid-job."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from jobd import Permanent, Worker


class Running:
    """A Worker on a thread for the length of a test."""

    def __init__(self, worker):
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


def test_functions_run_by_kind_with_results_and_progress(producer, worker_client, queue):
    w = Worker(worker_client, [queue], concurrency=4)

    @w.handler("render")
    def render(job):
        job.progress(50, "rendering", {"completed": 3, "failed": 1, "total": 5})
        return {"pages": job.payload["copies"], "tenant": job.tenant, "attempt": job.attempt}

    @w.handler("fails")
    def fails(job):
        raise RuntimeError("SMTP 451 try later")

    @w.handler("bad")
    def bad(job):
        raise Permanent("template 9 does not exist")

    @w.handler("not_json")
    def not_json(job):
        return object()

    ids = [producer.enqueue(queue, "render", {"copies": i}, tenant="tenant-007") for i in range(20)]
    flaky = producer.enqueue(queue, "fails", max_attempts=3)
    bad_id = producer.enqueue(queue, "bad", max_attempts=3)
    odd = producer.enqueue(queue, "not_json")
    with Running(w):
        for i, job in enumerate(ids):
            done = producer.wait(job, timeout=20)
            assert done["state"] == "succeeded", done
            assert done["result"] == {"pages": i, "tenant": "tenant-007", "attempt": 1}
            assert done["progress"]["details"] == {"completed": 3, "failed": 1, "total": 5}
            assert done["progress"]["stage"] == "rendering"
        j = wait_for(lambda: (lambda j: j if j["state"] == "scheduled" else None)(producer.get(flaky)), what="a retry")
        assert "RuntimeError: SMTP 451 try later" in j["last_error"]
        j = producer.wait(bad_id, timeout=20)
        assert (j["state"], j["attempts"]) == ("dead", 1)
        assert j["last_error"] == "template 9 does not exist"
        j = producer.wait(odd, timeout=20)
        assert j["state"] == "dead" and "not JSON" in j["last_error"]
    assert w.succeeded == 20


def test_cancelling_a_running_function_stops_it(producer, admin, worker_client, queue):
    w = Worker(worker_client, [queue], concurrency=1, lease=3)  # heartbeats every second
    seen = {}

    @w.handler("long")
    def long(job):
        seen["started"] = time.monotonic()
        while not job.cancelled:
            time.sleep(0.02)
        seen["reason"] = job.stop_reason
        job.raise_if_cancelled()

    job = producer.enqueue(queue, "long")
    with Running(w):
        wait_for(lambda: producer.get(job)["state"] == "running", what="the job to start")
        asked = time.monotonic()
        assert admin.cancel(job) == "requested"
        done = producer.wait(job, timeout=20)
        assert done["state"] == "cancelled", done
        assert seen["reason"] == "cancel"
        assert time.monotonic() - asked < 5


def test_a_lost_lease_keeps_the_result_out(daemon, producer, worker_client, queue):
    # Heartbeats far apart: the 1 s lease runs out while the function works.
    w = Worker(worker_client, [queue], concurrency=1, lease=1, heartbeat=60)

    @w.handler("slowly")
    def slowly(job):
        if job.attempt == 1:
            time.sleep(2.5)
        return {"attempt": job.attempt}

    job = producer.enqueue(queue, "slowly", max_attempts=5)
    with Running(w):
        wait_for(lambda: producer.get(job)["state"] == "running", what="the job to start")
        time.sleep(1.5)
        daemon.jobd("reap")  # the lease expired: another try is due
        done = producer.wait(job, timeout=30)
        assert done["state"] == "succeeded", done
        # The first try's result arrived after its lease was gone: refused.
        assert done["result"] == {"attempt": 2}


def spawn_worker(daemon, queue, lease, markers):
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("worker_proc.py")), daemon.url, daemon.worker_token,
         queue, str(lease), str(markers)])


def test_kill_9_mid_job_and_another_worker_finishes_it_after_the_lease(daemon, producer, queue, tmp_path):
    first = spawn_worker(daemon, queue, 2, tmp_path)
    second = None
    try:
        job = producer.enqueue(queue, "slow", {"secs": 60}, max_attempts=3)
        started = wait_for(lambda: list(tmp_path.glob(f"{job}.*")), what="the job to start")
        assert started[0].name == f"{job}.{first.pid}"
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn_worker(daemon, queue, 2, tmp_path)
        # The daemon reaps the dead worker's lease (2 s) and the second
        # worker runs the job again.
        done = producer.wait(job, timeout=40)
        assert done["state"] == "succeeded", done
        assert done["result"] == {"pid": second.pid, "attempt": 2}
        assert [t["outcome"] for t in done["attempt_log"]][:1] == ["lost"], done["attempt_log"]
    finally:
        first.kill()
        if second is not None:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0


def test_sigterm_lets_running_functions_finish(daemon, producer, queue, tmp_path):
    proc = spawn_worker(daemon, queue, 10, tmp_path)
    job = producer.enqueue(queue, "slow", {"secs": 1.0})
    wait_for(lambda: list(tmp_path.glob(f"{job}.*")), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    done = producer.get(job)
    assert done["state"] == "succeeded", done
    assert done["result"]["pid"] == proc.pid
