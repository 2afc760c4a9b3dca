// ama-stream dashboard: one page, hash-routed views, live updates over server-sent events.
// No build step and no framework: the server (streamer/dashboard/server.py) sends JSON views,
// this file renders them; uPlot (vendored, static/vendor/) draws the time series.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const S = {
  fleet: null, alerts: { firing: [], resolved: [] }, view: null, key: null,
  serverUp: true, charts: {}, timers: [], searchHits: [], searchPick: -1,
};

// ---- formatting -------------------------------------------------------------------------------
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toLocaleString(undefined, { maximumFractionDigits: d, minimumFractionDigits: 0 }));
const fix = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString([], { hour12: false }) : "–");
const stamp = (t) => (t ? new Date(t * 1000).toLocaleString([], { hour12: false }) : "–");
function dur(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
const keyLink = (k) => `<a class="mono" href="#/key/${encodeURIComponent(k)}">${esc(k)}</a>`;
const feats = (fs) => (fs && fs.length ? fs.map((f) => `<span class="feat" title="${f.count} flagged records">f${f.feature}</span>`).join("") : "–");
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok && r.status !== 404) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

// ---- connection banner ------------------------------------------------------------------------
function banner() {
  const msgs = [];
  if (!S.serverUp) msgs.push("Dashboard server unreachable — reconnecting…");
  const h = S.fleet && S.fleet.health;
  if (S.serverUp && h) {
    if (!h.kafka.ok) msgs.push(`Kafka unreachable since ${clock(h.kafka.since)} — reconnecting… (showing the last data received)`);
    if (!h.redis.ok) msgs.push(`Redis unreachable since ${clock(h.redis.since)} — reconnecting… (model and thresholds as last read)`);
  }
  const el = $("#conn-banner");
  el.textContent = msgs.join("  ·  ");
  el.hidden = msgs.length === 0;
}

// ---- live stream ------------------------------------------------------------------------------
function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("fleet", (e) => { S.serverUp = true; onFleet(JSON.parse(e.data)); });
  es.addEventListener("alert", (e) => { S.serverUp = true; onAlerts(JSON.parse(e.data)); });
  es.onerror = () => { S.serverUp = false; banner(); }; // EventSource retries every second
}

function onFleet(f) {
  S.fleet = f;
  $("#hdr-records").textContent = num(f.records_per_s, 0);
  $("#hdr-flagged").textContent = num(f.flagged_per_s, 1);
  $("#hdr-firing").textContent = num(f.firing, 0);
  $("#hdr-dlq").textContent = f.dlq_per_s === null ? "–" : num(f.dlq_per_s, 1);
  const badge = $("#nav-firing");
  badge.textContent = f.firing;
  badge.classList.toggle("hot", f.firing > 0);
  banner();
  if (S.view === "fleet") renderFleet();
}

function onAlerts(episodes) {
  for (const a of episodes) {
    S.alerts.firing = S.alerts.firing.filter((x) => x.alert_id !== a.alert_id && x.key !== a.key);
    if (a.status === "firing") S.alerts.firing.unshift(a);
    else if (!S.alerts.resolved.some((x) => x.alert_id === a.alert_id)) S.alerts.resolved.unshift(a);
  }
  if (S.view === "alerts") renderAlerts();
  if (S.view === "key" && episodes.some((a) => a.key === S.key)) loadKey();
}

// ---- fleet ------------------------------------------------------------------------------------
function renderFleet() {
  const f = S.fleet;
  if (!f) return;
  $("#fleet-records").textContent = num(f.records_per_s, 0);
  $("#fleet-flagged").textContent = num(f.flagged_per_s, 1);
  $("#fleet-firing").textContent = num(f.firing, 0);
  $("#fleet-dlq").textContent = f.dlq_per_s === null ? "–" : num(f.dlq_per_s, 1);
  $("#fleet-keys").textContent = num(f.keys, 0);
  $("#fleet-model-version").textContent = f.model ? f.model.version : "none published";
  $("#fleet-model-since").textContent = f.model ? `${f.model.decision || "serving"} ${stamp(f.model.published_at)}` : "";
  $("#fleet-group").textContent = `group ${f.group} (${f.group_state}), ${f.members.length} member(s)`;
  const rows = f.partitions.map((p) => `<tr data-partition="${p.partition}"><td>${p.partition}</td>` +
    `<td class="mono">${p.owner ? esc(p.owner) : "<i>unassigned</i>"}</td><td class="num">${num(p.committed, 0)}</td>` +
    `<td class="num">${num(p.end, 0)}</td><td class="num">${num(p.lag, 0)}</td></tr>`);
  $("#fleet-partitions tbody").innerHTML = rows.join("") || `<tr class="empty"><td colspan="5">no partitions</td></tr>`;
}

async function loadRates() {
  const r = await getJSON("/api/rates");
  const data = [r.t, r.records, r.flagged, r.alerts];
  const el = $("#fleet-chart");
  if (!S.charts.fleet) {
    S.charts.fleet = new uPlot({
      width: el.clientWidth - 16, height: 220,
      series: [{}, { label: "records/s", stroke: "#2563eb", width: 1.5, fill: "rgba(37,99,235,0.08)", points: { show: false } },
        { label: "flagged/s", stroke: "#dc2626", width: 1.5, scale: "f", points: { show: false } },
        { label: "new alerts/s", stroke: "#7c3aed", width: 1.5, scale: "f", points: { show: false } }],
      scales: { y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] }, f: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
      axes: [{}, { label: "records/s", size: 60 }, { side: 1, scale: "f", label: "flagged, alerts /s", grid: { show: false } }],
    }, data, el);
  } else S.charts.fleet.setData(data);
}

// ---- alerts -----------------------------------------------------------------------------------
function alertRow(a, resolved) {
  const now = Date.now() / 1000;
  const d = a.ends_at === null ? now - a.starts_at : a.duration_s;
  const sev = `<span class="sev ${esc(a.severity)}">${esc(a.severity)}</span>`;
  return `<tr data-alert-id="${esc(a.alert_id)}" data-key="${esc(a.key)}" data-status="${esc(a.status)}">` +
    `<td>${keyLink(a.key)}</td><td>${sev}</td><td>${stamp(a.starts_at)}</td>` +
    (resolved ? `<td>${stamp(a.ends_at)}</td>` : "") +
    `<td class="num">${dur(d)}</td><td class="num">${fix(a.peak_score)}</td><td class="num">${fix(a.threshold)}</td>` +
    `<td class="num">${a.n_anomalous}</td><td>${feats(a.features)}</td><td class="mono">${esc(a.model_version)}</td></tr>`;
}

function renderAlerts() {
  const { firing, resolved } = S.alerts;
  $("#alerts-firing-count").textContent = `${firing.length} episode(s)`;
  $("#alerts-firing tbody").innerHTML = firing.map((a) => alertRow(a, false)).join("") ||
    `<tr class="empty"><td colspan="9">nothing firing</td></tr>`;
  $("#alerts-resolved tbody").innerHTML = resolved.slice(0, 200).map((a) => alertRow(a, true)).join("") ||
    `<tr class="empty"><td colspan="10">none resolved recently</td></tr>`;
}

async function loadAlerts() { S.alerts = await getJSON("/api/alerts"); if (S.view === "alerts") renderAlerts(); }

// ---- one key ----------------------------------------------------------------------------------
function shadeEpisodes(episodes) {
  return (u) => {
    const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
    ctx.save();
    ctx.fillStyle = "rgba(220, 38, 38, 0.14)";
    for (const e of episodes) {
      const x0 = u.valToPos(e.starts_at, "x", true);
      const x1 = u.valToPos(e.ends_at === null ? Date.now() / 1000 : e.ends_at, "x", true);
      const left = Math.max(u.bbox.left, x0), right = Math.min(u.bbox.left + u.bbox.width, x1);
      if (right > left) ctx.fillRect(left, top, Math.max(2, right - left), h);
    }
    ctx.restore();
  };
}

async function loadKey() {
  const key = S.key;
  const v = await getJSON(`/api/key?key=${encodeURIComponent(key)}`);
  if (S.key !== key || S.view !== "key") return;
  const el = $("#key-chart");
  const missing = $("#key-missing");
  if (v.error) {
    missing.textContent = v.error; missing.hidden = false;
    el.dataset.points = "0"; return;
  }
  missing.hidden = true;
  const p = v.points;
  const flagged = p.score.map((s, i) => (p.flagged[i] > 0 ? s : null));
  const data = [p.t, p.score, p.threshold, flagged];
  el.dataset.points = String(p.t.length);
  el.dataset.flagged = String(flagged.filter((x) => x !== null).length);
  el.dataset.episodes = String(v.episodes.length);
  $("#key-bucket").textContent = `${v.bucket_s} s`;
  const opts = {
    width: el.clientWidth - 16, height: 360,
    series: [{}, { label: "largest score", stroke: "#2563eb", width: 1.5, points: { show: false } },
      { label: "threshold", stroke: "#f59e0b", width: 2, dash: [6, 4], points: { show: false } },
      { label: "flagged", stroke: "#dc2626", fill: "#dc2626", width: 0, paths: () => null,
        points: { show: true, size: 8, fill: "#dc2626", stroke: "#dc2626" } }],
    axes: [{}, { label: "score" }],
    hooks: { drawClear: [shadeEpisodes(v.episodes)] },
  };
  if (S.charts.key) S.charts.key.destroy();
  el.innerHTML = "";
  S.charts.key = new uPlot(opts, data, el);
  const r = v.redis || {};
  const facts = r.available ? [
    ["threshold for the next record", fix(r.threshold, 3)], ["warming up", r.warming_up ? "yes" : "no"],
    ["normal records learned", num(r.n, 0)], ["mean / std of score", `${fix(r.mean, 3)} / ${fix(r.std, 3)}`],
    ["alert state", r.alert_state], ["statistics expire in", r.ttl_s === null ? "–" : dur(r.ttl_s)],
    ["model", r.model_version],
  ] : [["unavailable", r.reason || "–"]];
  $("#key-redis").innerHTML = facts.map(([k, x]) => `<dt>${esc(k)}</dt><dd>${esc(x)}</dd>`).join("");
  $("#key-state").textContent = r.available ? `alert state: ${r.alert_state}` : "";
  $("#key-episodes tbody").innerHTML = v.episodes.slice().reverse().map((e) =>
    `<tr data-alert-id="${esc(e.alert_id)}"><td><span class="sev ${e.status === "firing" ? esc(e.severity) : "resolved"}">${esc(e.status)}</span></td>` +
    `<td>${stamp(e.starts_at)}</td><td class="num">${dur(e.duration_s)}</td><td class="num">${fix(e.peak_score)}</td><td>${feats(e.features)}</td></tr>`,
  ).join("") || `<tr class="empty"><td colspan="5">no episodes in memory</td></tr>`;
}

// ---- heat map ---------------------------------------------------------------------------------
async function loadHeatmap() {
  const h = await getJSON("/api/heatmap?rows=20");
  const table = $("#heatmap");
  if (!h.keys.length) { table.tHead.innerHTML = ""; table.tBodies[0].innerHTML = `<tr><td class="total">no score events yet</td></tr>`; return; }
  const cols = h.flagged[0].length;
  const most = Math.max(1, ...h.flagged.flat());
  let head = `<tr><th></th>`;
  for (let c = 0; c < cols; c += 10) head += `<th colspan="${Math.min(10, cols - c)}">${clock(h.start + c * h.column_s)}</th>`;
  table.tHead.innerHTML = head + `<th>flagged</th></tr>`;
  table.tBodies[0].innerHTML = h.keys.map((k, i) => {
    const cells = h.flagged[i].map((n, c) => {
      const peak = h.peak[i][c];
      const t = `${k} ${clock(h.start + c * h.column_s)}: ${n} flagged` + (peak === null ? "" : `, largest score ${fix(peak)}`);
      const bg = n ? `rgba(220, 38, 38, ${(0.25 + 0.75 * Math.log1p(n) / Math.log1p(most)).toFixed(3)})` : "";
      return `<td data-n="${n}" title="${esc(t)}"${bg ? ` style="background:${bg}"` : ""}></td>`;
    }).join("");
    return `<tr data-key="${esc(k)}"><th class="key">${keyLink(k)}</th>${cells}<td class="total">${h.totals[i]}</td></tr>`;
  }).join("");
}

// ---- models -----------------------------------------------------------------------------------
function gate(m) {
  if (!m) return "–";
  const parts = [];
  if (m.false_alarm_champion !== undefined) parts.push(`false alarms ${fix(100 * m.false_alarm_champion, 1)}% → ${fix(100 * m.false_alarm_challenger, 1)}%`);
  if (m.auroc_champion !== undefined && m.auroc_champion !== null) parts.push(`AUROC ${fix(m.auroc_champion, 3)} → ${fix(m.auroc_challenger, 3)}`);
  return parts.join(", ") || "–";
}
function by(e) {
  const t = e.trigger || {};
  if (e.decision === "rollback") return "operator (rollback)";
  if (e.decision === "restored") return "worker (restored from the store)";
  if (t.reason === "manual") return "operator (model publish)";
  if (t.reason === "drift") return `retrain job (drift, PSI ${fix(t.psi, 2)})`;
  if (t.reason) return `retrain job (${t.reason})`;
  return "–";
}
async function loadModels() {
  const m = await getJSON("/api/models");
  const serving = m.serving ? m.serving.version : null;
  $("#models-serving").textContent = serving ? `serving ${serving}` : "nothing published";
  // ★ marks the entry that put the serving version in place (the newest that did).
  const current = m.history.findIndex((e) => e.version === serving && ["published", "rollback", "restored"].includes(e.decision));
  $("#models tbody").innerHTML = m.history.map((e, i) =>
    `<tr data-decision="${esc(e.decision)}" data-version="${esc(e.version || "")}"><td>${stamp(e.at)}</td><td>${esc(e.decision)}</td>` +
    `<td class="mono">${esc(e.version || "–")}${i === current ? " ★" : ""}</td>` +
    `<td>${esc(by(e))}</td><td class="mono">${esc(e.parent || "–")}</td><td>${esc(gate(e.metrics))}</td><td>${esc((e.reasons || []).join("; ") || "–")}</td></tr>`,
  ).join("") || `<tr class="empty"><td colspan="7">no history</td></tr>`;
}

// ---- search -----------------------------------------------------------------------------------
let searchTimer = null;
function showHits() {
  const ul = $("#search-results");
  if (!$("#search").value.trim()) { ul.hidden = true; return; }
  ul.innerHTML = S.searchHits.length ? S.searchHits.map((k, i) =>
    `<li data-key="${esc(k)}" class="${i === S.searchPick ? "active" : ""}">${esc(k)}</li>`).join("") :
    `<li class="none">no key matches</li>`;
  ul.hidden = false;
}
function pick(key) {
  $("#search").value = ""; $("#search-results").hidden = true; S.searchHits = [];
  location.hash = `#/key/${encodeURIComponent(key)}`;
}
function setupSearch() {
  const input = $("#search");
  input.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(async () => {
      const q = input.value;
      const r = await getJSON(`/api/keys?q=${encodeURIComponent(q)}`);
      if (input.value !== q) return;
      S.searchHits = r.keys; S.searchPick = r.keys.length ? 0 : -1; showHits();
    }, 120);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const n = S.searchHits.length;
      if (n) S.searchPick = (S.searchPick + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      showHits(); e.preventDefault();
    } else if (e.key === "Enter" && S.searchPick >= 0) pick(S.searchHits[S.searchPick]);
    else if (e.key === "Escape") { input.value = ""; showHits(); }
  });
  $("#search-results").addEventListener("mousedown", (e) => {
    const li = e.target.closest("li[data-key]");
    if (li) pick(li.dataset.key);
  });
  input.addEventListener("blur", () => setTimeout(() => { $("#search-results").hidden = true; }, 150));
}

// ---- routing ----------------------------------------------------------------------------------
function every(ms, fn) { fn(); S.timers.push(setInterval(fn, ms)); }
function route() {
  S.timers.forEach(clearInterval); S.timers = [];
  const hash = location.hash || "#/fleet";
  let view = hash.slice(2).split("/")[0] || "fleet";
  if (!["fleet", "alerts", "key", "heatmap", "models"].includes(view)) view = "fleet";
  S.view = view;
  S.key = view === "key" ? decodeURIComponent(hash.slice("#/key/".length)) : null;
  document.querySelectorAll(".view").forEach((el) => { el.hidden = el.id !== `view-${view}`; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  const safe = (fn) => () => fn().catch(() => {}); // a failed fetch waits for the next tick
  if (view === "fleet") { renderFleet(); every(5000, safe(loadRates)); }
  if (view === "alerts") { every(3000, safe(loadAlerts)); S.timers.push(setInterval(renderAlerts, 1000)); }
  if (view === "key") {
    $("#key-name").textContent = S.key; $("#key-chart").dataset.points = "";
    every(2000, safe(loadKey));
  }
  if (view === "heatmap") every(5000, safe(loadHeatmap));
  if (view === "models") every(10000, safe(loadModels));
}

window.addEventListener("hashchange", route);
setupSearch();
connect();
loadAlerts().catch(() => {});
route();
