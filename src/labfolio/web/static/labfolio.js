// labfolio dashboard: charts from the server's downsampled series, live polling, edits.
// Plain browser JavaScript over plotly.js; no build step, nothing fetched from elsewhere.
"use strict";

const LF = {
  token() { return localStorage.getItem("labfolio_token") || ""; },
  headers(extra) {
    const h = Object.assign({"Accept": "application/json"}, extra || {});
    const t = LF.token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  },
  async getJSON(url) {
    const r = await fetch(url, {headers: LF.headers(), credentials: "same-origin"});
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  },
  xAxis() { const el = document.getElementById("x-axis"); return el ? el.value : "step"; },
  smoothing() { const el = document.getElementById("smoothing"); return el ? parseFloat(el.value) : 0; },
};

// The server sends series as base64 float64 (NaN marks a gap, which plotly leaves undrawn).
function decodeF64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float64Array(bytes.buffer);
}

// Debiased exponential moving average, skipping gaps (null) as TensorBoard's slider does.
function ema(values, weight) {
  if (!weight) return values;
  let last = 0, n = 0;
  return values.map(v => {
    if (v === null || !isFinite(v)) return v;  // a gap stays a gap
    last = last * weight + (1 - weight) * v; n += 1;
    return last / (1 - Math.pow(weight, n));
  });
}

const charts = new Map();  // div id -> {div, runs, key, range}

function seriesURL(runs, key, range) {
  const p = new URLSearchParams();
  runs.forEach(r => p.append("run", r));
  p.set("key", key); p.set("x", LF.xAxis()); p.set("encoding", "b64");
  if (range) { p.set("xmin", range[0]); p.set("xmax", range[1]); }
  return "/data/series?" + p.toString();
}

async function drawSeries(div, keepRange) {
  const spec = charts.get(div.id);
  if (!spec || !spec.key) return;
  const data = await LF.getJSON(seriesURL(spec.runs, spec.key, keepRange ? spec.range : null));
  const w = LF.smoothing();
  const traces = data.series.map(s => ({
    x: decodeF64(s.x), y: ema(decodeF64(s.y), w), name: spec.runs.length > 1 ? s.run_id : spec.key, mode: "lines", type: "scatter",
    line: {width: 1.5}, hovertemplate: "%{x}: %{y:.5g}<extra>" + s.run_id + "</extra>",
  }));
  const layout = {
    title: {text: spec.key, font: {size: 13}}, margin: {l: 50, r: 10, t: 30, b: 35}, height: spec.runs.length > 1 ? 420 : 260,
    xaxis: {title: {text: data.x}}, showlegend: spec.runs.length > 1, uirevision: spec.key + data.x,
  };
  if (keepRange && spec.range) { layout.xaxis.range = spec.range; layout.xaxis.autorange = false; }
  spec.drawing = true;
  await Plotly.react(div, traces, layout, {responsive: true, displaylogo: false});
  spec.drawing = false;
  div.dataset.drawn = String(data.series.reduce((n, s) => n + s.n, 0));
  if (!spec.bound) {
    spec.bound = true;
    // Zoom asks the server for fresh buckets inside the view, so spikes stay visible at every scale.
    div.on("plotly_relayout", ev => {
      if (spec.drawing) return;
      const range = ev["xaxis.range"] || (ev["xaxis.range[0]"] !== undefined ? [ev["xaxis.range[0]"], ev["xaxis.range[1]"]] : null);
      if (range) {
        spec.range = [range[0], range[1]];
        drawSeries(div, true);
      } else if (ev["xaxis.autorange"]) {
        spec.range = null;
        drawSeries(div, false);
      }
    });
  }
}

async function drawBands(div) {
  const keyEl = document.getElementById("band-key");
  const key = keyEl ? keyEl.value : "";
  if (!key) return;
  const p = new URLSearchParams({experiment: div.dataset.bands, key: key});
  const data = await LF.getJSON("/data/bands?" + p.toString());
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  const traces = [];
  data.variants.forEach((v, i) => {
    const c = palette[i % palette.length];
    traces.push({x: v.x.concat(v.x.slice().reverse()), y: v.upper.concat(v.lower.slice().reverse()),
                 fill: "toself", fillcolor: c + "33", line: {width: 0}, hoverinfo: "skip", showlegend: false,
                 type: "scatter", mode: "lines", name: v.variant + " ± std"});
    traces.push({x: v.x, y: v.mean, type: "scatter", mode: "lines", line: {color: c, width: 2},
                 name: v.variant + " (n=" + v.n + ")"});
  });
  await Plotly.react(div, traces, {title: {text: key + ": mean ± std over seeds", font: {size: 13}}, height: 380,
    margin: {l: 50, r: 10, t: 30, b: 35}, xaxis: {title: {text: "step"}}}, {responsive: true, displaylogo: false});
  div.dataset.drawn = String(traces.length);
}

function redrawAll(runId) {
  charts.forEach(spec => {
    if (!runId || spec.runs.includes(runId)) drawSeries(spec.div, !!spec.range);
  });
}

// Live: ask for the state of the runs on the page; redraw the charts of runs that moved on.
function startLive() {
  const ids = new Set();
  document.querySelectorAll("[data-live-state]").forEach(el => ids.add(el.dataset.liveState));
  if (!ids.size) return;
  const seen = {};
  const every = parseInt(document.body.dataset.pollMs || "2000", 10);
  const tick = async () => {
    try {
      const p = new URLSearchParams(); ids.forEach(i => p.append("run", i));
      const data = await LF.getJSON("/data/live?" + p.toString());
      Object.entries(data.runs).forEach(([rid, info]) => {
        document.querySelectorAll('[data-live-state="' + CSS.escape(rid) + '"]').forEach(el => {
          el.textContent = info.state; el.className = "state state-" + info.state;
        });
        document.querySelectorAll('[data-live-steps="' + CSS.escape(rid) + '"]').forEach(el => {
          el.textContent = info.last_step === null ? "--" : String(info.last_step);
        });
        if (seen[rid] !== undefined && seen[rid] !== info.point_count) {
          redrawAll(rid);
          const band = document.getElementById("band-chart");
          if (band) drawBands(band);
        }
        seen[rid] = info.point_count;
      });
    } catch (e) { /* the next tick tries again */ }
    setTimeout(tick, every);
  };
  tick();
}

function bindSelection() {
  const button = document.getElementById("compare-selected");
  if (!button) return;
  const update = () => {
    const chosen = Array.from(document.querySelectorAll(".run-select:checked")).map(b => b.value);
    document.getElementById("selected-count").textContent = chosen.length;
    button.disabled = chosen.length < 2;
    return chosen;
  };
  document.querySelectorAll(".run-select").forEach(b => b.addEventListener("change", update));
  button.addEventListener("click", () => {
    const p = new URLSearchParams(); update().forEach(r => p.append("run", r));
    window.location.href = "/compare?" + p.toString();
  });
}

async function postJSON(url, body) {
  const r = await fetch(url, {method: "POST", headers: LF.headers({"Content-Type": "application/json"}),
                              body: JSON.stringify(body), credentials: "same-origin"});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || String(r.status));
  return data;
}

function bindEdits() {
  document.querySelectorAll("form.edit").forEach(form => form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const out = form.querySelector(".edit-result");
    try {
      await postJSON(form.dataset.editUrl, {field: form.dataset.field, value: form.querySelector("textarea").value});
      out.textContent = "saved"; out.className = "edit-result ok";
    } catch (e) { out.textContent = "not saved: " + e.message; out.className = "edit-result error"; }
  }));
  document.querySelectorAll("form.edit-status").forEach(form => form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const out = form.querySelector(".edit-result");
    const status = form.querySelector("select").value || null;
    try {
      await postJSON(form.dataset.editUrl, {status: status, reason: form.querySelector("input[name=reason]").value || null});
      out.textContent = "saved"; out.className = "edit-result ok";
    } catch (e) { out.textContent = "not saved: " + e.message; out.className = "edit-result error"; }
  }));
  const save = document.getElementById("token-save");
  if (save) {
    const input = document.getElementById("token-input");
    input.value = LF.token();
    save.addEventListener("click", () => { localStorage.setItem("labfolio_token", input.value.trim()); });
  }
  const login = document.getElementById("login-form");
  if (login) login.addEventListener("submit", () => {
    localStorage.setItem("labfolio_token", document.getElementById("login-token").value.trim());
  });
}

function bindConfigToggle() {
  document.querySelectorAll("input[name=config-view]").forEach(r => r.addEventListener("change", () => {
    const only = document.querySelector("input[name=config-view]:checked").value === "overrides";
    document.querySelectorAll("#config-table tr.default").forEach(tr => { tr.style.display = only ? "none" : ""; });
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-key][data-runs]").forEach(div => {
    charts.set(div.id, {div: div, runs: div.dataset.runs.split(",").filter(Boolean), key: div.dataset.key, range: null});
  });
  const compareKey = document.getElementById("compare-key");
  if (compareKey) compareKey.addEventListener("change", () => {
    const div = document.getElementById("compare-chart");
    const spec = charts.get(div.id); spec.key = compareKey.value; spec.range = null; drawSeries(div, false);
  });
  ["x-axis", "smoothing"].forEach(id => {
    const el = document.getElementById(id);
    if (el) el.addEventListener("change", () => charts.forEach(spec => { spec.range = null; drawSeries(spec.div, false); }));
  });
  const band = document.getElementById("band-chart");
  if (band) {
    drawBands(band);
    document.getElementById("band-key").addEventListener("change", () => drawBands(band));
  }
  redrawAll();
  bindSelection();
  bindEdits();
  bindConfigToggle();
  startLive();
});
