// The emulator console. Plain JS, no build step. Job data is only ever set as text (never as HTML).
// The API key lives in sessionStorage and travels as an Authorization header: never in a URL.
"use strict";

const KEY_NAME = "rpq-console-key";
const $ = (sel) => document.querySelector(sel);
// What the page measured, for people and for the browser test.
const stats = { loadMs: null, events: 0, renders: 0, renderMsTotal: 0, renderMsMax: 0, mode: "connecting" };
window.rpqConsole = stats;

let snapshot = null;
let stream = null; // AbortController of the open event stream
let pollTimer = null;
let jobTimer = null;
let streamFailures = 0;

// -- talking to the emulator ---------------------------------------------------------------------

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY_NAME);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.body ? { "content-type": "application/json" } : {});
  const response = await fetch(path, opts);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (response.status === 401) askKey("the emulator refused the key: " + ((data && data.error) || "401"));
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || "HTTP " + response.status);
  return data;
}

function filterQuery() {
  const q = new URLSearchParams();
  const ep = $("#filter-endpoint").value, st = $("#filter-status").value;
  if (ep) q.set("endpoint", ep);
  if (st) q.set("status", st);
  return q;
}

// Server-sent events read through fetch (EventSource cannot send a header); polling is the fallback.
async function openStream() {
  closeStream();
  const controller = new AbortController();
  stream = controller;
  const q = filterQuery();
  q.set("interval", "500");
  let got = false;
  try {
    const response = await fetch("/_console/api/events?" + q, { headers: headers(), signal: controller.signal });
    if (response.status === 401) { askKey("this emulator needs its API key"); return; }
    if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        if (!got) { got = true; streamFailures = 0; setMode("live (server-sent events)", true); }
        stats.events++;
        onSnapshot(JSON.parse(data));
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  if (stream !== controller) return;
  stream = null;
  if (!got) streamFailures++;
  if (streamFailures >= 2) startPolling();
  else setTimeout(openStream, 500);
}

function closeStream() {
  if (stream) { const s = stream; stream = null; s.abort(); }
}

function startPolling() {
  // The fallback: a snapshot every 2 s, and another try at the stream every 30 s.
  setMode("polling every 2 s", false);
  stopPolling();
  const poll = async () => {
    try { stats.events++; onSnapshot(await api("/_console/api/snapshot?" + filterQuery())); } catch (e) { /* shown by api */ }
  };
  poll();
  pollTimer = setInterval(poll, 2000);
  setTimeout(() => { stopPolling(); streamFailures = 0; openStream(); }, 30000);
}

function stopPolling() { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }

function restartUpdates() { stopPolling(); streamFailures = 0; openStream(); }

function setMode(text, on) {
  stats.mode = text;
  const el = $("#live");
  el.textContent = text;
  el.className = "live " + (on ? "on" : "off");
}

// -- the key -------------------------------------------------------------------------------------

function askKey(reason) {
  const dialog = $("#key-dialog");
  $("#key-error").textContent = reason || "";
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

$("#key-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY_NAME, $("#key-input").value);
  $("#key-input").value = "";
  $("#forget-key").hidden = false;
  restartUpdates();
  route();
});
$("#forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_NAME);
  $("#forget-key").hidden = true;
  closeStream();
  askKey("");
});

// -- rendering -----------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function ms(value) {
  if (value === null || value === undefined) return "";
  return value < 1000 ? value + " ms" : (value / 1000).toFixed(value < 10000 ? 2 : 1) + " s";
}

function clockText(c) {
  const s = c.now;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = (s % 60).toFixed(1);
  return c.kind + " clock  " + (h ? h + "h " : "") + m + "m " + sec + "s";
}

function onSnapshot(data) {
  const t0 = performance.now();
  snapshot = data;
  $("#clock").textContent = clockText(data.clock);
  $("#advance").hidden = data.clock.kind === "real";
  fillSelects(data);
  renderEndpoints(data.endpoints);
  renderJobs(data.jobs);
  renderWarnings(data.warnings || []);
  const took = performance.now() - t0;
  stats.renders++;
  stats.renderMsTotal += took;
  stats.renderMsMax = Math.max(stats.renderMsMax, took);
  if (stats.loadMs === null) stats.loadMs = performance.now();
}

// The emulator's latest warnings (a handler holding the loop, jobs forgotten past the cap, ...): text only.
function renderWarnings(warnings) {
  const box = $("#warnings");
  box.hidden = warnings.length === 0;
  box.replaceChildren(...warnings.map((w) => el("li", { class: "warning " + w.kind }, w.message)));
}

function fillSelects(data) {
  const ids = data.endpoints.map((e) => e.id);
  for (const sel of [$("#filter-endpoint"), $("#submit-endpoint")]) {
    const have = Array.from(sel.options).map((o) => o.value).filter((v) => v);
    if (have.join() === ids.join()) continue;
    for (const id of ids) if (!have.includes(id)) sel.append(el("option", { value: id }, id));
  }
  const st = $("#filter-status");
  if (st.options.length === 1) for (const s of data.statuses) st.append(el("option", { value: s }, s));
}

function chart(kind, label, values) {
  const box = el("div", { class: "chart " + kind });
  const max = Math.max(1, ...values);
  const n = Math.max(values.length - 1, 1);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 300 48");
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.map((v, i) => ((i * 300) / n).toFixed(1) + "," + (46 - (v / max) * 44).toFixed(1)).join(" "));
  svg.append(line);
  const last = values.length ? values[values.length - 1] : 0;
  box.append(el("div", {}, label + ": " + (Math.round(last * 10) / 10) + "  (max " + Math.round(max * 10) / 10 + ")"), svg);
  return box;
}

function renderEndpoints(endpoints) {
  const root = $("#endpoints");
  const cards = [];
  for (const ep of endpoints) {
    const series = ep.series;
    const rates = [];
    for (let i = 1; i < series.length; i++) {
      const dt = series[i][0] - series[i - 1][0];
      rates.push(dt > 0 ? (series[i][1] - series[i - 1][1]) / dt : 0);
    }
    const w = ep.workers;
    const workers = [];
    if (w.inProcess.idle + w.inProcess.running) workers.push("in-process: " + w.inProcess.idle + " idle, " + w.inProcess.running + " running");
    if (w.external.idle + w.external.running + w.external.unhealthy) {
      workers.push("external: " + w.external.idle + " idle, " + w.external.running + " running, " + w.external.unhealthy + " unhealthy");
    }
    const stat = (value, label, cls) => el("div", { class: cls || "" }, el("b", {}, value), el("span", {}, label));
    cards.push(el("article", { class: "card", "data-endpoint": ep.id },
      el("h3", {}, ep.id, el("small", {}, ep.handler)),
      el("div", { class: "stats" },
        stat(ep.inQueue, "in queue", "in-queue"), stat(ep.inProgress, "in progress", "in-progress"),
        stat(ep.completed, "completed", "completed"), stat(ep.failed, "failed", "failed")),
      el("div", { class: "workers" }, "workers — " + (workers.join("; ") || "none")),
      renderFleet(ep.id, ep.fleet),
      el("div", { class: "charts" },
        chart("rate", "jobs/s", rates.slice(-120)), chart("depth", "queue depth", series.slice(-120).map((s) => s[2]))),
      el("div", { class: "row" }, el("span", { class: "hint" }, "retained: " + ep.retained),
        el("button", { class: "small purge", type: "button", onclick: () => purge(ep.id) }, "purge queue"))));
  }
  root.replaceChildren(...cards);
}

// The endpoint's workers as RunPod's REST v2 lists them: INITIALIZING, IDLE, RUNNING, THROTTLED,
// UNHEALTHY (with why), under its min/max; each with a button for its log lines.
const FLEET_ORDER = ["INITIALIZING", "IDLE", "RUNNING", "THROTTLED", "UNHEALTHY"];

function renderFleet(endpoint, f) {
  if (!f) return el("div", { class: "fleet" });
  const counts = FLEET_ORDER.filter((s) => f.summary[s]).map((s) => f.summary[s] + " " + s.toLowerCase());
  let limits = f.fixed ? f.min + " ready, fixed" : "min " + f.min + " · max " + f.max;
  if (!f.fixed && f.effectiveMax < f.max) limits += " (capped at " + f.effectiveMax + ": idle endpoint)";
  if (f.capacity !== null && f.capacity !== undefined) limits += " · " + f.capacity + " GPUs";
  const items = f.workers.map((w) => el("li", { class: "w-" + w.status, "data-worker": w.id, "data-status": w.status },
    el("span", { class: "wstatus" }, w.status), " ", el("code", {}, w.id),
    w.jobId ? el("span", { class: "hint" }, " job " + w.jobId.slice(0, 8)) : null,
    w.reason ? el("span", { class: "reason" }, " — " + w.reason) : null,
    el("button", { class: "small logs", type: "button", onclick: () => showLogs(endpoint, w.id) }, "logs")));
  const more = f.total > f.workers.length ? el("li", { class: "hint" }, "+" + (f.total - f.workers.length) + " more") : null;
  // Folded by default (the cards stay short); the cards are rebuilt on every update, so which ones the
  // user unfolded is remembered here.
  const box = el("details", { class: "fleet", "data-total": String(f.total) },
    el("summary", { class: "fleet-head" }, "fleet — " + limits + (counts.length ? " · " + counts.join(", ") : " · no workers")),
    el("ul", { class: "fleet-workers" }, ...items, more));
  box.open = openFleets.has(endpoint);
  box.addEventListener("toggle", () => { if (box.open) openFleets.add(endpoint); else openFleets.delete(endpoint); });
  return box;
}
const openFleets = new Set();

// A worker's last lines, from the management API's logs route (server-sent events, read to the end).
async function showLogs(endpoint, worker) {
  const panel = $("#logs-panel");
  $("#logs-title").textContent = "Logs of " + worker + " (" + endpoint + ")";
  $("#logs-lines").textContent = "loading…";
  panel.hidden = false;
  const path = "/_management/v2/serverless/" + encodeURIComponent(endpoint) + "/workers/" +
    encodeURIComponent(worker) + "/logs?follow=false&tail=200";
  try {
    const response = await fetch(path, { headers: headers() });
    const text = await response.text();
    if (!response.ok) {
      let detail = text;
      try { detail = JSON.parse(text).detail || text; } catch (e) { /* not JSON: show it as is */ }
      if (response.status === 401) askKey("the emulator refused the key: " + detail);
      throw new Error(detail);
    }
    const lines = [];
    for (const block of text.split("\n\n")) {
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data) continue;
      const event = JSON.parse(data);
      lines.push(event.ts + "  " + event.source.padEnd(9) + "  " + event.line);
    }
    $("#logs-lines").textContent = lines.join("\n") || "(no lines)";
  } catch (e) {
    $("#logs-lines").textContent = "";
    toast("logs of " + worker + ": " + e.message, true);
  }
}

function actionButtons(job) {
  const out = [];
  if (job.status === "IN_QUEUE" || job.status === "IN_PROGRESS") {
    out.push(el("button", { class: "small cancel", type: "button", onclick: () => act(job, "cancel") }, "cancel"));
  }
  if (job.status === "FAILED" || job.status === "TIMED_OUT") {
    out.push(el("button", { class: "small retry", type: "button", onclick: () => act(job, "retry") }, "retry"));
  }
  return out;
}

function jobLink(job) {
  return "#/job/" + encodeURIComponent(job.endpoint) + "/" + encodeURIComponent(job.id);
}

// Rows are kept by job id and rebuilt only when something shown in them changed: at 100 jobs/s most of
// the window is the same from one update to the next.
let rowCache = new Map();

function renderJobs(jobs) {
  const next = new Map();
  const rows = jobs.items.map((job) => {
    const sig = [job.status, job.delayTime, job.executionTime, job.workerId].join("|");
    const cached = rowCache.get(job.id);
    if (cached && cached.sig === sig) { next.set(job.id, cached); return cached.tr; }
    const tr = el("tr", { "data-id": job.id, "data-status": job.status },
      el("td", { class: "id" }, el("a", { href: jobLink(job) }, job.id)),
      el("td", {}, job.endpoint),
      el("td", { class: "status s-" + job.status }, job.status),
      el("td", {}, ms(job.delayTime)), el("td", {}, ms(job.executionTime)),
      el("td", {}, job.workerId || ""),
      el("td", {}, ...actionButtons(job)));
    next.set(job.id, { sig, tr });
    return tr;
  });
  rowCache = next;
  $("#jobs tbody").replaceChildren(...rows);
  let count = "newest " + jobs.items.length + " of " + jobs.retained + " retained";
  if (!jobs.complete) count += " (searched the newest " + jobs.scanned + ")";
  $("#jobs-count").textContent = count;
}

// -- actions: the public API routes, so the API's rules and rate limits apply ----------------------

function toast(text, isError) {
  const item = el("div", { class: isError ? "error" : "" }, text);
  $("#toast").append(item);
  setTimeout(() => item.remove(), isError ? 8000 : 4000);
}

async function act(job, operation) {
  try {
    const r = await api("/v2/" + encodeURIComponent(job.endpoint) + "/" + operation + "/" + encodeURIComponent(job.id), { method: "POST" });
    toast(operation + ": job " + job.id + " is " + r.status);
    if (!$("#job-page").hidden) showJob(job.endpoint, job.id);
  } catch (e) { toast(operation + " failed: " + e.message, true); }
}

async function purge(endpoint) {
  if (!window.confirm("Remove every queued job of " + endpoint + "? Running jobs continue.")) return;
  try {
    const r = await api("/v2/" + encodeURIComponent(endpoint) + "/purge-queue", { method: "POST" });
    toast("purged " + r.removed + " queued job(s) of " + endpoint);
  } catch (e) { toast("purge failed: " + e.message, true); }
}

function checkBody() {
  // Validated here for a quick answer; the API checks it again (policy ranges, unknown fields).
  const area = $("#submit-body");
  let problem = "";
  try {
    const body = JSON.parse(area.value);
    if (body === null || typeof body !== "object" || Array.isArray(body)) problem = "the body must be a JSON object";
    else if (!("input" in body)) problem = 'the body needs an "input" field: {"input": {...}}';
    else if (body.input === null || typeof body.input !== "object" || Array.isArray(body.input)) problem = '"input" must be a JSON object';
  } catch (e) { problem = "not valid JSON: " + e.message; }
  area.classList.toggle("bad", !!problem);
  $("#submit-check").textContent = problem || "valid JSON";
  $("#submit-check").className = problem ? "error" : "hint";
  $("#submit-go").disabled = !!problem;
  return !problem;
}
$("#logs-close").addEventListener("click", () => { $("#logs-panel").hidden = true; });
$("#submit-body").addEventListener("input", checkBody);
$("#submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!checkBody()) return;
  const endpoint = $("#submit-endpoint").value;
  try {
    const r = await api("/v2/" + encodeURIComponent(endpoint) + "/run", { method: "POST", body: $("#submit-body").value });
    toast("queued job " + r.id + " on " + endpoint);
  } catch (e) { toast("submit refused (" + e.status + "): " + e.message, true); }
});

$("#advance").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const r = await api("/_emulator/advance", { method: "POST", body: JSON.stringify({ seconds: Number($("#advance-seconds").value) }) });
    $("#clock").textContent = clockText({ kind: snapshot ? snapshot.clock.kind : "virtual", now: r.now });
  } catch (e) { toast("advance failed: " + e.message, true); }
});

for (const sel of ["#filter-endpoint", "#filter-status"]) sel && $(sel).addEventListener("change", restartUpdates);

// -- a job's page --------------------------------------------------------------------------------

function shown(value) {
  if (!value) return "";
  if (value.cut) return value.text + "\n… (" + value.bytes + " bytes, cut)";
  return JSON.stringify(value.json, null, 2);
}

async function showJob(endpoint, id) {
  let job;
  try {
    job = await api("/_console/api/job?" + new URLSearchParams({ endpoint, id }));
  } catch (e) {
    $("#job-title").textContent = "job " + id + ": " + e.message;
    return;
  }
  if (location.hash !== jobLink({ endpoint, id })) return;
  $("#job-title").replaceChildren(el("span", {}, "job " + job.id + " "), el("span", { class: "status s-" + job.status, id: "job-status" }, job.status));
  $("#job-actions").replaceChildren(...actionButtons(job));
  const facts = [["endpoint", job.endpoint], ["worker", job.workerId || "—"], ["delay", ms(job.delayTime) || "—"],
    ["execution", ms(job.executionTime) || "—"], ["attempt", job.attempt + 1], ["platform retries", job.retries],
    ["kind", (job.sync ? "runsync" : "run") + (job.lowPriority ? ", low priority" : "")],
    ["policy", "executionTimeout " + job.policy.executionTimeout + " s, ttl " + job.policy.ttl + " s"],
    ["webhook", job.webhook || "—"], ["s3Config", job.s3Config ? "set (not shown)" : "—"],
    ["result kept until", job.expiresAt === null ? "—" : job.expiresAt.toFixed(1) + " s on the clock"]];
  $("#job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("#job-input").textContent = shown(job.input);
  $("#job-output-title").textContent = job.outputIsProgress ? "Progress (output so far)" : "Output";
  $("#job-output").textContent = job.output ? shown(job.output) : "—";
  $("#job-error-panel").hidden = !job.error;
  if (job.error) {
    $("#job-error-type").textContent = job.error.type ? "type: " + job.error.type : "";
    $("#job-error-message").textContent = job.error.message;
    $("#job-error-trace").textContent = job.error.traceback || "";
    $("#job-error-trace").hidden = !job.error.traceback;
  }
  $("#job-chunks").replaceChildren(...job.chunks.items.map((c) => el("li", {}, shown(c))));
  $("#job-chunks-count").textContent = job.chunks.shown + " kept" + (job.chunks.unread ? ", " + job.chunks.unread + " not yet read by /stream" : "");
  $("#job-webhooks tbody").replaceChildren(
    el("tr", {}, el("th", {}, "attempt"), el("th", {}, "at (clock s)"), el("th", {}, "answer")),
    ...job.webhookAttempts.map((a) => el("tr", {}, el("td", {}, a.attempt), el("td", {}, a.at.toFixed(3)),
      el("td", { class: a.delivered ? "s-COMPLETED" : "s-FAILED" }, a.statusCode !== null ? "HTTP " + a.statusCode : a.error))));
  $("#job-history tbody").replaceChildren(
    el("tr", {}, el("th", {}, "status"), el("th", {}, "at (clock s)"), el("th", {}, "")),
    ...job.history.map((h) => el("tr", {}, el("td", { class: "status s-" + h.status }, h.status), el("td", {}, h.at.toFixed(3)), el("td", {}, h.note))));
  clearTimeout(jobTimer);
  if (job.status === "IN_QUEUE" || job.status === "IN_PROGRESS") jobTimer = setTimeout(() => showJob(endpoint, id), 700);
}

function route() {
  const match = location.hash.match(/^#\/job\/([^/]+)\/([^/]+)$/);
  clearTimeout(jobTimer);
  $("#overview").hidden = !!match;
  $("#job-page").hidden = !match;
  if (match) showJob(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
}

window.addEventListener("hashchange", route);
$("#forget-key").hidden = !sessionStorage.getItem(KEY_NAME);
checkBody();
route();
openStream();
