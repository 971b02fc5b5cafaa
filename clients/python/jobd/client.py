"""The HTTP client: one keep-alive connection per thread, JSON in and out,
every API error raised as a :class:`JobdError` carrying the API's message."""

import http.client
import json
import threading
import time
import urllib.parse

__all__ = ["Client", "JobdError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict"]


class JobdError(Exception):
    """An error answer of the API: ``status`` and the API's ``message``."""

    def __init__(self, status, message):
        super().__init__(f"jobd: {status}: {message}")
        self.status = status
        self.message = message


class BadRequest(JobdError):
    """400: the request was wrong; the message says what. Nothing changed."""


class Unauthorized(JobdError):
    """401: no token, or one the daemon does not know."""


class Forbidden(JobdError):
    """403: the token's role may not do this."""


class NotFound(JobdError):
    """404: no such job, queue or route."""


class Conflict(JobdError):
    """409: the job is not in a state for this (a lease lost, a job finished)."""


_ERRORS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict}

#: Longest a kept-alive connection is reused after its last answer.
_IDLE = 5.0

#: States in which a job will not change again by itself.
FINISHED = ("succeeded", "dead", "cancelled")


class Client:
    """jobd's HTTP API at ``url`` (``http://127.0.0.1:7878``) with ``token``.

    Safe to share between threads: each thread keeps its own connection.
    """

    def __init__(self, url="http://127.0.0.1:7878", token=None, timeout=70.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"jobd url {url!r}: give http://host:port")
        if not token:
            raise ValueError("a jobd API token is needed (jobd token add NAME --role ...)")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._base = parsed.path.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._timeout = timeout
        self._local = threading.local()

    def __repr__(self):
        # Never the token.
        return f"Client({self._scheme}://{self._host}:{self._port}{self._base})"

    # -- transport ---------------------------------------------------------

    def _connection(self):
        """This thread's connection, and whether it served a request before.
        One idle for longer than the server keeps idle connections (10 s) is
        replaced before use."""
        conn = getattr(self._local, "conn", None)
        used = getattr(self._local, "used", 0.0)
        if conn is not None and time.monotonic() - used > _IDLE:
            conn.close()
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
            return conn, False
        return conn, True

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def request(self, method, path, body=None, query=None):
        """One API call; the answer's JSON, or a :class:`JobdError`."""
        url = self._base + "/api/v1" + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None if body is None else json.dumps(body).encode()
        while True:
            conn, reused = self._connection()
            try:
                conn.request(method, url, body=data, headers=self._headers)
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                # A kept-alive connection the server had just closed: the
                # request never reached it.  Once more on a new one.
                if reused:
                    continue
                raise
            except Exception:
                self._drop_connection()
                raise
            self._local.used = time.monotonic()
            if (resp.getheader("Connection") or "").lower() == "close":
                self._drop_connection()
            break
        value = json.loads(raw) if raw else None
        if status >= 400:
            message = value.get("error") if isinstance(value, dict) else None
            raise _ERRORS.get(status, JobdError)(status, message or raw.decode(errors="replace"))
        return value

    # -- jobs --------------------------------------------------------------

    def enqueue(self, queue, kind, payload=None, *, tenant=None, priority=None, delay=None,
                max_attempts=None, timeout=None, unique_key=None):
        """Enqueue one job; its id.  ``delay`` and ``timeout`` in seconds."""
        return self.request("POST", "/jobs", _job(queue, kind, payload, tenant, priority, delay,
                                                   max_attempts, timeout, unique_key))["id"]

    def enqueue_many(self, jobs):
        """Enqueue many jobs in one transaction (all or none); their ids.

        Each job is a dict with ``queue``, ``kind`` and optionally ``payload``,
        ``tenant``, ``priority``, ``delay``, ``max_attempts``, ``timeout``,
        ``unique_key``."""
        body = []
        for j in jobs:
            j = dict(j)
            body.append(_job(j.pop("queue"), j.pop("kind"), j.pop("payload", None), j.pop("tenant", None),
                             j.pop("priority", None), j.pop("delay", None), j.pop("max_attempts", None),
                             j.pop("timeout", None), j.pop("unique_key", None), extra=j))
        return self.request("POST", "/jobs", body)["ids"]

    def get(self, job_id):
        """The job: state, progress, tries, result, last error."""
        return self.request("GET", f"/jobs/{int(job_id)}")

    def wait(self, job_id, timeout=None):
        """The job once it has finished (succeeded, dead or cancelled), or as
        it is when ``timeout`` seconds have passed (``None``: no limit).  The
        server answers as soon as the job finishes: no polling."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if give_up is None else max(0.0, min(30.0, give_up - time.monotonic()))
            job = self.request("GET", f"/jobs/{int(job_id)}", query={"wait": f"{left:.3f}"})
            if job["state"] in FINISHED or (give_up is not None and time.monotonic() >= give_up):
                return job

    def list(self, *, queue=None, state=None, kind=None, tenant=None, error=None, before_id=None, limit=None):
        """Jobs, newest first, filtered on the server."""
        q = {"queue": queue, "state": state, "kind": kind, "tenant": tenant, "error": error,
             "before_id": before_id, "limit": limit}
        return self.request("GET", "/jobs", query=q)["jobs"]

    def cancel(self, job_id):
        """Cancel a job; a running one is asked to stop.  The outcome."""
        return self.request("POST", f"/jobs/{int(job_id)}/cancel")["outcome"]

    def retry(self, job_id):
        """Run a dead or cancelled job again."""
        self.request("POST", f"/jobs/{int(job_id)}/retry")

    def queues(self):
        """Counts per queue and state."""
        return self.request("GET", "/queues")


def _job(queue, kind, payload, tenant, priority, delay, max_attempts, timeout, unique_key, extra=None):
    if extra:
        raise TypeError(f"unknown job field(s): {', '.join(sorted(extra))}")
    job = {"queue": queue, "kind": kind}
    if payload is not None:
        job["payload"] = payload
    if tenant is not None:
        job["tenant"] = tenant
    if priority is not None:
        job["priority"] = priority
    if delay is not None:
        job["delay_ms"] = int(delay * 1000)
    if max_attempts is not None:
        job["max_attempts"] = max_attempts
    if timeout is not None:
        job["timeout_ms"] = int(timeout * 1000)
    if unique_key is not None:
        job["unique_key"] = unique_key
    return job
