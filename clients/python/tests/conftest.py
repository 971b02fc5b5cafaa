"""The tests' daemon (tests/daemon.py), started once, and clients of it."""

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import QUEUES, Daemon  # noqa: E402
from jobd import Client  # noqa: E402


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("jobd"))
    yield d
    d.stop()


_free_queues = list(QUEUES)


@pytest.fixture
def queue():
    """A queue of its own for the test."""
    return _free_queues.pop()


@pytest.fixture
def admin(daemon):
    return Client(daemon.url, daemon.admin_token)


@pytest.fixture
def producer(daemon):
    return Client(daemon.url, daemon.producer_token)


@pytest.fixture
def worker_client(daemon):
    return Client(daemon.url, daemon.worker_token)


def wait_for(predicate, timeout=20.0, what="condition"):
    give_up = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def dumps(v):
    return json.dumps(v, sort_keys=True)
