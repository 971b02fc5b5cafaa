// The Node client and worker against a real jobd serve.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client, Worker, Permanent, BadRequest, Forbidden, NotFound, Unauthorized } from "../index.js";
import { startDaemon, waitFor } from "./daemon.js";

const here = path.dirname(fileURLToPath(import.meta.url));
let d, producer, admin, workerClient;

before(async () => {
  d = await startDaemon();
  producer = new Client(d.url, d.producerToken);
  admin = new Client(d.url, d.adminToken);
  workerClient = new Client(d.url, d.workerToken);
});
after(async () => d && d.stop());

async function running(worker, body) {
  const done = worker.run({ signals: false });
  try {
    await body();
  } finally {
    worker.stop();
    await done;
  }
}

test("enqueue, get, list, cancel, retry, and errors carrying the API's message", async () => {
  const q = d.queue();
  const id = await producer.enqueue(q, "export_csv", { table: "scans" }, { tenant: "tenant-007", priority: 3 });
  const ids = await producer.enqueueMany([
    { queue: q, kind: "export_csv", payload: { table: "a" } },
    { queue: q, kind: "export_csv", delay: 60 },
  ]);
  assert.equal(ids.length, 2);
  const job = await producer.get(id);
  assert.equal(job.state, "ready");
  assert.deepEqual(job.payload, { table: "scans" });
  assert.equal((await producer.get(ids[1])).state, "scheduled");
  assert.deepEqual(new Set((await producer.list({ queue: q })).map((j) => j.id)), new Set([id, ...ids]));
  assert.equal(await admin.cancel(id), "cancelled");
  await admin.retry(id);
  assert.equal((await producer.get(id)).state, "ready");
  await assert.rejects(producer.enqueue(q, "bad kind!"), (e) => e instanceof BadRequest && /invalid kind/.test(e.apiMessage));
  await assert.rejects(producer.get(987654321), NotFound);
  await assert.rejects(new Client(d.url, "x".repeat(40)).get(1), Unauthorized);
  await assert.rejects(producer.cancel(id), (e) => e instanceof Forbidden && /role \(producer\)/.test(e.apiMessage));
  await assert.rejects(producer.enqueueMany([{ queue: q, kind: "k", colour: "red" }]), TypeError);
});

test("async functions by kind: results, progress, retryable and permanent failures", async () => {
  const q = d.queue();
  const w = new Worker(workerClient, [q], { concurrency: 4 });
  w.handle("export", async (job) => {
    await job.progress(50, "writing", { completed: 3, failed: 1, total: 5 });
    return { rows: job.payload.rows, tenant: job.tenant };
  });
  w.handle("flaky", async () => { throw new Error("SMTP 451 try later"); });
  w.handle("bad", () => { throw new Permanent("no such table"); });
  const ids = [];
  for (let i = 0; i < 10; i++) ids.push(await producer.enqueue(q, "export", { rows: i }, { tenant: "tenant-007" }));
  const flaky = await producer.enqueue(q, "flaky", null, { maxAttempts: 3 });
  const bad = await producer.enqueue(q, "bad", null, { maxAttempts: 3 });
  await running(w, async () => {
    for (const [i, id] of ids.entries()) {
      const job = await producer.wait(id, 20);
      assert.equal(job.state, "succeeded", JSON.stringify(job));
      assert.deepEqual(job.result, { rows: i, tenant: "tenant-007" });
      assert.deepEqual(job.progress.details, { completed: 3, failed: 1, total: 5 });
    }
    const j = await waitFor(async () => { const j = await producer.get(flaky); return j.state === "scheduled" && j; }, "a retry");
    assert.match(j.last_error, /Error: SMTP 451 try later/);
    const b = await producer.wait(bad, 20);
    assert.equal(b.state, "dead");
    assert.equal(b.attempts, 1);
    assert.equal(b.last_error, "no such table");
  });
  assert.equal(w.succeeded, 10);
});

test("cancelling a running function aborts its signal", async () => {
  const q = d.queue();
  const w = new Worker(workerClient, [q], { concurrency: 1, lease: 3 });
  let reason;
  w.handle("long", (job) => new Promise((resolve, reject) => {
    job.signal.addEventListener("abort", () => { reason = job.stopReason; reject(new Error("aborted")); });
  }));
  const id = await producer.enqueue(q, "long");
  await running(w, async () => {
    await waitFor(async () => (await producer.get(id)).state === "running", "the job to start");
    assert.equal(await admin.cancel(id), "requested");
    const job = await producer.wait(id, 20);
    assert.equal(job.state, "cancelled");
    assert.equal(reason, "cancel");
  });
});

test("a lost lease keeps the function's result out", async () => {
  const q = d.queue();
  // Heartbeats far apart: the 1 s lease runs out while the function works.
  const w = new Worker(workerClient, [q], { concurrency: 1, lease: 1, heartbeat: 60 });
  w.handle("slowly", async (job) => {
    if (job.attempt === 1) await new Promise((r) => setTimeout(r, 2500));
    return { attempt: job.attempt };
  });
  const id = await producer.enqueue(q, "slowly", null, { maxAttempts: 5 });
  await running(w, async () => {
    await waitFor(async () => (await producer.get(id)).state === "running", "the job to start");
    await new Promise((r) => setTimeout(r, 1500));
    d.jobd("reap"); // the lease expired: another try is due
    const job = await producer.wait(id, 30);
    assert.equal(job.state, "succeeded");
    assert.deepEqual(job.result, { attempt: 2 }, "the first try's late result was refused");
  });
});

function spawnWorker(queue, lease, markers) {
  return spawn(process.execPath, [path.join(here, "worker_proc.js"), d.url, d.workerToken, queue, String(lease), markers], { stdio: "inherit" });
}

test("kill -9 mid-job: another worker finishes it after the lease; SIGTERM stops cleanly", async () => {
  const q = d.queue();
  const markers = fs.mkdtempSync(path.join(os.tmpdir(), "jobd-markers-"));
  const first = spawnWorker(q, 2, markers);
  const id = await producer.enqueue(q, "slow", { secs: 60 }, { maxAttempts: 3 });
  await waitFor(() => fs.readdirSync(markers).includes(`${id}.${first.pid}`), "the job to start");
  first.kill("SIGKILL");
  await new Promise((r) => first.once("exit", r));
  const second = spawnWorker(q, 2, markers);
  try {
    const job = await producer.wait(id, 40);
    assert.equal(job.state, "succeeded", JSON.stringify(job));
    assert.deepEqual(job.result, { pid: second.pid, attempt: 2 });
    assert.equal(job.attempt_log[0].outcome, "lost");
  } finally {
    second.kill("SIGTERM");
    const code = await new Promise((r) => (second.exitCode !== null ? r(second.exitCode) : second.once("exit", r)));
    assert.equal(code, 0);
  }
});
