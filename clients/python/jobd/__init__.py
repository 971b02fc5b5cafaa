"""Client and worker for jobd, the durable job queue in one SQLite file.

* :class:`Client` — enqueue, get, wait for, list, cancel and retry jobs over
  jobd's HTTP API.
* :class:`Worker` — run your own functions as jobd workers: register them
  by job kind with a decorator; threads for concurrency; batched claims and
  acknowledgements; heartbeats; progress; cancellation; graceful stop.

Standard library only (Python 3.9 and later).
"""

from .client import Client, JobdError, BadRequest, Unauthorized, Forbidden, NotFound, Conflict
from .worker import Worker, Job, Permanent, Cancelled

__all__ = [
    "Client",
    "JobdError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Worker",
    "Job",
    "Permanent",
    "Cancelled",
]
