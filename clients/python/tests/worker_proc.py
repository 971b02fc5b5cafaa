"""A worker process for the crash and shutdown tests: `slow` jobs write
a marker when they start and sleep `payload.secs`; each result says which
process ran it."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobd import Client, Worker  # noqa: E402

url, token, queue, lease, marker_dir = sys.argv[1:6]
worker = Worker(Client(url, token), [queue], concurrency=2, lease=float(lease), wait=1.0, shutdown_grace=10)


@worker.handler("slow")
def slow(job):
    Path(marker_dir, f"{job.id}.{os.getpid()}").write_text("started")
    # The first try takes `secs` (long enough to be killed in); a retry is quick.
    job.wait_cancelled(job.payload["secs"] if job.attempt == 1 else 0.05)
    return {"pid": os.getpid(), "attempt": job.attempt}


worker.run()
