"""The Client against a real daemon: enqueue one and many, get, wait,
list, cancel, retry; errors as exceptions carrying the API's message."""

import threading
import time

import pytest

from jobd import BadRequest, Client, Forbidden, NotFound, Unauthorized, Worker


def test_enqueue_get_list_cancel(producer, admin, queue):
    one = producer.enqueue(queue, "send_email", {"to": "a@example.com"}, tenant="tenant-007", priority=5)
    many = producer.enqueue_many([
        {"queue": queue, "kind": "send_email", "payload": {"to": "b@example.com"}},
        {"queue": queue, "kind": "send_email", "payload": {"to": "c@example.com"}, "delay": 60},
    ])
    assert len(many) == 2 and one not in many
    job = producer.get(one)
    assert job["state"] == "ready"
    assert job["payload"] == {"to": "a@example.com"}
    assert job["tenant"] == "tenant-007"
    assert producer.get(many[1])["state"] == "scheduled"
    listed = producer.list(queue=queue)
    assert {j["id"] for j in listed} == {one, *many}
    assert admin.cancel(one) == "cancelled"
    assert producer.get(one)["state"] == "cancelled"
    admin.retry(one)
    assert producer.get(one)["state"] == "ready"


def test_errors_carry_the_apis_message(daemon, producer, queue):
    with pytest.raises(BadRequest) as e:
        producer.enqueue(queue, "bad kind!")
    assert "invalid kind" in e.value.message
    with pytest.raises(NotFound):
        producer.get(987654321)
    with pytest.raises(Unauthorized):
        Client(daemon.url, "x" * 40).get(1)
    # A producer may not cancel (admin only).
    job = producer.enqueue(queue, "send_email")
    with pytest.raises(Forbidden) as e:
        producer.cancel(job)
    assert "role (producer)" in e.value.message
    with pytest.raises(TypeError):
        producer.enqueue_many([{"queue": queue, "kind": "k", "colour": "red"}])


def test_wait_answers_when_the_job_finishes(producer, worker_client, queue):
    job = producer.enqueue(queue, "add", {"a": 2, "b": 3})
    assert producer.wait(job, timeout=0.2)["state"] == "ready"
    worker = Worker(worker_client, [queue], concurrency=1)

    @worker.handler("add")
    def add(job):
        time.sleep(0.3)
        return {"sum": job.payload["a"] + job.payload["b"]}

    t = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    t.start()
    try:
        started = time.monotonic()
        done = producer.wait(job, timeout=20)
        assert done["state"] == "succeeded"
        assert done["result"] == {"sum": 5}
        assert time.monotonic() - started < 5
    finally:
        worker.stop()
        t.join(30)
