"use strict";
// jobd's console: one page, a view per concern, each with its own URL
// (`?view=jobs&state=dead`), so a reload or a shared link opens the same
// view.  Every URL is relative (`api/v1/...`, `?view=...`): the console works
// under any path prefix a reverse proxy puts it behind.
//
// Everything that comes from the queue (names, payloads, errors) is put in
// the page with textContent, never innerHTML: it is shown as text.
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let token = localStorage.getItem("jobd-token") || "";
let role = null;
let route = parseRoute(location.search);
const VIEWS = ["overview", "queues", "jobs", "job", "workers", "schedules", "schedule"];

function parseRoute(search) {
  const params = new URLSearchParams(search);
  return { view: params.get("view") || "overview", params };
}

// `?view=<view>&<params>`, empty params left out.
function link(view, params) {
  const p = new URLSearchParams([["view", view]]);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && String(v) !== "") p.set(k, String(v));
  }
  return "?" + p.toString();
}

function go(url, replace) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  route = parseRoute(new URL(url, location.href).search);
  show();
}

async function api(method, path, body) {
  const init = { method, headers: { "Authorization": "Bearer " + token } };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const r = await fetch("api/v1" + path, init);
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
function linkCell(tr, text, href, cls) {
  const td = el("td", null, cls); const a = el("a", text); a.href = href; a.dataset.nav = "";
  td.appendChild(a); tr.appendChild(td); return td;
}
function button(text, onclick, cls) {
  const b = el("button", text, cls); b.type = "button"; b.onclick = onclick; return b;
}
function fill(tbody, rows) { tbody.replaceChildren(...rows); }
function iso(ms) { return ms ? new Date(ms).toISOString().replace(".000Z", "Z").replace("T", " ") : "–"; }
function clockTime(ms) { const d = new Date(ms); return d.toISOString().slice(11, 16); }
function dur(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  return (ms / 3600000).toFixed(1) + " h";
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
// What an action or an error said stays a few seconds before the next
// refresh's "updated" line replaces it.
let heldUntil = 0;
function say(msg) { $("status").textContent = msg; heldUntil = Date.now() + 6000; }
function showError(e) { if (e.message !== "unauthorized") say("error: " + e.message); }
function isAdmin() { return role === "admin"; }
function fields(dl, pairs) {
  dl.replaceChildren();
  for (const [name, value, id] of pairs) {
    const dd = el("dd", value === undefined || value === null ? "–" : value);
    if (id) dd.id = id;
    dl.append(el("dt", name), dd);
  }
}

function showLogin(msg) {
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("login").hidden = false; $("nav").hidden = true;
  $("login-error").textContent = msg || "";
}

// --- overview --------------------------------------------------------------

function drawChart(box, win, queue, label) {
  const series = queue ? (win.queues[queue] || null) : win.total;
  const n = win.total.succeeded.length;
  const zero = new Array(n).fill(0);
  const s = series || { succeeded: zero, failed: zero, dead: zero };
  // Drawn at the box's own width: one unit a pixel, text at its size.
  const W = Math.max(280, Math.round(box.clientWidth || 600)), H = 140, left = 34, bottom = 16, top = 6;
  let max = 1;
  for (let i = 0; i < n; i++) max = Math.max(max, s.succeeded[i] + s.failed[i] + s.dead[i]);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const text = (x, y, t, anchor) => {
    const e = document.createElementNS(SVG, "text");
    e.setAttribute("x", x); e.setAttribute("y", y); e.setAttribute("class", "axis");
    if (anchor) e.setAttribute("text-anchor", anchor);
    e.textContent = t; svg.appendChild(e);
  };
  const line = document.createElementNS(SVG, "line");
  line.setAttribute("x1", left); line.setAttribute("x2", W); line.setAttribute("y1", top); line.setAttribute("y2", top);
  line.setAttribute("class", "grid"); svg.appendChild(line);
  text(left - 4, top + 8, String(max), "end");
  text(left - 4, H - bottom, "0", "end");
  const step = (W - left) / n;
  const scale = (H - bottom - top) / max;
  for (let i = 0; i < n; i++) {
    const t = win.start + i * win.step_ms;
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "step");
    g.dataset.t = String(t);
    g.dataset.succeeded = String(s.succeeded[i]);
    g.dataset.failed = String(s.failed[i]);
    g.dataset.dead = String(s.dead[i]);
    const title = document.createElementNS(SVG, "title");
    title.textContent = clockTime(t) + " UTC: " + s.succeeded[i] + " succeeded, " + s.failed[i] + " failed, " + s.dead[i] + " dead";
    g.appendChild(title);
    let y = H - bottom;
    for (const k of ["succeeded", "failed", "dead"]) {
      const h = s[k][i] * scale;
      if (h <= 0) continue;
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", (left + i * step + step * 0.1).toFixed(1));
      r.setAttribute("width", Math.max(1, step * 0.8).toFixed(1));
      y -= h;
      r.setAttribute("y", y.toFixed(1)); r.setAttribute("height", h.toFixed(1));
      r.setAttribute("class", k);
      g.appendChild(r);
    }
    // The whole column answers the tooltip, not only its bars.
    const hit = document.createElementNS(SVG, "rect");
    hit.setAttribute("x", (left + i * step).toFixed(1)); hit.setAttribute("width", step.toFixed(1));
    hit.setAttribute("y", top); hit.setAttribute("height", H - bottom - top);
    hit.setAttribute("fill", "transparent");
    g.appendChild(hit);
    svg.appendChild(g);
  }
  text(left, H - 2, clockTime(win.start) + " UTC");
  text(W, H - 2, clockTime(win.start + (n - 1) * win.step_ms), "end");
  box.replaceChildren(svg);
}

async function refreshOverview() {
  const o = await api("GET", "/overview");
  const queue = route.params.get("queue") || "";
  const select = $("chart-queue");
  const names = [...new Set([...o.queues.map((q) => q.queue), ...Object.keys(o.hours.queues)])].sort();
  const options = [["", "all queues"], ...names.map((n) => [n, n])].map(([v, t]) => {
    const opt = el("option", t); opt.value = v; return opt;
  });
  select.replaceChildren(...options);
  select.value = queue;
  drawChart($("chart-minutes"), o.minutes, queue, "jobs per minute, last hour");
  drawChart($("chart-hours"), o.hours, queue, "jobs per hour, last day");
  fill($("timing").tBodies[0], Object.entries(o.timing).map(([q, t]) => {
    const tr = el("tr"); tr.dataset.queue = q;
    linkCell(tr, q, link("jobs", { queue: q }));
    cell(tr, t.tries, "num");
    cell(tr, dur(t.run_p50_ms), "num"); cell(tr, dur(t.run_p95_ms), "num");
    cell(tr, dur(t.wait_p50_ms), "num"); cell(tr, dur(t.wait_p95_ms), "num");
    return tr;
  }));
  if (!Object.keys(o.timing).length) {
    const tr = el("tr"); const td = cell(tr, "no try ended in the last hour", "muted"); td.colSpan = 6;
    fill($("timing").tBodies[0], [tr]);
  }
  const h = o.health;
  const tiles = [
    ["backend", h.backend],
    ["live workers", h.live_workers],
    ["scheduler", h.scheduler],
  ];
  if (h.queue_file_bytes !== undefined) {
    tiles.push(["queue file", bytes(h.queue_file_bytes)], ["WAL", bytes(h.wal_bytes)], ["free disk", bytes(h.free_disk_bytes)]);
  }
  for (const [k, v] of Object.entries(h)) {
    if (["backend", "live_workers", "scheduler", "queue_file_bytes", "wal_bytes", "free_disk_bytes"].includes(k)) continue;
    tiles.push([k, v === "ok" ? "ok" : (v && v.error ? v.error : JSON.stringify(v)), v !== "ok"]);
  }
  $("health").replaceChildren(...tiles.map(([k, v, bad]) => {
    const div = el("div", null, bad ? "bad" : ""); div.dataset.health = k;
    div.append(el("dt", k), el("dd", v));
    return div;
  }));
}

// --- queues ----------------------------------------------------------------

async function refreshQueues() {
  const stats = await api("GET", "/queues");
  fill($("queues").tBodies[0], stats.queues.map((q) => {
    const tr = el("tr"); tr.dataset.queue = q.queue;
    linkCell(tr, q.queue, link("jobs", { queue: q.queue }));
    cell(tr, (q.paused ? "paused" : "active") + (q.concurrency ? " · at most " + q.concurrency + " at once" : ""));
    for (const k of ["scheduled", "ready", "running", "succeeded", "dead", "cancelled"]) {
      const td = linkCell(tr, q[k], link("jobs", { queue: q.queue, state: k }), "num");
      td.dataset.count = k;
    }
    cell(tr, q.oldest_ready_age_ms == null ? "–" : dur(q.oldest_ready_age_ms));
    const td = el("td", null, "admin");
    td.appendChild(button(q.paused ? "Resume" : "Pause", () =>
      api("POST", "/queues/" + encodeURIComponent(q.queue) + (q.paused ? "/resume" : "/pause")).then(refresh).catch(showError)));
    tr.appendChild(td);
    return tr;
  }));
  // On a big file the finished counts are re-read every few seconds only.
  const age = stats.finished_age_ms >= 1000 ? " · finished counts as of " + Math.round(stats.finished_age_ms / 1000) + " s ago" : "";
  $("workers-summary").textContent = stats.live_workers + " live worker process(es)" + age;
}

// --- jobs ------------------------------------------------------------------

// The job list: filtered by the server, a page at a time, newest first.  The
// filters and the page are in the URL; `pages` holds the `before_id` of each
// page from the newest to the one shown, for "Newer".
const PAGE = 100;
const FILTERS = [["filter-state", "state"], ["filter-queue", "queue"], ["filter-kind", "kind"],
                 ["filter-tenant", "tenant"], ["filter-error", "error"], ["filter-payload", "payload"]];
let pages = [null];
let shown = [];
let searchedFrom = null;
let listSeq = 0;
let filterTimer = null;

function selection() {
  const sel = {};
  for (const [id, key] of FILTERS) {
    const v = $(id).value.trim();
    if (v) sel[key] = v;
  }
  return sel;
}

// The filters from the URL into the form (a reload, a shared link, Back).
function filtersFromRoute() {
  for (const [id, key] of FILTERS) {
    const v = route.params.get(key) || "";
    if ($(id).value !== v && document.activeElement !== $(id)) $(id).value = v;
  }
  const before = route.params.get("before");
  const page = Number(route.params.get("page") || "1");
  if (!before) pages = [null];
  else if (pages[pages.length - 1] !== Number(before)) {
    pages = new Array(Math.max(1, page - 1)).fill(null);
    pages.push(Number(before));
  }
}

function jobsLink(extra) {
  return link("jobs", { ...selection(), ...(extra || {}) });
}

function nextOrWorker(j, now) {
  if (j.state === "running") return (j.worker || "?") + " · " + dur(now - (j.started_at || now));
  if (j.state === "scheduled") return (j.attempts > 0 ? "retry " : "runs ") + (j.run_at > now ? "in " + dur(j.run_at - now) : "now");
  return "";
}

async function refreshJobs() {
  const seq = ++listSeq;
  const params = new URLSearchParams({ limit: String(PAGE + 1), ...selection() });
  const before = pages[pages.length - 1];
  if (before !== null) params.set("before_id", String(before));
  const answer = await api("GET", "/jobs?" + params);
  const jobs = answer.jobs;
  if (seq !== listSeq) return; // a newer request (other filters, another page) went out
  // A payload search reads a window of jobs at a time: "Older" goes on
  // below it, even when it found fewer than a page.
  searchedFrom = answer.searched_from || null;
  const now = Date.now();
  shown = jobs.slice(0, PAGE);
  fill($("jobs").tBodies[0], shown.map((j) => {
    const tr = el("tr"); tr.dataset.job = j.id;
    linkCell(tr, j.id, link("job", { id: j.id }));
    cell(tr, j.queue); cell(tr, j.kind); cell(tr, j.state, "state-" + j.state);
    cell(tr, j.attempts + "/" + j.attempt_limit, "num"); cell(tr, j.tenant || "");
    cell(tr, iso(j.created_at)); cell(tr, iso(j.started_at)); cell(tr, iso(j.finished_at));
    cell(tr, j.finished_at && j.started_at ? dur(j.finished_at - j.started_at) : (j.state === "running" ? dur(now - j.started_at) : "–"), "num");
    cell(tr, nextOrWorker(j, now));
    cell(tr, j.progress_percent == null ? "" : Math.round(j.progress_percent) + "%", "num");
    cell(tr, j.last_error || "", "error wrap");
    return tr;
  }));
  // Bulk actions act on every job the filters match, on every page.
  const state = $("filter-state").value;
  $("jobs-retry-all").disabled = !(shown.length && (state === "dead" || state === "cancelled"));
  $("jobs-cancel-all").disabled = !(shown.length && ["", "scheduled", "ready", "running"].includes(state));
  $("jobs-older").disabled = !(jobs.length > PAGE || (searchedFrom !== null && searchedFrom > 1));
  $("jobs-newer").disabled = pages.length === 1;
  $("jobs-page").textContent = shown.length === 0
    ? (pages.length === 1 ? "no job matches" : "no older job matches")
    : "page " + pages.length + " · jobs #" + shown[0].id + " to #" + shown[shown.length - 1].id;
  if (searchedFrom !== null && jobs.length <= PAGE) {
    $("jobs-page").textContent += " · searched jobs #" + answer.searched_to + " to #" + searchedFrom;
  }
}

function filtersChanged() {
  clearTimeout(filterTimer);
  pages = [null];
  filterTimer = setTimeout(() => {
    history.replaceState(null, "", jobsLink());
    route = parseRoute(location.search);
    refreshJobs().catch(showError);
  }, 150);
}

// --- a job -----------------------------------------------------------------

async function refreshJob() {
  const id = route.params.get("id") || "";
  if (!/^[0-9]+$/.test(id)) { say("error: a job number, like ?view=job&id=42"); return; }
  let j;
  try { j = await api("GET", "/jobs/" + id); } catch (e) {
    if (e.status === 404) { $("view-job").hidden = true; }
    throw e;
  }
  const now = Date.now();
  $("job-id").textContent = "#" + j.id;
  $("job-state").textContent = j.state; $("job-state").className = "state-" + j.state;
  const pct = j.progress.percent || 0;
  $("job-bar").style.width = Math.max(0, Math.min(100, pct)) + "%";
  $("job-progress").textContent = (j.progress.percent == null ? "" : pct.toFixed(0) + "% ") + (j.progress.stage || "") + (j.progress.detail ? " — " + j.progress.detail : "");
  const running = j.state === "running";
  fields($("job-fields"), [
    ["queue / kind", j.queue + " / " + j.kind, "job-kind"],
    ["tenant", j.tenant || "–", "job-tenant"],
    ["tries", j.attempts + " of " + j.attempt_limit],
    ["priority", j.priority],
    ["created", iso(j.created_at)],
    [j.state === "scheduled" ? "next run" : "due", iso(j.run_at) + (j.state === "scheduled" && j.run_at > now ? " (in " + dur(j.run_at - now) + ")" : ""), "job-next-run"],
    ["started", iso(j.started_at)],
    ["finished", iso(j.finished_at)],
    [running ? "running for" : "duration", running ? dur(now - j.started_at) : (j.finished_at && j.started_at ? dur(j.finished_at - j.started_at) : "–"), "job-duration"],
    ["worker", j.worker || "–", "job-worker"],
    ["lease expires", running ? iso(j.lease_expires_at) : "–"],
    ["timeout", j.timeout_ms ? dur(j.timeout_ms) : "none"],
    ["unique key", j.unique_key || "–"],
  ]);
  $("job-payload").textContent = JSON.stringify(j.payload, null, 2);
  $("job-result").textContent = j.result == null ? "–" : JSON.stringify(j.result, null, 2);
  $("job-error").textContent = j.last_error || "–";
  $("job-retry").disabled = !(j.state === "dead" || j.state === "cancelled");
  $("job-cancel").disabled = !(j.state === "scheduled" || j.state === "ready" || running);
  $("job-delete").disabled = running;
  $("job-delete").title = running ? "cancel it first; a running job is not deleted" : "";
  const tries = (j.attempt_log || []).map((a) => {
    const tr = el("tr");
    cell(tr, a.attempt); cell(tr, a.worker || ""); cell(tr, a.outcome, "state-" + a.outcome);
    cell(tr, iso(a.started_at)); cell(tr, iso(a.finished_at)); cell(tr, dur(a.finished_at - a.started_at), "num");
    cell(tr, a.error || "", "error wrap");
    return tr;
  });
  if (running) {
    const tr = el("tr");
    cell(tr, j.attempts); cell(tr, j.worker || ""); cell(tr, "running", "state-running");
    cell(tr, iso(j.started_at)); cell(tr, "–"); cell(tr, dur(now - j.started_at), "num"); cell(tr, "");
    tries.push(tr);
  }
  fill($("job-attempts").tBodies[0], tries);
  fill($("job-progress-log").tBodies[0], (j.progress_log || []).map((p) => {
    const tr = el("tr");
    cell(tr, p.attempt); cell(tr, iso(p.at)); cell(tr, p.percent == null ? "" : p.percent.toFixed(0) + "%", "num");
    cell(tr, p.stage || ""); cell(tr, p.detail || "", "wrap");
    return tr;
  }));
}

// --- workers ---------------------------------------------------------------

async function refreshWorkers() {
  const { workers, now } = await api("GET", "/workers");
  fill($("workers").tBodies[0], workers.map((w) => {
    const tr = el("tr"); tr.dataset.worker = w.id;
    cell(tr, w.id); cell(tr, w.host); cell(tr, w.pid || "–", "num");
    cell(tr, w.queues.join(", "), "wrap");
    cell(tr, w.kinds.includes("*") ? "every kind of its queues" : w.kinds.join(", "), "wrap");
    linkCell(tr, w.running, link("jobs", { state: "running" }), "num").dataset.running = "";
    cell(tr, iso(w.started_at));
    cell(tr, dur(now - w.last_heartbeat_at) + " ago");
    return tr;
  }));
  if (!workers.length) {
    const tr = el("tr"); const td = cell(tr, "no live worker", "muted"); td.colSpan = 8;
    fill($("workers").tBodies[0], [tr]);
  }
}

// --- schedules -------------------------------------------------------------

function whenText(s) {
  return s.when.cron !== undefined ? s.when.cron : "every " + dur(s.when.every.secs * 1000 + Math.round((s.when.every.nanos || 0) / 1e6));
}

async function scheduleAction(name, action) {
  const r = await api("POST", "/schedules/" + encodeURIComponent(name) + "/" + action);
  if (action === "run") say("schedule " + name + ": job #" + r.job_id + " enqueued");
  return r;
}

async function deleteSchedule(name) {
  if (!confirm("Delete schedule " + JSON.stringify(name) + "? Its jobs already enqueued stay.")) return false;
  await api("DELETE", "/schedules/" + encodeURIComponent(name));
  say("schedule " + name + " deleted");
  return true;
}

async function refreshSchedules() {
  const { schedules } = await api("GET", "/schedules");
  fill($("schedules").tBodies[0], schedules.map((s) => {
    const tr = el("tr"); tr.dataset.schedule = s.name;
    linkCell(tr, s.name, link("schedule", { name: s.name }));
    cell(tr, whenText(s)); cell(tr, s.timezone); cell(tr, s.queue + "/" + s.kind);
    cell(tr, s.enabled ? "yes" : "paused").dataset.enabled = String(s.enabled);
    cell(tr, iso(s.next_fire_at)); cell(tr, iso(s.last_fire_at)); cell(tr, s.fires, "num");
    const td = el("td", null, "admin");
    td.append(
      button(s.enabled ? "Pause" : "Resume", () => scheduleAction(s.name, s.enabled ? "pause" : "resume").then(refresh).catch(showError)),
      button("Run now", () => scheduleAction(s.name, "run").then(refresh).catch(showError)),
      button("Delete", () => deleteSchedule(s.name).then(refresh).catch(showError), "danger"),
    );
    tr.appendChild(td);
    return tr;
  }));
}

let editing = null; // the schedule whose JSON is in the editor (kept while typing)

async function refreshSchedule() {
  const name = route.params.get("name") || "";
  const s = await api("GET", "/schedules/" + encodeURIComponent(name));
  $("schedule-name").textContent = s.name;
  $("schedule-enabled").textContent = s.enabled ? "enabled" : "paused";
  $("schedule-toggle").textContent = s.enabled ? "Pause" : "Resume";
  fields($("schedule-fields"), [
    ["when", whenText(s)], ["timezone", s.timezone], ["queue / kind", s.queue + " / " + s.kind],
    ["misfire", s.misfire], ["fires", s.fires], ["last fire", iso(s.last_fire_at)], ["next fire", iso(s.next_fire_at)],
    ["last error", s.last_error || "–"],
  ]);
  $("schedule-next").replaceChildren(...(s.next_fires.length ? s.next_fires.map((t) => el("li", iso(t))) : [el("li", s.enabled ? "none" : "paused", "muted")]));
  fill($("schedule-fires").tBodies[0], s.recent_fires.map((f) => {
    const tr = el("tr");
    cell(tr, iso(f.fire_at)); cell(tr, iso(f.fired_at));
    if (f.job_id) linkCell(tr, "#" + f.job_id, link("job", { id: f.job_id })); else cell(tr, "purged", "muted");
    return tr;
  }));
  if (editing !== s.name) {
    editing = s.name;
    const spec = { name: s.name, queue: s.queue, kind: s.kind, timezone: s.timezone, misfire: s.misfire };
    if (s.when.cron !== undefined) spec.cron = s.when.cron; else spec.every = s.when.every.secs + "s";
    spec.payload = JSON.parse(s.payload);
    spec.priority = s.priority; spec.max_attempts = s.max_attempts;
    if (s.tenant) spec.tenant = s.tenant;
    if (!s.enabled) spec.enabled = false;
    $("schedule-edit").value = JSON.stringify(spec, null, 2);
  }
}

// --- the frame ---------------------------------------------------------------

const REFRESH = {
  overview: refreshOverview, queues: refreshQueues, jobs: refreshJobs, job: refreshJob,
  workers: refreshWorkers, schedules: refreshSchedules, schedule: refreshSchedule,
};

let refreshing = false;
async function refresh() {
  if (!token || role === null || refreshing) return;
  refreshing = true;
  try {
    await REFRESH[route.view]();
    if (Date.now() > heldUntil) $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) { showError(e); } finally { refreshing = false; }
}

function show() {
  if (!VIEWS.includes(route.view)) { say("error: no view " + JSON.stringify(route.view)); route = parseRoute(""); }
  if (!token || role === null) return;
  $("login").hidden = true; $("nav").hidden = false;
  for (const v of VIEWS) $("view-" + v).hidden = v !== route.view;
  const section = route.view === "job" ? "jobs" : route.view === "schedule" ? "schedules" : route.view;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (route.view === "jobs") filtersFromRoute();
  if (route.view !== "schedule") editing = null;
  document.title = "jobd · " + route.view;
  refreshing = false;
  refresh();
}

async function signIn() {
  const me = await api("GET", "/whoami");
  role = me.role;
  document.body.classList.toggle("read-only", role !== "admin");
  $("whoami").textContent = me.name + " (" + me.role + (role === "admin" ? "" : ", read-only") + ")";
  show();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", () => { route = parseRoute(location.search); show(); });

$("save-token").onclick = async () => {
  token = $("token").value.trim();
  try {
    await signIn();
    localStorage.setItem("jobd-token", token);
  } catch (e) { if (e.message !== "unauthorized") showLogin(e.message); }
};
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("save-token").click(); });
$("forget-token").onclick = () => { localStorage.removeItem("jobd-token"); token = ""; role = null; showLogin(""); };
$("chart-queue").onchange = () => go(link("overview", { queue: $("chart-queue").value }), true);

$("job-retry").onclick = () => api("POST", "/jobs/" + route.params.get("id") + "/retry").then(refresh).catch(showError);
$("job-cancel").onclick = () => api("POST", "/jobs/" + route.params.get("id") + "/cancel").then(refresh).catch(showError);
$("job-delete").onclick = async () => {
  const id = route.params.get("id");
  if (!confirm("Delete job #" + id + " with its tries and progress? This cannot be undone.")) return;
  try {
    await api("DELETE", "/jobs/" + id);
    go(link("jobs"));
    say("job #" + id + " deleted");
  } catch (e) { showError(e); }
};

function describe(sel) {
  const parts = Object.entries(sel).filter(([k]) => k !== "state").map(([k, v]) => k + " " + JSON.stringify(v));
  return parts.length ? " with " + parts.join(", ") : "";
}
function jobs(n) { return n + (n === 1 ? " job" : " jobs"); }
// A bulk action asks the server first how many jobs it would touch (a dry
// run changes nothing), and says so in its confirm.
$("jobs-retry-all").onclick = async () => {
  const sel = selection();
  delete sel.payload;
  try {
    const would = await api("POST", "/jobs/retry?dry_run=true", sel);
    if (would.would_retry === 0) { $("jobs-bulk").textContent = "no " + sel.state + " job matches"; return; }
    if (!confirm("Retry " + jobs(would.would_retry) + " (" + sel.state + describe(sel) +
                 ") — on every page, not only this one?")) return;
    const r = await api("POST", "/jobs/retry", sel);
    $("jobs-bulk").textContent = r.retried + " retried" +
      (r.key_taken.length ? ", " + r.key_taken.length + " left (their unique key is taken)" : "");
    refresh();
  } catch (e) { showError(e); }
};
$("jobs-cancel-all").onclick = async () => {
  const sel = selection();
  delete sel.payload;
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
  } catch (e) { showError(e); }
};
for (const [id] of FILTERS) $(id).addEventListener("input", filtersChanged);
$("filters").addEventListener("submit", (e) => e.preventDefault());
$("jobs-older").onclick = () => {
  const full = shown.length >= PAGE;
  if (!full && searchedFrom === null) return;
  const before = full ? shown[shown.length - 1].id : searchedFrom;
  pages.push(before);
  go(jobsLink({ before, page: pages.length }));
};
$("jobs-newer").onclick = () => {
  if (pages.length <= 1) return;
  pages.pop();
  const before = pages[pages.length - 1];
  go(jobsLink(before === null ? {} : { before, page: pages.length }));
};
$("goto-open").onclick = () => {
  const id = $("goto-job").value.trim().replace(/^#/, "");
  if (!/^[0-9]+$/.test(id)) { say("error: a job number, like 42"); return; }
  go(link("job", { id }));
};
$("goto-job").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("goto-open").click(); } });

$("schedule-toggle").onclick = () => {
  const name = route.params.get("name");
  const action = $("schedule-toggle").textContent === "Pause" ? "pause" : "resume";
  scheduleAction(name, action).then(refresh).catch(showError);
};
$("schedule-run").onclick = () => scheduleAction(route.params.get("name"), "run").then(refresh).catch(showError);
$("schedule-delete").onclick = async () => {
  try { if (await deleteSchedule(route.params.get("name"))) go(link("schedules")); } catch (e) { showError(e); }
};
$("schedule-edit").addEventListener("input", () => { $("schedule-saved").textContent = ""; });
$("schedule-save").onclick = async () => {
  const name = route.params.get("name");
  let spec;
  try { spec = JSON.parse($("schedule-edit").value); } catch (e) { $("schedule-saved").textContent = "not JSON: " + e.message; return; }
  try {
    await api("PUT", "/schedules/" + encodeURIComponent(name), spec);
    $("schedule-saved").textContent = "saved";
    editing = null;
    refresh();
  } catch (e) { $("schedule-saved").textContent = "error: " + e.message; }
};

if (token) signIn().catch((e) => { if (e.message !== "unauthorized") showLogin(e.message); });
else showLogin("");
setInterval(() => { if (!$("login").hidden) return; refresh(); }, 2000);
