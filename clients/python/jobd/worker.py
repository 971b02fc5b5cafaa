"""Run your own functions as jobd workers.

    from jobd import Client, Worker

    worker = Worker(Client(url, token), queues=["email"], concurrency=8)

    @worker.handler("send_email")
    def send_email(job):
        job.progress(50, "sending", {"completed": 1, "total": 2})
        return {"sent": True}

    worker.run()            # until SIGTERM / SIGINT, or worker.stop()

Threads run the functions.  One thread claims jobs for the free threads
(long-polling when there is nothing to do) and hands back the finished ones'
outcomes in the same request; one heartbeats every held job, which is how a
cancel or a timeout reaches a running function (``job.cancelled``) and how a
job whose lease was lost is told apart (its result is then never sent).  On
SIGTERM the worker claims nothing more, lets running functions finish for
``shutdown_grace`` seconds, gives back the rest and leaves.
"""

import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
import queue as _queue

from .client import Conflict, JobdError

__all__ = ["Worker", "Job", "Permanent", "Cancelled"]

log = logging.getLogger("jobd.worker")


class Permanent(Exception):
    """Raise from a function to fail its job for good: no retry."""


class Cancelled(Exception):
    """Raised by :meth:`Job.raise_if_cancelled` once the job must stop."""


class Job:
    """A claimed job, as a function gets it."""

    def __init__(self, worker, claimed):
        self.id = claimed["id"]
        self.queue = claimed["queue"]
        self.kind = claimed["kind"]
        self.payload = claimed["payload"]
        self.attempt = claimed["attempt"]
        self.max_attempts = claimed.get("max_attempts")
        self.tenant = claimed.get("tenant")
        #: When the try times out (seconds since the epoch), if it can.
        self.deadline = None if claimed.get("deadline") is None else claimed["deadline"] / 1000.0
        self._token = claimed["token"]
        self._worker = worker
        self._stop = threading.Event()
        self._reason = None

    def __repr__(self):
        return f"Job(id={self.id}, kind={self.kind!r}, attempt={self.attempt})"

    @property
    def cancelled(self):
        """True once the function should stop: the job was cancelled, ran
        past its timeout, lost its lease, or the worker is stopping past its
        grace."""
        return self._stop.is_set()

    @property
    def stop_reason(self):
        """Why: ``"cancel"``, ``"timeout"``, ``"lost"``, ``"shutdown"`` or None."""
        return self._reason

    def raise_if_cancelled(self):
        """Raise :class:`Cancelled` once the function should stop."""
        if self._stop.is_set():
            raise Cancelled(f"job {self.id}: {self._reason}")

    def wait_cancelled(self, timeout=None):
        """Sleep up to ``timeout`` seconds, waking early when the function
        should stop; True if it should."""
        return self._stop.wait(timeout)

    def progress(self, percent=None, stage=None, details=None):
        """Report progress: ``percent`` 0–100, a ``stage`` name and a dict of
        ``details`` (``{"completed": 3, "failed": 1, "total": 5}``), stored
        on the job for whoever watches it.  Raises :class:`Cancelled` when
        the job's lease was lost."""
        body = {"token": self._token}
        if percent is not None:
            body["percent"] = float(percent)
        if stage is not None:
            body["stage"] = str(stage)
        if details is not None:
            body["details"] = details
        try:
            self._worker.client.request("POST", f"/jobs/{self.id}/progress", body)
        except Conflict:
            self._set_stop("lost")
            raise Cancelled(f"job {self.id}: lease lost") from None

    def _set_stop(self, reason):
        if self._reason is None:
            self._reason = reason
        self._stop.set()


class Worker:
    """Runs registered functions on jobs of ``queues``.

    ``concurrency`` threads run functions; ``lease`` (seconds) is how long a
    job stays claimed without a heartbeat (heartbeats come every third of
    it); ``wait`` how long one claim long-polls.  ``name`` defaults to
    host-pid; the worker is registered as ``<token name>/<name>``.
    """

    def __init__(self, client, queues, *, concurrency=4, name=None, lease=30.0, wait=5.0,
                 shutdown_grace=30.0, heartbeat=None, kinds=None):
        if isinstance(queues, str):
            queues = [queues]
        if not queues:
            raise ValueError("a worker serves at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.queues = list(queues)
        self.concurrency = int(concurrency)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = float(lease)
        self.wait = float(wait)
        self.shutdown_grace = float(shutdown_grace)
        self.heartbeat_every = float(heartbeat) if heartbeat else max(0.5, self.lease / 3)
        self._kinds_only = list(kinds) if kinds else None
        self._functions = {}
        self._cond = threading.Condition()
        self._running = {}          # id -> Job (queued for a thread, or running)
        self._acks = []             # finished tries' acknowledgements, not yet sent
        self._tasks = _queue.Queue()
        self._stopping = threading.Event()
        self._poll_started = None   # when the claimer's request went out
        self.succeeded = 0
        self.failed = 0

    # -- registration ------------------------------------------------------

    def handler(self, kind):
        """Decorator: run ``fn(job)`` for jobs of ``kind``."""
        def register(fn):
            self.register(kind, fn)
            return fn
        return register

    def register(self, kind, fn):
        self._functions[kind] = fn

    # -- running -----------------------------------------------------------

    def stop(self):
        """Claim nothing more; :meth:`run` returns once running functions have
        finished (or ``shutdown_grace`` passed: the rest are given back)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    def run(self, install_signals=True):
        """Work until :meth:`stop` (or SIGTERM / SIGINT, when called on the
        main thread with ``install_signals``)."""
        if not self._functions:
            raise ValueError("no functions registered (use @worker.handler(kind))")
        previous = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
        threads = [threading.Thread(target=self._runner, name=f"jobd-run-{i}", daemon=True)
                   for i in range(self.concurrency)]
        claimer = threading.Thread(target=self._claimer, name="jobd-claim", daemon=True)
        acker = threading.Thread(target=self._acker, name="jobd-ack", daemon=True)
        beat = threading.Thread(target=self._heartbeats, name="jobd-heartbeat", daemon=True)
        for t in threads + [claimer, acker, beat]:
            t.start()
        log.info("jobd worker %s: queues %s, %d threads", self.name, ",".join(self.queues), self.concurrency)
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self._shut_down(claimer, threads)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("jobd worker %s stopped (%d succeeded, %d failed)", self.name, self.succeeded, self.failed)

    def _shut_down(self, claimer, threads):
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        give_up = time.monotonic() + self.shutdown_grace
        with self._cond:
            self._cond.wait_for(lambda: not self._running, timeout=max(0.0, give_up - time.monotonic()))
            left = list(self._running.values())
        # Past the grace: the functions are told to stop and their jobs given
        # back; whatever they return later is not sent.
        for job in left:
            job._set_stop("shutdown")
        # The claimer's last long poll: what it brings is given back too.
        claimer.join(self.wait + 5)
        with self._cond:
            left = list(self._running.values())
            self._running.clear()
            acks, self._acks = self._acks, []
        acks += [{"id": j.id, "token": j._token, "outcome": "release"} for j in left]
        for _ in range(3):
            try:
                if acks:
                    self._send_acks(acks)
                break
            except Exception as e:  # the daemon may be going down too
                log.warning("could not hand back %d jobs: %s", len(acks), e)
                time.sleep(0.5)
        try:
            self.client.request("POST", "/worker/stop", {"worker": self.name})
        except Exception as e:
            log.warning("could not leave the worker registry: %s", e)

    def _claim_body(self, n, acks):
        body = {"worker": self.name, "queues": self.queues, "n": n, "lease": self.lease,
                "wait": self.wait, "host": socket.gethostname(), "pid": os.getpid()}
        kinds = self._kinds_only or sorted(self._functions)
        body["kinds"] = kinds
        if acks:
            body["ack"] = acks
        return body

    def _claimer(self):
        backoff = 0.0
        while not self._stopping.is_set():
            with self._cond:
                # Room for jobs; with most threads busy, a moment for more to
                # finish, so that claims and acknowledgements go in batches.
                self._cond.wait_for(lambda: self._stopping.is_set() or len(self._running) < self.concurrency)
                if self._stopping.is_set():
                    return
                if self._running and self.concurrency - len(self._running) < max(1, self.concurrency // 4):
                    self._cond.wait(0.002)
                free = self.concurrency - len(self._running)
                if free <= 0:
                    continue
                acks, self._acks = self._acks, []
                self._poll_started = time.monotonic()
            try:
                answer = self.client.request("POST", "/worker/claim", self._claim_body(free, acks))
                backoff = 0.0
            except JobdError as e:
                if e.status in (400, 401, 403):
                    log.error("jobd refused the claim: %s", e.message)
                    self.stop()
                    return
                acks_back, backoff = acks, min(5.0, backoff * 2 or 0.2)
                log.warning("claim failed (%s); again in %.1fs", e, backoff)
            except Exception as e:
                acks_back, backoff = acks, min(5.0, backoff * 2 or 0.2)
                log.warning("claim failed (%s); again in %.1fs", e, backoff)
            else:
                acks_back = []
                self._outcomes(answer.get("acks") or [])
                jobs = [Job(self, j) for j in answer.get("jobs") or []]
                if self._stopping.is_set():
                    # Claimed as the worker stops: given back, never started.
                    with self._cond:
                        self._poll_started = None
                        self._acks += [{"id": j.id, "token": j._token, "outcome": "release"} for j in jobs]
                    return
                with self._cond:
                    self._poll_started = None
                    for job in jobs:
                        self._running[job.id] = job
                for job in jobs:
                    self._tasks.put(job)
            with self._cond:
                self._poll_started = None
                self._acks = acks_back + self._acks
            if backoff:
                self._stopping.wait(backoff)

    def _acker(self):
        """Sends acknowledgements the claimer cannot: while it waits in a
        long poll (a claim answered at once carries them itself)."""
        while not self._stopping.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._stopping.is_set() or self._acks, timeout=1.0)
                started = self._poll_started
                if not self._acks or started is None or time.monotonic() - started < 0.005:
                    if self._acks:
                        self._cond.wait(0.005)
                    continue
                acks, self._acks = self._acks, []
            try:
                self._send_acks(acks)
            except Exception as e:
                log.warning("acknowledging %d jobs failed (%s); will retry", len(acks), e)
                with self._cond:
                    self._acks = acks + self._acks
                self._stopping.wait(0.5)

    def _send_acks(self, acks):
        answer = self.client.request("POST", "/worker/ack", {"worker": self.name, "acks": acks})
        self._outcomes(answer.get("acks") or [])

    def _outcomes(self, outcomes):
        for o in outcomes:
            if o.get("outcome") == "lost":
                log.warning("job %s: lease lost before its outcome arrived; not stored", o.get("id"))
            elif o.get("outcome") == "timed_out":
                log.warning("job %s: finished after its timeout; failed as timed out", o.get("id"))

    def _heartbeats(self):
        while not self._stopping.wait(self.heartbeat_every):
            with self._cond:
                held = [(j.id, j._token) for j in self._running.values()]
            body = {"worker": self.name, "lease": self.lease,
                    "jobs": [{"id": i, "token": t} for i, t in held]}
            try:
                answer = self.client.request("POST", "/worker/heartbeat", body)
            except Exception as e:
                log.warning("heartbeat failed: %s", e)
                continue
            with self._cond:
                for s in answer.get("stop") or []:
                    job = self._running.get(s["id"])
                    if job is not None:
                        job._set_stop(s.get("reason") or "cancel")
                for job_id in answer.get("lost") or []:
                    job = self._running.get(job_id)
                    if job is not None:
                        log.warning("job %s: lease lost; its result will not be stored", job_id)
                        job._set_stop("lost")

    def _runner(self):
        while True:
            job = self._tasks.get()
            ack = self._run_one(job)
            with self._cond:
                # A job given back at shutdown, or whose lease was lost, is
                # no longer this worker's to acknowledge.
                mine = self._running.pop(job.id, None) is not None
                if ack is not None and mine and job._reason not in ("lost", "shutdown"):
                    self._acks.append(ack)
                    if ack["outcome"] == "complete":
                        self.succeeded += 1
                    else:
                        self.failed += 1
                self._cond.notify_all()

    def _run_one(self, job):
        if job._reason == "shutdown":
            return None
        if job._reason is not None:
            return self._fail(job, f"stopped before it started: {job._reason}", retryable=True)
        fn = self._functions.get(job.kind)
        if fn is None:
            return {"id": job.id, "token": job._token, "outcome": "release"}
        try:
            result = fn(job)
        except Permanent as e:
            return self._fail(job, str(e) or "failed", retryable=False)
        except Cancelled:
            return self._fail(job, f"stopped: {job._reason or 'cancelled'}", retryable=True)
        except Exception as e:
            if job.cancelled:
                return self._fail(job, f"stopped: {job._reason}: {type(e).__name__}: {e}", retryable=True)
            tail = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
            log.warning("job %s (%s) failed: %s: %s", job.id, job.kind, type(e).__name__, e)
            return self._fail(job, f"{type(e).__name__}: {e}\n{tail}"[:8000], retryable=True)
        if job._reason in ("cancel", "timeout"):
            return self._fail(job, f"stopped: {job._reason}", retryable=True)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as e:
            return self._fail(job, f"the result is not JSON: {e}", retryable=False)
        return {"id": job.id, "token": job._token, "outcome": "complete", "result": result}

    @staticmethod
    def _fail(job, error, retryable):
        return {"id": job.id, "token": job._token, "outcome": "fail", "error": error, "retryable": retryable}
