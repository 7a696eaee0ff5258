// meterd dashboard: device list (paged, prefix search) with live values, a downsampled chart
// of one device and metric (uPlot), aggregates, anomalies, and live updates over SSE.
"use strict";

const $ = (sel) => document.querySelector(sel);
const PAGE = 50;
const MAX_EVENTS = 50;
const DAY_MS = 86400e3;

const state = {
  device: null, metric: null, newestMs: null,
  prefix: "", cursor: null,
  chart: null, data: [[], [], [], []], resolution: "raw", slotSeconds: 0,
  events: 0, streamOpen: false,
};
window.meterd = state; // for the browser test and for poking around in devtools

function fmtTime(sec) {
  return new Date(sec * 1000).toISOString().replace(".000Z", "Z");
}
function fmtNum(v) {
  return v === null || v === undefined ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: 3 });
}
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}
async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(url + " → " + r.status);
  return r.json();
}
const enc = encodeURIComponent;

// ---- device list --------------------------------------------------------------------------

async function loadDevices(reset) {
  if (reset) { state.cursor = null; $("#devices").replaceChildren(); }
  let url = "/api/v1/search/devices?limit=" + PAGE + "&prefix=" + enc(state.prefix);
  if (state.cursor) url += "&cursor=" + enc(state.cursor);
  const prefix = state.prefix;
  const body = await getJSON(url);
  if (prefix !== state.prefix) return; // a newer search won
  const list = $("#devices");
  for (const d of body.devices) {
    const li = el("li", { title: d.kind + (d.site ? " @ " + d.site : "") },
      el("span", { className: "id", textContent: d.id }), el("span", { className: "live" }));
    li.dataset.device = d.id;
    if (d.id === state.device) li.classList.add("selected");
    li.addEventListener("click", () => selectDevice(d.id));
    list.append(li);
    loadLive(d.id, li);
  }
  state.cursor = body.next_cursor;
  $("#more").hidden = !state.cursor;
  return body.devices;
}

async function loadLive(id, li) {
  try {
    const body = await getJSON("/api/v1/devices/" + enc(id) + "/live");
    const newest = body.live.reduce((a, b) => (a && a.ts > b.ts ? a : b), null);
    if (newest) li.querySelector(".live").textContent = newest.metric + " " + fmtNum(newest.value);
  } catch (e) { /* the device list still works without live values */ }
}

function deviceItem(id) {
  return document.querySelector('#devices li[data-device="' + CSS.escape(id) + '"]');
}

// ---- one device ---------------------------------------------------------------------------

async function selectDevice(id) {
  state.device = id;
  document.querySelectorAll("#devices li.selected").forEach((li) => li.classList.remove("selected"));
  const li = deviceItem(id);
  if (li) li.classList.add("selected");
  $("#device-title").textContent = id;
  const url = new URL(location.href);
  url.searchParams.set("device", id);
  history.replaceState(null, "", url);
  $("#events").replaceChildren();
  const body = await getJSON("/api/v1/devices/" + enc(id) + "/live");
  const metrics = body.live.map((r) => r.metric);
  const want = url.searchParams.get("metric");
  state.metric = metrics.includes(want) ? want : metrics[0] || null;
  $("#metric").replaceChildren(...metrics.map((m) => el("option", { value: m, textContent: m, selected: m === state.metric })));
  const live = body.live.find((r) => r.metric === state.metric);
  state.newestMs = live ? Date.parse(live.ts) : null;
  await refresh();
}

// The chosen range ends at the newest reading, so historical data shows too.
function rangeParams() {
  const days = $("#range").value;
  if (days === "all" || state.newestMs === null) return "";
  const to = state.newestMs + 1;
  return "&from=" + (to - days * DAY_MS) + "&to=" + to;
}

async function refresh() {
  await Promise.all([loadSeries(), loadAggregates(), loadAnomalies()]);
}

async function loadSeries() {
  if (!state.device || !state.metric) { drawChart([[], [], [], []]); return; }
  const width = Math.max(200, $("#chart").clientWidth);
  const points = Math.min(2000, Math.round(width));
  const body = await getJSON("/api/v1/devices/" + enc(state.device) + "/series?metric=" + enc(state.metric) +
    "&points=" + points + rangeParams());
  state.resolution = body.resolution;
  state.slotSeconds = body.slot_seconds;
  $("#resolution").textContent = body.count.toLocaleString() + " readings, " + body.points + " points (" +
    (body.resolution === "raw" ? "raw" : body.resolution + "ly rollups, " + body.slot_seconds / 3600 + " h per point") + ")";
  drawChart([body.t, body.value, body.min, body.max]);
}

function drawChart(data) {
  state.data = data;
  const node = $("#chart");
  const width = Math.max(200, node.clientWidth);
  if (!state.chart) {
    const opts = {
      width, height: 320,
      series: [
        { value: (u, v) => (v === null ? "–" : fmtTime(v)) },
        { label: "mean", stroke: "#2563eb", width: 1.5, points: { show: false } },
        { label: "min", stroke: "#93c5fd", width: 1, dash: [4, 3], points: { show: false } },
        { label: "max", stroke: "#1e3a8a", width: 1, dash: [4, 3], points: { show: false } },
      ],
      axes: [{}, { size: 60 }],
      hooks: { draw: [() => { node.dataset.drawn = String(Number(node.dataset.drawn || 0) + 1); }] },
    };
    state.chart = new uPlot(opts, data, node);
  } else {
    state.chart.setData(data);
  }
  node.dataset.points = String(data[0].length);
  node.dataset.resolution = state.resolution;
}

async function loadAggregates() {
  const tbody = $("#aggregates tbody");
  tbody.replaceChildren();
  if (!state.device || !state.metric || state.newestMs === null) return;
  const bucket = $("#bucket").value;
  const to = state.newestMs + 1, span = bucket === "day" ? 31 * DAY_MS : 2 * DAY_MS;
  const body = await getJSON("/api/v1/devices/" + enc(state.device) + "/aggregates?metric=" + enc(state.metric) +
    "&bucket=" + bucket + "&from=" + (to - span) + "&to=" + to + "&limit=100");
  for (const a of body.aggregates.reverse()) {
    const label = bucket === "day" ? a.bucket.slice(0, 10) : a.bucket.slice(5, 16).replace("T", " ");
    tbody.append(el("tr", {}, el("td", { textContent: label }), el("td", { textContent: a.count }),
      el("td", { textContent: fmtNum(a.mean) }), el("td", { textContent: fmtNum(a.min) }), el("td", { textContent: fmtNum(a.max) })));
  }
}

async function loadAnomalies() {
  const ul = $("#anomalies");
  ul.replaceChildren();
  if (!state.device) return;
  const from = state.newestMs === null ? "" : "&from=" + (state.newestMs - 30 * DAY_MS);
  const body = await getJSON("/api/v1/anomalies?device=" + enc(state.device) + "&limit=200" + from);
  for (const a of body.anomalies.slice(-20).reverse()) addAnomaly(a.ts, a.metric, a.value, a.reason);
}

function addAnomaly(ts, metric, value, reason) {
  const ul = $("#anomalies");
  ul.prepend(el("li", { className: "invalid", textContent: ts + " " + metric + " " + fmtNum(value) + " — " + reason }));
  while (ul.children.length > 20) ul.lastChild.remove();
}

// ---- live events (SSE) ----------------------------------------------------------------------

let pending = [];
function connectEvents() {
  const badge = $("#stream");
  const es = new EventSource("/api/v1/events");
  es.onopen = () => { state.streamOpen = true; badge.dataset.state = "open"; badge.textContent = "live: connected"; };
  es.onerror = () => { state.streamOpen = false; badge.dataset.state = "error"; badge.textContent = "live: reconnecting"; };
  es.onmessage = (m) => {
    pending.push(JSON.parse(m.data));
    if (pending.length === 1) requestAnimationFrame(applyEvents);
  };
}

function applyEvents() {
  const batch = pending;
  pending = [];
  let chartChanged = false;
  for (const ev of batch) {
    state.events++;
    const li = deviceItem(ev.device);
    if (li) li.querySelector(".live").textContent = ev.metric_name + " " + fmtNum(ev.metric_value);
    if (ev.device !== state.device) continue;
    const valid = ev.validation_status === "valid";
    const list = $("#events");
    list.prepend(el("li", { className: valid ? "" : "invalid",
      textContent: ev.reading_timestamp + " " + ev.metric_name + " " + fmtNum(ev.metric_value) + (valid ? "" : " — " + ev.anomaly_reason) }));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    if (!valid) addAnomaly(ev.reading_timestamp, ev.metric_name, ev.metric_value, ev.anomaly_reason);
    if (valid && ev.metric_name === state.metric) chartChanged = addPoint(Date.parse(ev.reading_timestamp) / 1000, ev.metric_value) || chartChanged;
  }
  if (chartChanged) drawChart(state.data);
}

// Raw: one more point. Rollups: into the last slot, or a new slot after it.
function addPoint(t, v) {
  const [ts, mean, min, max] = state.data;
  const n = ts.length;
  state.newestMs = Math.max(state.newestMs || 0, t * 1000);
  if (n && t < ts[n - 1]) return false; // late arrival: shows on the next refresh
  if (state.resolution !== "raw" && n && t < ts[n - 1] + state.slotSeconds) {
    mean[n - 1] = (mean[n - 1] + v) / 2; // approximate until the next refresh
    min[n - 1] = Math.min(min[n - 1], v);
    max[n - 1] = Math.max(max[n - 1], v);
    return true;
  }
  const slot = state.resolution === "raw" ? t : ts[n - 1] + Math.floor((t - ts[n - 1]) / state.slotSeconds) * state.slotSeconds;
  state.data = [[...ts, slot], [...mean, v], [...min, v], [...max, v]];
  return true;
}

// ---- wiring --------------------------------------------------------------------------------

let searchTimer = null;
$("#search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { state.prefix = $("#search").value.trim(); loadDevices(true); }, 200);
});
$("#more").addEventListener("click", () => loadDevices(false));
$("#metric").addEventListener("change", () => {
  state.metric = $("#metric").value;
  const url = new URL(location.href);
  url.searchParams.set("metric", state.metric);
  history.replaceState(null, "", url);
  getJSON("/api/v1/devices/" + enc(state.device) + "/live").then((b) => {
    const live = b.live.find((r) => r.metric === state.metric);
    state.newestMs = live ? Date.parse(live.ts) : null;
    return refresh();
  });
});
$("#range").addEventListener("change", () => loadSeries());
$("#bucket").addEventListener("change", () => loadAggregates());
window.addEventListener("resize", () => {
  if (state.chart) state.chart.setSize({ width: Math.max(200, $("#chart").clientWidth), height: 320 });
});

(async function main() {
  getJSON("/").then((b) => { $("#version").textContent = b.version; }).catch(() => {});
  connectEvents();
  const wanted = new URL(location.href).searchParams.get("device");
  await loadDevices(true);
  const first = document.querySelector("#devices li");
  if (wanted) await selectDevice(wanted);
  else if (first) await selectDevice(first.dataset.device);
  else drawChart([[], [], [], []]);
})();
