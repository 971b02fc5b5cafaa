"""The Python worker over HTTP, beside RQ on Redis in the same run.

    cargo build --release -p jobd-cli
    JOBD_BIN=target/release/jobd python3 clients/python/bench/drain.py

1. Drain: N no-op jobs (enqueued first, in batches of 1000) drained by one
   Worker process (this one) at the given concurrency; jobs/s from the
   worker's start to its last acknowledgement, median of the rounds.
2. RQ beside it, where `redis-server` and the `rq` package are installed:
   the same no-op function, `rq worker --burst` (it forks a process per
   job, as RQ runs by default) and `--worker-class rq.SimpleWorker` (no
   fork); jobs/s from the worker's start to its exit.  Says so when absent.
3. Latency: jobs enqueued at a steady rate (500/s) by another process
   while a long-polling worker waits; enqueue → start (the function's
   first line), p50 and p99.
"""

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from daemon import Daemon, free_port  # noqa: E402
from jobd import Client, Worker  # noqa: E402


def drain(d, n, concurrency, queue):
    producer = Client(d.url, d.producer_token)
    for i in range(0, n, 1000):
        producer.enqueue_many([{"queue": queue, "kind": "noop", "payload": {"i": j}} for j in range(i, min(n, i + 1000))])
    w = Worker(Client(d.url, d.worker_token), [queue], concurrency=concurrency, wait=1.0)
    w.register("noop", lambda job: None)
    db = sqlite3.connect(f"file:{d.root / 'data' / 'queue.db'}?mode=ro", uri=True)
    started = time.perf_counter()
    t = threading.Thread(target=w.run, kwargs={"install_signals": False})
    t.start()
    # Done when the daemon holds every acknowledgement (read off the file).
    count = "SELECT count(*) FROM jobs WHERE queue = ? AND state = 'succeeded'"
    while db.execute(count, (queue,)).fetchone()[0] < n:
        time.sleep(0.02)
    took = time.perf_counter() - started
    db.close()
    w.stop()
    t.join()
    return n / took


def latency(d, rate, secs, queue):
    w = Worker(Client(d.url, d.worker_token), [queue], concurrency=8, wait=5.0)
    seen = []
    w.register("ping", lambda job: seen.append(time.time() - job.payload["t"]))
    t = threading.Thread(target=w.run, kwargs={"install_signals": False})
    t.start()
    time.sleep(1.0)  # the worker waits in its long poll
    n = int(rate * secs)
    out = subprocess.run([sys.executable, str(HERE / "produce.py"), d.url, d.producer_token, queue, str(rate), str(n)],
                         check=True, capture_output=True, text=True)
    achieved = float(out.stdout.strip())
    while len(seen) < n:
        time.sleep(0.01)
    w.stop()
    t.join()
    ms = sorted(x * 1000 for x in seen)
    return ms[len(ms) // 2], ms[int(len(ms) * 0.99)], achieved


def rq_drain(n, simple):
    """RQ on a local Redis: `rq worker --burst` on n no-op jobs."""
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError:
        return None, "the rq package is not installed (pip install rq)"
    server = shutil.which("redis-server")
    if not server:
        return None, "redis-server is not installed (apt-get install redis-server)"
    from redis import Redis
    from rq import Queue
    port = free_port()
    tmp = tempfile.mkdtemp()
    redis_proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = Redis(port=port)
        for _ in range(100):
            try:
                conn.ping()
                break
            except Exception:
                time.sleep(0.05)
        q = Queue("bench", connection=conn)
        sys.path.insert(0, str(HERE))
        import rq_tasks
        for i in range(n):
            q.enqueue(rq_tasks.noop, i)
        cmd = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--quiet", "-u", f"redis://127.0.0.1:{port}", "bench"]
        if simple:
            cmd[5:5] = ["--worker-class", "rq.SimpleWorker"]
        env = dict(os.environ, PYTHONPATH=str(HERE))
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        took = time.perf_counter() - started
        done = len(q.finished_job_registry)
        if done != n:
            return None, f"rq finished {done} of {n} jobs"
        return n / took, None
    finally:
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rq-jobs", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--latency-secs", type=float, default=6)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jobd-bench-"))
    queues = [f"bench{i}" for i in range(a.rounds)] + ["ping"]
    d = Daemon(root, queues=queues)
    print(f"jobd {d.url} ({os.environ.get('JOBD_BIN', 'target/debug/jobd')}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {socket.gethostname()}")
    try:
        rates = []
        for r in range(a.rounds):
            rate = drain(d, a.jobs, a.concurrency, f"bench{r}")
            rates.append(rate)
            print(f"drain round {r + 1}: {a.jobs} no-op jobs, concurrency {a.concurrency}: {rate:,.0f} jobs/s")
        print(f"drain median: {statistics.median(rates):,.0f} jobs/s")
        for simple in (False, True) if a.rq_jobs else ():
            rate, why = rq_drain(a.rq_jobs, simple)
            name = "rq worker --burst" + (" --worker-class rq.SimpleWorker" if simple else " (forks per job)")
            if rate is None:
                print(f"RQ: not measured: {why}")
                break
            print(f"RQ {name}: {a.rq_jobs} no-op jobs: {rate:,.0f} jobs/s "
                  f"(jobd/RQ {statistics.median(rates) / rate:.0f}x)")
        p50, p99, got = latency(d, a.rate, a.latency_secs, "ping")
        print(f"enqueue -> start at {got:,.0f} jobs/s with a long-polling worker: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
