// MicroGate dashboard: reads /health and /analytics/* every few seconds and draws what
// the gateway learned. No framework, no network access beyond the gateway itself.
//
// URL options: ?refresh=SECONDS (default 2), ?route=/api/x (the charted route),
// #token=ADMIN_TOKEN (sent as a bearer token when the admin listener needs one).
"use strict";

const params = new URLSearchParams(location.search);
const refreshSeconds = Math.max(0.5, Number(params.get("refresh")) || 2);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
let selected = params.get("route");
let charts = {};
let refreshes = 0;

document.getElementById("refresh-seconds").textContent = String(refreshSeconds);

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  if (!res.ok) throw new Error(path + " answered " + res.status);
  return res.json();
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const fmt = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(2) + " %");
const time = (ms) => new Date(ms).toLocaleTimeString();

function renderStatus(health) {
  const b = health.backends;
  document.getElementById("status").textContent =
    `${health.status} · up ${health.uptime_seconds}s · ${health.routes} routes · ` +
    `${b.total} backends (${b.open_breakers} open breakers) · v${health.version}`;
}

function renderRoutes(routes) {
  const body = document.querySelector("#routes tbody");
  body.replaceChildren();
  for (const r of routes) {
    const limit = r.current_rate_limit === null ? "none" : `${fmt(r.current_rate_limit, 0)} (${r.rate_limit_source})`;
    const active = r.active_anomalies.length ? " ⚠ " + r.active_anomalies.join(", ") : "";
    const row = el("tr", { "data-route": r.route, class: r.route === selected ? "selected" : "" },
      el("td", {}, el("code", {}, r.route), r.configured ? "" : el("span", { class: "muted" }, " (unconfigured)")),
      el("td", { "data-rate": fmt(r.current.request_rate) }, fmt(r.current.request_rate)),
      el("td", {}, `${fmt(r.avg_rate)} ± ${fmt(r.rate_stddev)}`, r.learning ? el("span", { class: "muted" }, " learning") : ""),
      el("td", {}, fmt(r.p99_latency_ms, 2)),
      el("td", {}, pct(r.error_rate)),
      el("td", { "data-limit": r.current_rate_limit === null ? "" : String(r.current_rate_limit) }, limit),
      el("td", { "data-anomalies": String(r.anomalies_24h) }, String(r.anomalies_24h), active));
    row.addEventListener("click", () => { selected = r.route; refresh(); });
    body.append(row);
  }
}

function renderBackends(backends) {
  const body = document.querySelector("#backends tbody");
  body.replaceChildren();
  for (const b of backends) {
    const bar = el("div", { class: "bar" });
    bar.style.width = Math.round(100 * b.weight) + "%";
    body.append(el("tr", { "data-backend": b.backend },
      el("td", {}, el("code", {}, b.backend)),
      el("td", { "data-weight": String(b.weight) }, el("div", { class: "barbox" }, bar), ` ${(100 * b.weight).toFixed(1)} %`),
      el("td", { "data-breaker": b.breaker_state, class: "breaker-" + b.breaker_state }, b.breaker_state),
      el("td", {}, pct(b.breaker_threshold), b.threshold_learned ? " learned" : " static"),
      el("td", {}, fmt(b.avg_latency_ms, 2)),
      el("td", {}, pct(b.error_rate))));
  }
}

function renderAnomalies(list) {
  const ul = document.getElementById("anomalies");
  ul.replaceChildren();
  if (!list.length) ul.append(el("li", { class: "muted" }, "none in the last 24 h"));
  for (const a of list) {
    const who = a.route ? "route " + a.route : "backend " + a.backend;
    const state = a.ended_ms ? `ended ${time(a.ended_ms)}` : "ongoing";
    ul.append(el("li", { "data-anomaly": String(a.id), "data-metric": a.metric, class: a.ended_ms ? "" : "active" },
      el("strong", {}, a.metric), ` on ${who} from ${time(a.started_ms)} (${state}): `,
      `${fmt(a.current)} vs mean ${fmt(a.mean)}, z = ${fmt(a.peak_z_score)}`));
  }
}

function renderPlugins(plugins) {
  const body = document.querySelector("#plugins tbody");
  body.replaceChildren();
  if (!plugins.length) {
    body.append(el("tr", {}, el("td", { colSpan: 7, class: "muted" }, "built-in policies only (no plugins configured)")));
  }
  for (const p of plugins) {
    body.append(el("tr", { "data-plugin": p.name, "data-state": p.state },
      el("td", {}, el("code", {}, p.name)), el("td", {}, p.kind), el("td", { class: "state-" + p.state }, p.state),
      el("td", {}, el("code", {}, p.sha256 ? p.sha256.slice(0, 12) : "—")),
      el("td", {}, String(p.calls)), el("td", {}, String(p.errors)),
      el("td", { class: "muted" }, p.last_error || p.last_load_error || "")));
  }
}

// Vertical red lines where anomalies of the charted route started.
function markers(anomalies) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "#d33";
        ctx.lineWidth = 2;
        for (const a of anomalies) {
          const x = u.valToPos(a.started_ms / 1000, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

function chart(id, title, series, data, anomalies, bands, yRange) {
  const box = document.getElementById(id);
  box.setAttribute("data-points", String(data[0].length));
  box.setAttribute("data-route", selected || "");
  const opts = {
    title,
    width: Math.max(300, box.clientWidth || 900),
    height: 200,
    scales: { x: { time: true }, y: yRange ? { range: yRange } : {} },
    axes: [{}, { size: 70 }],
    series: [{}, ...series],
    bands: bands || [],
    plugins: [markers(anomalies)],
    legend: { live: false },
  };
  if (charts[id]) charts[id].destroy();
  box.replaceChildren();
  charts[id] = new uPlot(opts, data, box);
}

function renderCharts(history, anomalies) {
  document.getElementById("selected-route").textContent = selected || "—";
  const pts = history.points;
  const xs = pts.map((p) => p.start_ms / 1000);
  const b = history.baseline;
  const flat = (v) => xs.map(() => v);
  const rate = pts.map((p) => p.rate);
  const mean = b ? b.rate.mean : null;
  const sd = b ? b.rate.stddev : 0;
  chart("chart-rate", "requests / min", [
    { label: "rate", stroke: "#2a6fdb", width: 2 },
    { label: "baseline", stroke: "#888", dash: [6, 4] },
    { label: "+2σ", stroke: "rgba(0,0,0,0)" },
    { label: "−2σ", stroke: "rgba(0,0,0,0)" },
  ], [xs, rate, flat(mean), flat(mean === null ? null : mean + 2 * sd), flat(mean === null ? null : Math.max(0, mean - 2 * sd))],
  anomalies, [{ series: [3, 4], fill: "rgba(120,120,120,0.15)" }]);
  const errors = pts.map((p) => (p.error_rate === null ? null : p.error_rate));
  const worst = Math.max(0.01, ...errors.filter((e) => e !== null));
  chart("chart-errors", "error rate", [{ label: "errors", stroke: "#d33", width: 2 }],
    [xs, errors], anomalies, [], (u, min, max) => [0, Math.min(1, worst * 1.2)]);
  chart("chart-latency", "p99 latency (ms)", [
    { label: "p99", stroke: "#7a3fb0", width: 2 },
    { label: "mean", stroke: "#3a9", width: 1 },
  ], [xs, pts.map((p) => p.latency_p99_ms), pts.map((p) => p.latency_mean_ms)], anomalies);
}

async function refresh() {
  try {
    const windowSeconds = Number(document.getElementById("window").value);
    const [health, routes, backends, anomalies, plugins] = await Promise.all([
      api("/health"), api("/analytics/routes"), api("/analytics/backends"),
      api("/analytics/anomalies?limit=100"), api("/analytics/plugins"),
    ]);
    if (!selected || !routes.some((r) => r.route === selected)) {
      const busiest = [...routes].sort((a, b) => b.requests - a.requests)[0];
      selected = busiest ? busiest.route : null;
    }
    renderStatus(health);
    renderRoutes(routes);
    renderBackends(backends);
    renderAnomalies(anomalies);
    renderPlugins(plugins);
    if (selected) {
      const from = Math.floor(Date.now() / 1000) - windowSeconds;
      const history = await api(`/analytics/routes/${encodeURIComponent(selected)}/history?from=${from}`);
      renderCharts(history, anomalies.filter((a) => a.route === selected));
    }
    refreshes += 1;
    document.body.setAttribute("data-loaded", "true");
    document.body.setAttribute("data-refreshes", String(refreshes));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "error: " + e.message;
  }
}

document.getElementById("window").addEventListener("change", refresh);
refresh();
setInterval(refresh, refreshSeconds * 1000);
