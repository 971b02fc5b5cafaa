// A real `jobd serve` for the tests: a temporary data directory, a free
// loopback port, a worker and a producer token.

import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");
export const QUEUES = Array.from({ length: 20 }, (_, i) => `js${i}`);

export function jobdBin() {
  const bin = process.env.JOBD_BIN || path.join(repo, "target/debug/jobd");
  if (!fs.existsSync(bin)) throw new Error(`no jobd binary at ${bin}: cargo build first, or set JOBD_BIN`);
  return bin;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export async function startDaemon() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "jobd-node-"));
  const port = await freePort();
  const adminToken = randomBytes(32).toString("hex");
  const config = path.join(root, "jobd.toml");
  fs.writeFileSync(
    config,
    `data_dir = "${path.join(root, "data")}"\nlisten = "127.0.0.1:${port}"\napi_token = "${adminToken}"\n` +
      `scheduler = false\n\n[queues]\n${QUEUES.map((q) => `${q} = 0`).join("\n")}\n`,
    { mode: 0o600 },
  );
  const log = fs.openSync(path.join(root, "jobd.log"), "w");
  const proc = spawn(jobdBin(), ["--config", config, "serve"], { stdio: ["ignore", log, log] });
  const url = `http://127.0.0.1:${port}`;
  const giveUp = Date.now() + 30000;
  for (;;) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {}
    if (proc.exitCode !== null || Date.now() > giveUp) {
      throw new Error(`jobd serve did not start:\n${fs.readFileSync(path.join(root, "jobd.log"), "utf8")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const jobd = (...args) => execFileSync(jobdBin(), ["--config", config, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const token = (name, role) => jobd("token", "add", name, "--role", role).trim();
  const free = [...QUEUES];
  return {
    root,
    url,
    adminToken,
    workerToken: token("nodeworkers", "worker"),
    producerToken: token("exports", "producer"),
    jobd,
    queue: () => free.pop(),
    async stop() {
      proc.kill("SIGTERM");
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.once("exit", r)));
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

export async function waitFor(predicate, what = "condition", timeout = 20000) {
  const giveUp = Date.now() + timeout;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > giveUp) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
