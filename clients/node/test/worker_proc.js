// A worker process for the crash and shutdown tests: `slow` jobs write a
// marker when they start; the first try takes payload.secs, a retry is quick.
import fs from "node:fs";
import path from "node:path";
import { Client, Worker } from "../index.js";

const [url, token, queue, lease, markers] = process.argv.slice(2);
const worker = new Worker(new Client(url, token), [queue], { concurrency: 2, lease: Number(lease), wait: 1, shutdownGrace: 10 });
worker.handle("slow", async (job) => {
  fs.writeFileSync(path.join(markers, `${job.id}.${process.pid}`), "started");
  const ms = job.attempt === 1 ? job.payload.secs * 1000 : 50;
  await new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    job.signal.addEventListener("abort", () => { clearTimeout(t); resolve(); });
  });
  return { pid: process.pid, attempt: job.attempt };
});
await worker.run();
