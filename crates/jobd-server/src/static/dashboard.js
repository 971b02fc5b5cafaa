"use strict";
// Everything that comes from the queue (names, payloads, errors) is put in
// the page with textContent, never innerHTML: it is shown as text.
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("jobd-token") || "";
let openJob = null;

async function api(method, path, body) {
  const init = { method, headers: { "Authorization": "Bearer " + token } };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const r = await fetch("/api/v1" + path, init);
  const answer = await r.json().catch(() => ({}));
  if (r.status === 401) { showLogin("That token was not accepted."); throw new Error("unauthorized"); }
  if (!r.ok) { const e = new Error(answer.error || ("HTTP " + r.status)); e.status = r.status; throw e; }
  return answer;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function cell(tr, text, cls) { const td = el("td", text, cls); tr.appendChild(td); return td; }
function iso(ms) { return ms ? new Date(ms).toISOString().replace(".000Z", "Z") : "–"; }
function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function showLogin(msg) {
  $("app").hidden = true; $("login").hidden = false;
  $("login-error").textContent = msg || "";
}

async function refreshQueues() {
  const stats = await api("GET", "/queues");
  const rows = stats.queues.map((q) => {
    const tr = el("tr"); tr.dataset.queue = q.queue;
    cell(tr, q.queue);
    cell(tr, (q.paused ? "paused" : "active") + (q.concurrency ? " · at most " + q.concurrency + " at once" : ""));
    for (const k of ["scheduled", "ready", "running", "succeeded", "dead", "cancelled"]) {
      const td = cell(tr, q[k], "num"); td.dataset.count = k;
    }
    cell(tr, q.oldest_ready_age_ms == null ? "–" : (q.oldest_ready_age_ms / 1000).toFixed(1) + " s");
    const b = el("button", q.paused ? "Resume" : "Pause");
    b.onclick = () => api("POST", "/queues/" + encodeURIComponent(q.queue) + (q.paused ? "/resume" : "/pause")).then(refresh);
    tr.appendChild(el("td")).appendChild(b);
    return tr;
  });
  fill($("queues").tBodies[0], rows);
  // On a big file the finished counts are re-read every few seconds only.
  const age = stats.finished_age_ms >= 1000 ? " · finished counts as of " + Math.round(stats.finished_age_ms / 1000) + " s ago" : "";
  $("workers").textContent = stats.live_workers + " live worker process(es)" + age;
  const total = stats.queues.reduce((n, q) => n + q.ready + q.running, 0);
  $("summary").textContent = stats.queues.length + " queues · " + total + " waiting or running";
}

// The job list: filtered by the server, a page at a time, newest first.
// `pages` holds the `before_id` of each page from the newest to the one shown
// (null: the newest), so the page shown stays put while it refreshes.
const PAGE = 100;
const FILTERS = [["filter-state", "state"], ["filter-queue", "queue"], ["filter-kind", "kind"],
                 ["filter-tenant", "tenant"], ["filter-error", "error"]];
let pages = [null];
let shown = [];
let listSeq = 0;

// The filters as set: { state, queue, kind, tenant, error }, empty ones left out.
function selection() {
  const sel = {};
  for (const [id, key] of FILTERS) {
    const v = $(id).value.trim();
    if (v) sel[key] = v;
  }
  return sel;
}

async function refreshJobs() {
  const seq = ++listSeq;
  const params = new URLSearchParams({ limit: String(PAGE + 1), ...selection() });
  const before = pages[pages.length - 1];
  if (before !== null) params.set("before_id", String(before));
  const { jobs } = await api("GET", "/jobs?" + params);
  if (seq !== listSeq) return; // a newer request (other filters, another page) went out
  shown = jobs.slice(0, PAGE);
  fill($("jobs").tBodies[0], shown.map((j) => {
    const tr = el("tr"); tr.dataset.job = j.id;
    const a = el("a", j.id); a.onclick = () => { openJob = j.id; refreshJob(); };
    tr.appendChild(el("td")).appendChild(a);
    cell(tr, j.queue); cell(tr, j.kind); cell(tr, j.state, "state-" + j.state);
    cell(tr, j.attempts + "/" + j.attempt_limit, "num"); cell(tr, j.tenant || "");
    cell(tr, j.progress_percent == null ? "" : Math.round(j.progress_percent) + "%", "num");
    cell(tr, j.last_error || "", "error");
    return tr;
  }));
  // Bulk actions act on every job the filters match, on every page.
  const state = $("filter-state").value;
  $("jobs-retry-all").disabled = !(shown.length && (state === "dead" || state === "cancelled"));
  $("jobs-cancel-all").disabled = !(shown.length && ["", "scheduled", "ready", "running"].includes(state));
  $("jobs-older").disabled = jobs.length <= PAGE;
  $("jobs-newer").disabled = pages.length === 1;
  $("jobs-page").textContent = shown.length === 0
    ? (pages.length === 1 ? "no job matches" : "no older job matches")
    : "page " + pages.length + " · jobs #" + shown[0].id + " to #" + shown[shown.length - 1].id;
}

function listJobsFromStart() { pages = [null]; refreshJobs().catch(showError); }
function showError(e) { if (e.message !== "unauthorized") $("status").textContent = "error: " + e.message; }

async function refreshJob() {
  if (openJob === null) { $("job").hidden = true; return; }
  let j;
  try { j = await api("GET", "/jobs/" + openJob); } catch (e) {
    if (e.status === 404) { openJob = null; $("job").hidden = true; } // purged, or never was
    throw e;
  }
  $("job").hidden = false;
  $("job-id").textContent = "#" + j.id;
  $("job-state").textContent = j.state; $("job-state").className = "state-" + j.state;
  const pct = j.progress.percent || 0;
  $("job-bar").style.width = Math.max(0, Math.min(100, pct)) + "%";
  $("job-progress").textContent = (j.progress.percent == null ? "" : pct.toFixed(0) + "% ") + (j.progress.stage || "") + (j.progress.detail ? " — " + j.progress.detail : "");
  $("job-kind").textContent = j.queue + "/" + j.kind;
  $("job-tenant").textContent = j.tenant || "–";
  $("job-payload").textContent = JSON.stringify(j.payload, null, 2);
  $("job-result").textContent = j.result == null ? "–" : JSON.stringify(j.result, null, 2);
  $("job-error").textContent = j.last_error || "–";
  $("job-retry").disabled = !(j.state === "dead" || j.state === "cancelled");
  $("job-cancel").disabled = !(j.state === "scheduled" || j.state === "ready" || j.state === "running");
  fill($("job-attempts").tBodies[0], (j.attempt_log || []).map((a) => {
    const tr = el("tr");
    cell(tr, a.attempt); cell(tr, a.worker || ""); cell(tr, a.outcome); cell(tr, iso(a.started_at)); cell(tr, a.error || "", "error");
    return tr;
  }));
}

async function refreshSchedules() {
  const { schedules } = await api("GET", "/schedules");
  fill($("schedules").tBodies[0], schedules.map((s) => {
    const tr = el("tr");
    cell(tr, s.name);
    cell(tr, s.when.cron !== undefined ? s.when.cron : "every " + (s.when.every.secs) + " s");
    cell(tr, s.timezone); cell(tr, s.queue + "/" + s.kind); cell(tr, s.enabled ? "yes" : "paused");
    cell(tr, iso(s.next_fire_at)); cell(tr, iso(s.last_fire_at));
    return tr;
  }));
}

async function refresh() {
  try {
    await Promise.all([refreshQueues(), refreshJobs(), refreshJob(), refreshSchedules()]);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) { showError(e); }
}

$("save-token").onclick = async () => {
  token = $("token").value.trim();
  try {
    await api("GET", "/queues");
    localStorage.setItem("jobd-token", token);
    $("login").hidden = true; $("app").hidden = false;
    refresh();
  } catch (e) { if (e.message !== "unauthorized") showLogin(e.message); }
};
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("save-token").click(); });
$("forget-token").onclick = () => { localStorage.removeItem("jobd-token"); token = ""; showLogin(""); };
$("job-retry").onclick = () => api("POST", "/jobs/" + openJob + "/retry").then(refresh).catch((e) => $("status").textContent = e.message);
$("job-cancel").onclick = () => api("POST", "/jobs/" + openJob + "/cancel").then(refresh).catch((e) => $("status").textContent = e.message);
function describe(sel) {
  const parts = Object.entries(sel).filter(([k]) => k !== "state").map(([k, v]) => k + " " + JSON.stringify(v));
  return parts.length ? " with " + parts.join(", ") : "";
}
function jobs(n) { return n + (n === 1 ? " job" : " jobs"); }
// A bulk action asks the server first how many jobs it would touch (a dry
// run changes nothing), and says so in its confirm.
$("jobs-retry-all").onclick = async () => {
  const sel = selection();
  try {
    const would = await api("POST", "/jobs/retry?dry_run=true", sel);
    if (would.would_retry === 0) { $("jobs-bulk").textContent = "no " + sel.state + " job matches"; return; }
    if (!confirm("Retry " + jobs(would.would_retry) + " (" + sel.state + describe(sel) +
                 ") — on every page, not only this one?")) return;
    const r = await api("POST", "/jobs/retry", sel);
    $("jobs-bulk").textContent = r.retried + " retried" +
      (r.key_taken.length ? ", " + r.key_taken.length + " left (their unique key is taken)" : "");
    refresh();
  } catch (e) { $("status").textContent = "error: " + e.message; }
};
$("jobs-cancel-all").onclick = async () => {
  const sel = selection();
  const which = sel.state ? sel.state : "unfinished";
  try {
    const would = await api("POST", "/jobs/cancel?dry_run=true", sel);
    if (would.would_cancel + would.would_ask_to_stop === 0) {
      $("jobs-bulk").textContent = "no " + which + " job matches"; return;
    }
    const what = [];
    if (would.would_cancel) what.push("cancel " + jobs(would.would_cancel) + " waiting");
    if (would.would_ask_to_stop) what.push("ask " + jobs(would.would_ask_to_stop) + " running to stop");
    const ask = what.join(" and ");
    if (!confirm(ask[0].toUpperCase() + ask.slice(1) + " (" + which + describe(sel) +
                 ") — on every page, not only this one?")) return;
    const r = await api("POST", "/jobs/cancel", sel);
    $("jobs-bulk").textContent = r.cancelled + " cancelled, " + r.requested + " running asked to stop";
    refresh();
  } catch (e) { $("status").textContent = "error: " + e.message; }
};
$("job-close").onclick = () => { openJob = null; refreshJob(); };
for (const [id] of FILTERS) $(id).addEventListener("input", listJobsFromStart);
$("jobs-older").onclick = () => {
  if (shown.length) { pages.push(shown[shown.length - 1].id); refreshJobs().catch(showError); }
};
$("jobs-newer").onclick = () => { if (pages.length > 1) { pages.pop(); refreshJobs().catch(showError); } };
$("goto-open").onclick = () => {
  const id = $("goto-job").value.trim().replace(/^#/, "");
  if (!/^[0-9]+$/.test(id)) { $("status").textContent = "error: a job number, like 42"; return; }
  openJob = Number(id);
  refreshJob().catch(showError);
};
$("goto-job").addEventListener("keydown", (e) => { if (e.key === "Enter") $("goto-open").click(); });

if (token) { $("login").hidden = true; $("app").hidden = false; refresh(); }
setInterval(() => { if (!$("app").hidden) refresh(); }, 2000);
