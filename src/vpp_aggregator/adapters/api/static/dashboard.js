// Operator dashboard: polls the service's own API and redraws; no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (x, d = 0) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }));
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const delivered = {}; // dispatch_id -> [[epoch ms, kW]] seen while this page is open

async function api(path) {
  const token = sessionStorage.getItem("vpp-token");
  const res = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (res.status === 401) {
    $("token-form").hidden = false;
    throw new Error("a token is needed");
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function rows(tbody, html) {
  tbody.innerHTML = html.join("") || '<tr><td colspan="9" class="muted">none</td></tr>';
}

function drawCapacity(cap) {
  $("up-kw").textContent = `${fmt(cap.discharge.kw)} kW`;
  $("up-kwh").textContent = `${fmt(cap.discharge.kwh)} kWh over ${fmt(cap.duration_minutes)} min`;
  $("down-kw").textContent = `${fmt(cap.charge.kw)} kW`;
  $("down-kwh").textContent = `${fmt(cap.charge.kwh)} kWh`;
  $("available").textContent = `${cap.available_resource_count} / ${cap.resource_count}`;
  $("eligible").innerHTML = cap.meets_minimum
    ? `<span class="ok">meets</span> the ${fmt(cap.min_capacity_kw)} kW market minimum`
    : `<span class="no">below</span> the ${fmt(cap.min_capacity_kw)} kW market minimum`;
  $("min-kw").textContent = `(market minimum ${fmt(cap.min_capacity_kw)} kW)`;
  $("by-type").innerHTML = Object.entries(cap.by_type)
    .map(([t, f]) => `<tr><td>${esc(t)}</td><td class="num">${fmt(f.discharge.kw)} kW up</td><td class="num">${fmt(f.charge.kw)} kW down</td></tr>`)
    .join("");
  rows($("by-node").tBodies[0], Object.entries(cap.by_grid_node).sort().map(([n, f]) =>
    `<tr><td>${esc(n)}</td><td class="num">${fmt(f.discharge.kw)}</td><td class="num">${fmt(f.discharge.kwh)}</td>` +
    `<td class="num">${fmt(f.charge.kw)}</td><td class="num">${f.available_resource_count}/${f.resource_count}</td>` +
    `<td>${f.meets_minimum ? '<span class="ok">eligible</span>' : '<span class="no">below 100 kW</span>'}</td></tr>`));
}

function scale(values, lo, hi) {
  const min = Math.min(0, ...values), max = Math.max(1, ...values);
  return (v) => hi - ((v - min) / (max - min)) * (hi - lo);
}

function drawForecast(doc) {
  const svg = $("forecast");
  const iv = doc.intervals;
  $("model").textContent = `${doc.model.name}${doc.model.fallback ? " (fallback)" : ""}, ${doc.model.version}`;
  if (!iv.length) { svg.innerHTML = ""; return; }
  const W = 900, H = 240, L = 50, B = 24;
  const x = (i) => L + (i / Math.max(1, iv.length - 1)) * (W - L - 10);
  const y = scale(iv.flatMap((r) => [r.discharge_kw.p10, r.discharge_kw.p90]), 10, H - B);
  const top = iv.map((r, i) => `${x(i)},${y(r.discharge_kw.p90)}`);
  const bottom = iv.map((r, i) => `${x(i)},${y(r.discharge_kw.p10)}`).reverse();
  const p50 = iv.map((r, i) => `${x(i)},${y(r.discharge_kw.p50)}`).join(" ");
  const maxKw = Math.max(...iv.map((r) => r.discharge_kw.p90));
  const ticks = iv.map((r, i) => [i, r.start]).filter(([i]) => i % 12 === 0)
    .map(([i, s]) => `<text x="${x(i)}" y="${H - 6}">${esc(s.slice(5, 16).replace("T", " "))}</text>`).join("");
  svg.innerHTML =
    `<line class="axis" x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}"/>` +
    `<polygon class="band" points="${top.concat(bottom).join(" ")}"/>` +
    `<polyline class="p50" points="${p50}"/>` +
    `<text x="4" y="${y(maxKw) + 4}">${fmt(maxKw)} kW</text><text x="4" y="${H - B}">0</text>` + ticks;
}

async function drawDispatches(list) {
  const recent = list.items.slice(0, 8);
  const details = await Promise.all(recent.filter((d) => ["active", "scheduled", "partial"].includes(d.status))
    .map((d) => api(`/dispatch/${d.dispatch_id}`).catch(() => null)));
  const byId = Object.fromEntries(details.filter(Boolean).map((d) => [d.dispatch_id, d]));
  for (const d of Object.values(byId)) {
    if (d.delivered_kw !== null) (delivered[d.dispatch_id] ||= []).push([Date.now(), d.delivered_kw]);
  }
  rows($("dispatches").tBodies[0], recent.map((d) => {
    const det = byId[d.dispatch_id];
    return `<tr><td>${esc(d.dispatch_id.slice(0, 12))}</td><td>${esc(d.source)}</td><td>${esc(d.status)}</td>` +
      `<td class="num">${fmt(d.target_kw)}</td><td class="num">${det ? fmt(det.planned_kw_now, 1) : "–"}</td>` +
      `<td class="num">${det ? fmt(det.delivered_kw, 1) : "–"}</td></tr>`;
  }));
  const focus = Object.values(byId)[0];
  const svg = $("dispatch-chart");
  if (!focus) { svg.innerHTML = ""; $("dispatch-caption").textContent = "no active dispatch"; return; }
  const W = 440, H = 180, L = 40, B = 20;
  const start = Date.parse(focus.start), plan = focus.plan_kw;
  const span = Math.max(1, plan.length - 1) * 60000;
  const x = (t) => L + ((t - start) / span) * (W - L - 6);
  const seen = delivered[focus.dispatch_id] || [];
  const y = scale([...plan, ...seen.map((p) => p[1]), focus.target_kw], 8, H - B);
  const line = plan.map((kw, i) => `${x(start + i * 60000)},${y(kw)}`).join(" ");
  const dots = seen.map(([t, kw]) => `<circle class="delivered" cx="${x(t)}" cy="${y(kw)}" r="2.5"/>`).join("");
  svg.innerHTML = `<line class="axis" x1="${L}" y1="${y(0)}" x2="${W}" y2="${y(0)}"/>` +
    `<polyline class="plan" points="${line}"/>${dots}` +
    `<text x="2" y="${y(focus.target_kw) + 4}">${fmt(focus.target_kw)} kW</text>`;
  $("dispatch-caption").textContent = `${focus.dispatch_id}: plan (line) against delivered from telemetry (dots)`;
}

function drawResources(list) {
  $("resource-count").textContent = `(${list.items.length} of ${list.total} shown)`;
  rows($("resources").tBodies[0], list.items.map((r) =>
    `<tr><td>${esc(r.resource_id)}</td><td>${esc(r.resource_type)}</td><td>${esc(r.grid_node)}</td>` +
    `<td class="num">${r.telemetry ? fmt(r.telemetry.soc_pct, 1) : "–"}</td><td>${r.telemetry ? (r.telemetry.plugged_in ? "yes" : "no") : "–"}</td>` +
    `<td>${r.availability_factor > 0 ? '<span class="ok">yes</span>' : '<span class="no">no</span>'}</td><td>${esc(r.availability_reason || (r.safety_lockout ? "charge only: below its floor" : ""))}</td></tr>`));
  const alerts = list.items.flatMap((r) => {
    const out = [];
    if (r.safety_lockout) out.push(`${r.resource_id}: BESS below its floor, locked out of discharge`);
    if (r.availability_reason === "stale_telemetry") out.push(`${r.resource_id}: telemetry is stale`);
    if (r.status === "suspended") out.push(`${r.resource_id}: suspended`);
    return out;
  });
  $("alerts").innerHTML = alerts.map((a) => `<li>${esc(a)}</li>`).join("") || '<li class="muted">none</li>';
}

function drawOffers(doc) {
  const next = (m) => doc.items.filter((o) => (o.market ?? "day_ahead") === m).slice(0, 6);
  rows($("offers").tBodies[0], next("real_time").concat(next("day_ahead")).map((o) =>
    `<tr><td>${esc((o.market ?? "day_ahead").replace("_", "-"))}</td><td>${esc(o.aggregation_id)}</td>` +
    `<td>${esc(o.interval_start.slice(5, 16).replace("T", " "))}</td>` +
    `<td class="num">${fmt(o.min_power_kw ?? 0)}</td><td class="num">${fmt(o.max_power_kw ?? o.quantity_kw)}</td>` +
    `<td class="num">${fmt(o.committed_kw ?? 0)}</td><td class="num">${fmt(o.ramp_rate_kw_per_min)}</td></tr>`));
}

function drawRegulation(doc) {
  const part = (v) => (v === null || v === undefined ? "–" : fmt(v, 3));
  rows($("regulation").tBodies[0], doc.aggregations.flatMap((a) =>
    (a.hours.length ? a.hours.slice(-3) : [null]).map((h, i) =>
      `<tr><td>${i ? "" : esc(a.aggregation_id)}</td><td class="num">${i ? "" : fmt(a.capacity_kw)}</td>` +
      (h ? `<td>${esc(h.start.slice(11, 16))}</td><td class="num ${h.score >= 0.75 ? "ok" : "no"}">${fmt(h.score, 3)}</td>` +
        `<td class="num">${part(h.correlation)}</td><td class="num">${part(h.delay)}</td><td class="num">${part(h.precision)}</td>`
        : '<td colspan="5" class="muted">no signal recorded yet</td>') + "</tr>")));
}

function drawSettlement(doc) {
  const num = (v, d = 1) => (v === null || v === undefined ? "" : fmt(v, d));
  rows($("settlement").tBodies[0], doc.items.slice(-12).reverse().map((s) =>
    `<tr><td>${esc(s.award_id)}</td><td>${esc(s.interval_start.slice(11, 16))}–${esc(s.interval_end.slice(11, 16))}</td>` +
    `<td>${esc(s.baseline_method ?? "")}</td><td class="num">${num(s.awarded_kwh)}</td><td class="num">${num(s.baseline_kwh)}</td>` +
    `<td class="num">${num(s.measured_kwh)}</td><td class="num">${num(s.delivered_kwh)}</td>` +
    `<td class="num">${s.delivery_ratio === null || s.delivery_ratio === undefined ? "" : fmt(s.delivery_ratio * 100) + " %"}</td>` +
    `<td title="${esc(s.reason ?? s.baseline_note ?? "")}">${esc(s.status)}</td></tr>`));
}

function drawEvents(doc) {
  const span = (w) => w.start ? `${w.start.slice(5, 16).replace("T", " ")} → ${w.end ? w.end.slice(5, 16).replace("T", " ") : "open-ended"}` : "";
  const kw = (w) => w.target_kw !== null && w.target_kw !== undefined ? fmt(w.target_kw, 1) : w.share !== null && w.share !== undefined ? `${fmt(w.share * 100)} % of available` : "";
  rows($("dr-events").tBodies[0], doc.items.slice(0, 15).map((e) => {
    const windows = e.cancelled ? [{ meaning: "cancelled (UG 7.9)" }] : (e.windows.length ? e.windows : [{ meaning: "asks nothing" }]);
    const outcomes = e.outcomes.map((o) => `${o.outcome} ${o.detail}${o.reason ? ` (${o.reason})` : ""}`).join("; ");
    return windows.map((w, i) =>
      `<tr><td>${i ? "" : esc(e.received_at.slice(5, 19).replace("T", " "))}</td><td>${i ? "" : esc(e.event_id)}</td>` +
      `<td>${esc(w.meaning)}</td><td class="num">${esc(kw(w))}</td><td>${esc(span(w))}</td><td>${i ? "" : esc(outcomes)}</td></tr>`).join("");
  }));
}

async function refresh() {
  const jobs = [
    api("/capacity/available").then(drawCapacity),
    api("/resources?limit=200").then(drawResources),
    api("/dispatch?limit=20").then(drawDispatches),
    api("/dr/events?limit=15").then(drawEvents),
    api("/regulation/status").then(drawRegulation),
  ];
  const today = new Date().toISOString().slice(0, 10);
  const slow = [
    api("/capacity/forecast?horizon_hours=72").then(drawForecast),
    api("/market/offers").then(drawOffers),
    api(`/market/settlement?date=${today}`).then(drawSettlement),
  ];
  const results = await Promise.allSettled(refresh.count++ % 6 === 0 ? jobs.concat(slow) : jobs);
  const failed = results.filter((r) => r.status === "rejected");
  $("status").textContent = failed.length ? `partly stale: ${failed[0].reason.message}` : `updated ${new Date().toLocaleTimeString()}`;
  $("status").className = failed.length ? "no" : "muted";
}
refresh.count = 0;

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("vpp-token", $("token").value.trim());
  $("token-form").hidden = true;
  refresh.count = 0;
  refresh();
});

refresh();
setInterval(refresh, 2000);
