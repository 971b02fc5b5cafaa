// A worker of your own async functions: `node examples/worker.js` with
// JOBD_URL and JOBD_TOKEN (a worker token: jobd token add node --role worker).
// Its queue is one the daemon leaves to remote workers ([queues] exports = 0).
import { Client, Worker, Permanent } from "../index.js";

const worker = new Worker(new Client(process.env.JOBD_URL ?? "http://127.0.0.1:7878", process.env.JOBD_TOKEN), ["exports"], { concurrency: 8 });

worker.handle("export_csv", async (job) => {
  const { table, rows = 1000 } = job.payload;
  if (!table) throw new Permanent("payload.table is required"); // no retry: it will never work
  for (let done = 0; done < rows; done += 250) {
    if (job.cancelled) return null; // cancelled, timed out, or the lease was lost
    await job.progress((100 * done) / rows, "writing", { completed: done, total: rows });
    await new Promise((r) => setTimeout(r, 10));
  }
  return { table, rows };
});

await worker.run(); // until SIGTERM / Ctrl-C
