// Client and worker for jobd, the durable job queue in one SQLite file.
// Node 18 or later, no dependencies (the global fetch).
//
//   Client — enqueue, get, wait for, list, cancel and retry jobs.
//   Worker — run your own async functions on jobs: registered by kind,
//            `concurrency` at once, batched claims and acknowledgements,
//            heartbeats, progress, cancellation through an AbortSignal,
//            graceful stop on SIGTERM.

import os from "node:os";

/** An error answer of the API: `status` and the API's `message`. */
export class JobdError extends Error {
  constructor(status, message) {
    super(`jobd: ${status}: ${message}`);
    this.name = "JobdError";
    this.status = status;
    this.apiMessage = message;
  }
}
export class BadRequest extends JobdError {}
export class Unauthorized extends JobdError {}
export class Forbidden extends JobdError {}
export class NotFound extends JobdError {}
export class Conflict extends JobdError {}
const ERRORS = { 400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict };

/** States in which a job will not change again by itself. */
export const FINISHED = ["succeeded", "dead", "cancelled"];

export class Client {
  /** jobd's HTTP API at `url` with `token`. */
  constructor(url = "http://127.0.0.1:7878", token) {
    if (!token) throw new TypeError("a jobd API token is needed (jobd token add NAME --role ...)");
    this.url = String(url).replace(/\/+$/, "");
    this._headers = {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json",
    };
  }

  /** One API call: the answer's JSON, or a JobdError. */
  async request(method, path, body, query) {
    let url = `${this.url}/api/v1${path}`;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, String(v));
      const text = q.toString();
      if (text) url += `?${text}`;
    }
    const resp = await fetch(url, {
      method,
      headers: this._headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let value = null;
    if (text) {
      try {
        value = JSON.parse(text);
      } catch {
        value = text;
      }
    }
    if (resp.status >= 400) {
      const message = value && typeof value === "object" && value.error ? value.error : String(text);
      const Err = ERRORS[resp.status] || JobdError;
      throw new Err(resp.status, message);
    }
    return value;
  }

  /** Enqueue one job; its id.  `delay` and `timeout` in seconds. */
  async enqueue(queue, kind, payload, opts = {}) {
    return (await this.request("POST", "/jobs", jobBody({ queue, kind, payload, ...opts }))).id;
  }

  /** Enqueue many jobs in one transaction (all or none); their ids. */
  async enqueueMany(jobs) {
    return (await this.request("POST", "/jobs", jobs.map(jobBody))).ids;
  }

  /** The job: state, progress, tries, result, last error. */
  async get(id) {
    return this.request("GET", `/jobs/${Number(id)}`);
  }

  /** The job once it has finished, or as it is after `timeout` seconds.
   * The server answers as soon as the job finishes: no polling. */
  async wait(id, timeout) {
    const giveUp = timeout === undefined ? Infinity : Date.now() + timeout * 1000;
    for (;;) {
      const left = Math.max(0, Math.min(30, (giveUp - Date.now()) / 1000));
      const job = await this.request("GET", `/jobs/${Number(id)}`, undefined, { wait: left.toFixed(3) });
      if (FINISHED.includes(job.state) || Date.now() >= giveUp) return job;
    }
  }

  /** Jobs, newest first, filtered on the server. */
  async list(filter = {}) {
    const { queue, state, kind, tenant, error, beforeId, limit } = filter;
    return (await this.request("GET", "/jobs", undefined, { queue, state, kind, tenant, error, before_id: beforeId, limit })).jobs;
  }

  /** Cancel a job (a running one is asked to stop); the outcome. */
  async cancel(id) {
    return (await this.request("POST", `/jobs/${Number(id)}/cancel`)).outcome;
  }

  /** Run a dead or cancelled job again. */
  async retry(id) {
    await this.request("POST", `/jobs/${Number(id)}/retry`);
  }
}

const JOB_FIELDS = ["queue", "kind", "payload", "tenant", "priority", "delay", "maxAttempts", "timeout", "uniqueKey"];

function jobBody(job) {
  for (const k of Object.keys(job)) {
    if (!JOB_FIELDS.includes(k)) throw new TypeError(`unknown job field ${JSON.stringify(k)}`);
  }
  const body = { queue: job.queue, kind: job.kind };
  if (job.payload !== undefined) body.payload = job.payload;
  if (job.tenant !== undefined) body.tenant = job.tenant;
  if (job.priority !== undefined) body.priority = job.priority;
  if (job.delay !== undefined) body.delay_ms = Math.round(job.delay * 1000);
  if (job.maxAttempts !== undefined) body.max_attempts = job.maxAttempts;
  if (job.timeout !== undefined) body.timeout_ms = Math.round(job.timeout * 1000);
  if (job.uniqueKey !== undefined) body.unique_key = job.uniqueKey;
  return body;
}

/** Throw from a function to fail its job for good: no retry. */
export class Permanent extends Error {
  constructor(message) {
    super(message);
    this.name = "Permanent";
  }
}

/** A claimed job, as a function gets it. */
export class Job {
  constructor(worker, claimed) {
    this.id = claimed.id;
    this.queue = claimed.queue;
    this.kind = claimed.kind;
    this.payload = claimed.payload;
    this.attempt = claimed.attempt;
    this.maxAttempts = claimed.max_attempts;
    this.tenant = claimed.tenant ?? null;
    /** When the try times out (ms since the epoch), or null. */
    this.deadline = claimed.deadline ?? null;
    this._token = claimed.token;
    this._worker = worker;
    this._abort = new AbortController();
    /** Aborted once the function should stop; its reason says why:
     * "cancel", "timeout", "lost" or "shutdown". */
    this.signal = this._abort.signal;
  }

  get cancelled() {
    return this.signal.aborted;
  }

  get stopReason() {
    return this.signal.aborted ? this.signal.reason : null;
  }

  /** Report progress: percent 0–100, a stage name, an object of details. */
  async progress(percent, stage, details) {
    const body = { token: this._token };
    if (percent !== undefined && percent !== null) body.percent = Number(percent);
    if (stage !== undefined && stage !== null) body.stage = String(stage);
    if (details !== undefined && details !== null) body.details = details;
    try {
      await this._worker.client.request("POST", `/jobs/${this.id}/progress`, body);
    } catch (e) {
      if (e instanceof Conflict) this._stop("lost");
      throw e;
    }
  }

  _stop(reason) {
    if (!this._abort.signal.aborted) this._abort.abort(reason);
  }
}

export class Worker {
  /**
   * Runs registered functions on jobs of `queues`.
   * Options: concurrency (4), name (host-pid), lease (30 s), wait (5 s, a
   * claim's long poll), shutdownGrace (30 s), heartbeat (lease / 3).
   */
  constructor(client, queues, opts = {}) {
    this.client = client;
    this.queues = typeof queues === "string" ? [queues] : [...queues];
    if (this.queues.length === 0) throw new TypeError("a worker serves at least one queue");
    this.concurrency = opts.concurrency ?? 4;
    this.name = opts.name ?? `${os.hostname()}-${process.pid}`;
    this.lease = opts.lease ?? 30;
    this.wait = opts.wait ?? 5;
    this.shutdownGrace = opts.shutdownGrace ?? 30;
    this.heartbeatEvery = opts.heartbeat ?? Math.max(0.5, this.lease / 3);
    this.succeeded = 0;
    this.failed = 0;
    this._functions = new Map();
    this._running = new Map();
    this._acks = [];
    this._stopping = false;
    this._polling = null;
    this._wake = null;
  }

  /** Run `fn(job)` (sync or async) for jobs of `kind`. */
  handle(kind, fn) {
    this._functions.set(kind, fn);
    return this;
  }

  /** Claim nothing more; run() resolves once running functions finished
   * (or the grace passed: the rest are given back). */
  stop() {
    this._stopping = true;
    this._poke();
  }

  _poke() {
    const wake = this._wake;
    this._wake = null;
    if (wake) wake();
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      this._wake = resolve;
      if (ms !== Infinity) setTimeout(resolve, ms);
    });
  }

  /** Work until stop() (or SIGTERM / SIGINT with `signals`). */
  async run({ signals = true } = {}) {
    if (this._functions.size === 0) throw new TypeError("no functions registered (worker.handle(kind, fn))");
    const onSignal = () => this.stop();
    if (signals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    const beat = setInterval(() => this._heartbeat().catch(() => {}), this.heartbeatEvery * 1000);
    const acker = setInterval(() => this._ackWhilePolling().catch(() => {}), 5);
    try {
      await this._claimLoop();
      await this._shutDown();
    } finally {
      clearInterval(beat);
      clearInterval(acker);
      if (signals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  async _claimLoop() {
    let backoff = 0;
    while (!this._stopping) {
      let free = this.concurrency - this._running.size;
      if (free <= 0) {
        await this._sleep(Infinity);
        continue;
      }
      // With most slots busy, a moment for more to finish, so that claims
      // and acknowledgements go in batches.
      if (this._running.size && free < Math.max(1, this.concurrency >> 2)) {
        await this._sleep(2);
        free = this.concurrency - this._running.size;
        if (free <= 0 || this._stopping) continue;
      }
      const ack = this._acks.splice(0);
      const body = {
        worker: this.name,
        queues: this.queues,
        kinds: [...this._functions.keys()],
        n: free,
        lease: this.lease,
        wait: this.wait,
        host: os.hostname(),
        pid: process.pid,
      };
      if (ack.length) body.ack = ack;
      this._polling = Date.now();
      let answer;
      try {
        answer = await this.client.request("POST", "/worker/claim", body);
        backoff = 0;
      } catch (e) {
        this._polling = null;
        this._acks.unshift(...ack);
        if (e instanceof JobdError && [400, 401, 403].includes(e.status)) {
          this._stopping = true;
          throw e;
        }
        backoff = Math.min(5000, backoff * 2 || 200);
        await this._sleep(backoff);
        continue;
      }
      this._polling = null;
      const jobs = (answer.jobs || []).map((j) => new Job(this, j));
      if (this._stopping) {
        for (const j of jobs) this._acks.push({ id: j.id, token: j._token, outcome: "release" });
        break;
      }
      for (const job of jobs) {
        this._running.set(job.id, job);
        this._runOne(job);
      }
    }
  }

  async _runOne(job) {
    let ack;
    try {
      const result = await this._functions.get(job.kind)(job);
      if (job.stopReason === "cancel" || job.stopReason === "timeout") {
        ack = this._fail(job, `stopped: ${job.stopReason}`, true);
      } else {
        let text;
        try {
          text = JSON.stringify(result === undefined ? null : result);
        } catch (e) {
          text = undefined;
        }
        ack = text === undefined
          ? this._fail(job, "the result is not JSON", false)
          : { id: job.id, token: job._token, outcome: "complete", result: result === undefined ? null : result };
      }
    } catch (e) {
      if (e instanceof Permanent) ack = this._fail(job, e.message || "failed", false);
      else if (job.cancelled) ack = this._fail(job, `stopped: ${job.stopReason}: ${e && e.message}`, true);
      else ack = this._fail(job, `${(e && e.name) || "Error"}: ${e && e.message}\n${String((e && e.stack) || "").split("\n").slice(1, 4).join("\n")}`.slice(0, 8000), true);
    }
    const mine = this._running.delete(job.id);
    if (mine && !["lost", "shutdown"].includes(job.stopReason)) {
      this._acks.push(ack);
      if (ack.outcome === "complete") this.succeeded++;
      else this.failed++;
    }
    this._poke();
  }

  _fail(job, error, retryable) {
    return { id: job.id, token: job._token, outcome: "fail", error, retryable };
  }

  async _ackWhilePolling() {
    if (!this._acks.length || this._polling === null || Date.now() - this._polling < 5) return;
    const acks = this._acks.splice(0);
    try {
      await this.client.request("POST", "/worker/ack", { worker: this.name, acks });
    } catch {
      this._acks.unshift(...acks);
    }
  }

  async _heartbeat() {
    const held = [...this._running.values()];
    const answer = await this.client.request("POST", "/worker/heartbeat", {
      worker: this.name,
      lease: this.lease,
      jobs: held.map((j) => ({ id: j.id, token: j._token })),
    });
    for (const s of answer.stop || []) this._running.get(s.id)?._stop(s.reason || "cancel");
    for (const id of answer.lost || []) this._running.get(id)?._stop("lost");
  }

  async _shutDown() {
    const giveUp = Date.now() + this.shutdownGrace * 1000;
    while (this._running.size && Date.now() < giveUp) await this._sleep(Math.min(100, giveUp - Date.now()));
    const left = [...this._running.values()];
    this._running.clear();
    for (const j of left) j._stop("shutdown");
    const acks = this._acks.splice(0).concat(left.map((j) => ({ id: j.id, token: j._token, outcome: "release" })));
    if (acks.length) await this.client.request("POST", "/worker/ack", { worker: this.name, acks }).catch(() => {});
    await this.client.request("POST", "/worker/stop", { worker: this.name }).catch(() => {});
  }
}
