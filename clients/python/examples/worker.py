"""A worker of your own functions: `python3 worker.py` (JOBD_URL, and
JOBD_TOKEN a worker token: `jobd token add workers --role worker`).
Its queue is one the daemon leaves to remote workers (`[queues] email = 0`
in jobd.toml).  Stops cleanly on Ctrl-C or SIGTERM."""

import logging
import os
import time

from jobd import Client, Permanent, Worker

logging.basicConfig(level=logging.INFO)
worker = Worker(Client(os.environ.get("JOBD_URL", "http://127.0.0.1:7878"), os.environ["JOBD_TOKEN"]),
                queues=["email"], concurrency=8)


@worker.handler("send_welcome_email")
def send_welcome_email(job):
    to = job.payload.get("to")
    if not to or "@" not in to:
        raise Permanent(f"not an address: {to!r}")  # no retry: it will never work
    for step, stage in enumerate(["render", "send"], start=1):
        job.raise_if_cancelled()
        job.progress(step * 50, stage, {"completed": step, "total": 2})
        time.sleep(0.1)
    return {"sent_to": to}


if __name__ == "__main__":
    worker.run()
