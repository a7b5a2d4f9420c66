// The run page: draw every chart from metrics.json, then extend it live from the websocket.
// Each chart is a <div class="chart"> naming its curves: data-metric="key,key" or
// data-metric-pattern="<regex>" (the eval keys that exist), or data-view="pass-at-k" (pass@k against k,
// one curve per evaluation). Above them, the event strip (#event-strip) marks resets, commands,
// checkpoints (and those the disk refused, with why), evaluations and watchdog firings; the toolbar (#chart-controls) chooses the x-axis, smoothing, log scale
// and which markers show. Nothing else here knows which curves exist.
//
// Staying responsive at 20 steps/s: points are queued, and the charts they change are redrawn in
// rounds (at most one every FLUSH_MS), one chart per animation frame, only those in view
// (IntersectionObserver); a chart out of view is marked stale and redrawn when it scrolls in.
// Curves that outgrow REFETCH_POINTS are fetched again, downsampled by the server.
(function () {
  "use strict";
  const C = window.studioCharts;
  const root = document.getElementById("run");
  const charts = Array.from(document.querySelectorAll("#run .chart"));
  const strip = document.getElementById("event-strip");
  const FLUSH_MS = 250;
  const REFETCH_POINTS = 6000;
  const MERGE_PX = 10;  // markers closer than this on the strip become one (its hover lists them all)
  const PASS_AT_K_CURVES = 8;  // evaluations drawn on the pass@k-vs-k chart: the first and the latest
  const KINDS = {
    reset: { row: "resets", color: "#c62828", symbol: "triangle-down" },
    command: { row: "commands", color: "#3949ab", symbol: "diamond" },
    checkpoint: { row: "checkpoints", color: "#2e7d32", symbol: "square" },
    // a checkpoint the disk refused: on the checkpoints row, shown and hidden with them
    checkpoint_failed: { row: "checkpoints", color: "#b71c1c", symbol: "x", shownWith: "checkpoint" },
    eval: { row: "evals", color: "#6a1b9a", symbol: "circle" },
    watchdog: { row: "watchdogs", color: "#ef6c00", symbol: "star" },
    planned: { row: "planned resets", color: "rgba(198, 40, 40, 0.35)", symbol: "line-ns-open" },
  };
  const ROWS = ["planned resets", "evals", "checkpoints", "watchdogs", "commands", "resets"];
  const MARKED = ["reset", "command", "checkpoint", "checkpoint_failed", "eval", "watchdog"];  // the strip marks these

  const state = {
    lastStep: 0, totalSteps: Number(root.dataset.totalSteps || 0), series: {}, axes: {}, windows: [],
    plannedResets: [], markers: [], resets: [], commands: [], applied: {}, parent: null, socket: null,
    retry: 500, progress: null, revoked: false, range: null, x: "step", smoothing: 0, log: false,
    planned: false,
    show: { reset: true, command: true, checkpoint: true, eval: true, watchdog: true, planned: true, windows: true },
    visible: new Set(), stale: new Set(), drawnAt: 0, fetchedAt: 0,
  };
  window.studioRun = state;  // for people poking at the page, and the browser tests

  // --- which curves, on which x ---------------------------------------------------------------
  function keysFor(chart) {
    if (chart.dataset.metricPattern) {
      const pattern = new RegExp(chart.dataset.metricPattern);
      return Object.keys(state.series).filter((k) => pattern.test(k)).sort(C.byK);
    }
    if (chart.dataset.metric) return chart.dataset.metric.split(",");
    return [];
  }

  // x of a step on the chosen axis (studio/charts.js: the step, or a running total at that step).
  function xOf(step) {
    return C.xOf(state.series, state.x, step);
  }

  function xsOf(steps) {
    return C.xsOf(state.series, state.x, steps);
  }

  // The x-axis fitted to the data (first to last step); "whole planned run": up to the planned length.
  function fittedRange() {
    let first = Infinity;
    for (const key of Object.keys(state.series)) {
      const s = state.series[key];
      if (s.steps.length && !key.startsWith("cumulative/")) first = Math.min(first, s.steps[0]);
    }
    if (!Number.isFinite(first)) first = 0;
    const last = state.planned ? Math.max(state.totalSteps, state.lastStep) : Math.max(state.lastStep, first + 1);
    const x0 = xOf(first);
    const x1 = xOf(last);
    if (x0 === null || x1 === null) return undefined;
    return x1 > x0 ? [x0, x1] : [x0, x0 + 1];
  }

  function currentRange() {
    return state.range || fittedRange();
  }

  // --- shapes on the charts: length-penalty windows, and the planned run beyond the last step --
  function chartShapes() {
    const out = [];
    if (state.show.windows) {
      for (const [first, last] of state.windows) {
        if (first > state.lastStep && !state.planned) continue;
        const x0 = xOf(first - 0.5);
        const x1 = xOf(Math.min(last + 0.5, state.planned ? last + 0.5 : state.lastStep + 0.5));
        if (x0 === null || x1 === null) continue;
        out.push({ type: "rect", xref: "x", yref: "paper", x0: x0, x1: x1, y0: 0, y1: 1, layer: "below",
                   fillcolor: "rgba(255, 165, 0, 0.10)", line: { width: 0 } });
      }
    }
    if (state.planned && state.totalSteps > state.lastStep && state.x === "step") {
      out.push({ type: "rect", xref: "x", yref: "paper", x0: state.lastStep, x1: state.totalSteps, y0: 0, y1: 1,
                 layer: "below", fillcolor: "rgba(0, 0, 0, 0.04)", line: { width: 0 } });
    }
    return out;
  }

  function plannedNote() {
    if (!state.totalSteps || state.lastStep >= state.totalSteps) return [];
    return [{ text: "step " + state.lastStep + " of " + state.totalSteps + " planned", xref: "paper", yref: "paper",
              x: 1, y: 1.02, xanchor: "right", yanchor: "bottom", showarrow: false,
              font: { size: 9, color: "#999" }, name: "planned" }];
  }

  // --- drawing ----------------------------------------------------------------------------------
  function chartLayout(chart, traceCount, empty) {
    const layout = C.baseLayout(chart.dataset.title, traceCount);
    const fixed = chart.dataset.range ? chart.dataset.range.split(",").map(Number) : null;
    layout.xaxis.range = currentRange();
    layout.xaxis.title = { text: C.AXIS_TITLES[state.x], font: { size: 10 }, standoff: 4 };
    if (fixed) layout.yaxis.range = fixed;
    else if (state.log) layout.yaxis.type = "log";
    layout.shapes = chartShapes();
    layout.annotations = (empty ? [C.noDataNote()] : []).concat(plannedNote());
    return layout;
  }

  function drawChart(chart) {
    if (chart.dataset.view === "pass-at-k") return drawPassAtK(chart);
    const keys = keysFor(chart);
    chart.dataset.keys = JSON.stringify(keys);
    const traces = [];
    let empty = true;
    keys.forEach((key, i) => {
      const s = state.series[key] || { steps: [], values: [] };
      const color = C.PALETTE[i % C.PALETTE.length];
      const xs = xsOf(s.steps);
      if (s.steps.length) empty = false;
      traces.push(C.rawTrace(key, xs, s.values.slice(), color, state.smoothing));
      traces.push(C.mainTrace(key, xs, s.values, color, state.smoothing));
    });
    if (state.parent && state.x === "step") {  // a fork: the parent's curves up to the fork step, in grey
      for (const key of keys) {
        const p = state.parent.series[key];
        if (!p) continue;
        traces.push({ name: key + " (parent #" + state.parent.run + ")", type: "scatter", mode: "lines",
                      x: p.steps, y: C.ema(p.values, state.smoothing).values,
                      line: { color: "rgba(120, 120, 120, 0.7)", width: 1.2 } });
      }
    }
    chart.dataset.empty = empty ? "true" : "false";
    Plotly.react(chart, traces, chartLayout(chart, keys.length + (traces.length - 2 * keys.length), empty),
                 C.config("run-" + root.dataset.run + "-" + chart.dataset.title));
    state.stale.delete(chart);
  }

  // pass@k against k, one curve per evaluation (the ProRL "reasoning boundary" view): whether
  // training moved pass@1 only, or pass@k at large k too.
  function drawPassAtK(chart) {
    const pattern = new RegExp(chart.dataset.metricPattern || "^eval/all/pass@\\d+$");
    const keys = Object.keys(state.series).filter((k) => pattern.test(k)).sort(C.byK);
    const ks = keys.map(C.kOf);
    const steps = Array.from(new Set(keys.flatMap((k) => state.series[k].steps))).sort((a, b) => a - b);
    const shown = steps.length <= PASS_AT_K_CURVES ? steps : [steps[0]].concat(steps.slice(-(PASS_AT_K_CURVES - 1)));
    const traces = shown.map((step, i) => {
      const shade = shown.length === 1 ? 1 : i / (shown.length - 1);
      const ys = keys.map((k) => {
        const s = state.series[k];
        const j = s.steps.indexOf(step);
        return j < 0 ? null : s.values[j];
      });
      return { name: "step " + step, type: "scatter", mode: "lines+markers", x: ks, y: ys,
               line: { color: "rgba(106, 27, 154, " + (0.25 + 0.75 * shade).toFixed(2) + ")", width: 1.5 },
               marker: { size: 5 } };
    });
    const layout = C.baseLayout(chart.dataset.title, traces.length);
    layout.hovermode = "closest";
    layout.xaxis = { type: "log", tickvals: ks, ticktext: ks.map(String), title: { text: "k", font: { size: 10 } } };
    layout.yaxis = { range: [0, 1], title: { text: "pass@k", font: { size: 10 } } };
    layout.annotations = traces.length ? [] : [C.noDataNote()];
    chart.dataset.keys = JSON.stringify(keys);
    chart.dataset.empty = traces.length ? "false" : "true";
    Plotly.react(chart, traces, layout, C.config("run-" + root.dataset.run + "-pass-at-k"));
    state.stale.delete(chart);
  }

  // --- the event strip --------------------------------------------------------------------------
  function describe(event) {
    const d = event.data || {};
    const by = d.requested_by ? " by " + d.requested_by : "";
    if (event.kind === "reset") return "reset (" + (d.reason || "?") + ")" + by;
    if (event.kind === "command") return (d.kind || "command").replace(/_/g, " ") + by;
    if (event.kind === "checkpoint") return "checkpoint" + (d.path ? " " + d.path : "");
    if (event.kind === "checkpoint_failed") return "checkpoint not written: " + (d.error || d.reason || "?");
    if (event.kind === "watchdog") {
      return "watchdog: " + (d.condition || "?") + (d.value !== undefined ? " (value " + C.formatNumber(d.value) + ")" : "") +
        (d.action ? " → " + d.action : "");
    }
    if (event.kind === "eval") {
      const metrics = d.metrics || {};
      const pass = Object.keys(metrics).filter((k) => k.startsWith("eval/all/pass@")).sort(C.byK);
      return "eval: " + pass.map((k) => k.slice("eval/all/".length) + " " + C.formatNumber(metrics[k])).join(", ");
    }
    return event.kind;
  }

  // Markers of one kind, merged where they lie closer than MERGE_PX on the strip's width.
  function mergedTrace(kind, items, range, width) {
    const span = range ? range[1] - range[0] : 1;
    const gap = width > 0 ? (span * MERGE_PX) / width : 0;
    const groups = [];
    for (const item of items) {
      if (item.x === null) continue;
      const group = groups[groups.length - 1];
      if (group && item.x - group.x0 <= gap) group.items.push(item);
      else groups.push({ x0: item.x, items: [item] });
    }
    const style = KINDS[kind];
    return {
      name: style.row, type: "scatter", mode: "markers", hoverinfo: "text", showlegend: false,
      x: groups.map((g) => g.items.reduce((sum, it) => sum + it.x, 0) / g.items.length),
      y: groups.map(() => style.row),
      text: groups.map((g) => {
        const lines = g.items.slice(0, 8).map((it) => "step " + it.step + ": " + it.text);
        if (g.items.length > 8) lines.push("… and " + (g.items.length - 8) + " more");
        return (g.items.length > 1 ? g.items.length + " " + style.row + "<br>" : "") + lines.join("<br>");
      }),
      marker: { color: style.color, symbol: style.symbol, line: { width: kind === "planned" ? 1.5 : 0,
                color: style.color }, size: groups.map((g) => Math.min(7 + 2 * Math.log2(g.items.length), 16)) },
      customdata: groups.map((g) => g.items.length),  // how many markers each drawn one stands for
      visible: state.show[style.shownWith || kind],
      meta: kind,
    };
  }

  function drawStrip() {
    if (!strip) return;
    const range = currentRange();
    const width = Math.max(strip.clientWidth - 110, 100);
    const byKind = { reset: [], command: [], checkpoint: [], checkpoint_failed: [], eval: [], watchdog: [], planned: [] };
    for (const event of state.markers) {
      if (!byKind[event.kind] || (event.kind === "command" && event.data.kind === "reset_reference")) continue;
      byKind[event.kind].push({ x: xOf(event.step), step: event.step, text: describe(event) });
    }
    for (const step of state.plannedResets) {
      if (state.planned || step <= state.lastStep) byKind.planned.push({ x: xOf(step), step: step, text: "planned reset" });
    }
    const traces = Object.keys(byKind).map((kind) => mergedTrace(kind, byKind[kind], range, width));
    const shapes = state.show.windows ? chartShapes().filter((s) => s.fillcolor.startsWith("rgba(255")) : [];
    Plotly.react(strip, traces, {
      height: 118, margin: { l: 95, r: 15, t: 6, b: 20 }, showlegend: false, hovermode: "closest",
      xaxis: { range: range, showgrid: false, zeroline: false, tickfont: { size: 9 } },
      yaxis: { type: "category", categoryorder: "array", categoryarray: ROWS, range: [-0.6, ROWS.length - 0.4],
               tickfont: { size: 10 }, fixedrange: true },
      shapes: shapes, uirevision: "keep",
    }, { displaylogo: false, responsive: true, displayModeBar: false });
    strip.dataset.markers = String(traces.reduce((n, t) => n + t.x.length, 0));
  }

  function drawAll() {
    for (const chart of charts) {
      if (state.visible.has(chart) || !state.observer) drawChart(chart);
      else state.stale.add(chart);
    }
    drawStrip();
    state.drawnAt = performance.now();
  }

  // After a change of the toolbar or the zoom: every chart again, one per animation frame.
  function redrawAll() {
    for (const chart of charts) dirty.add(chart);
    if (strip) dirty.add(strip);
    if (!pumping) {
      roundStarted = performance.now();
      pumping = true;
      requestAnimationFrame(pump);
    }
  }

  // --- live points --------------------------------------------------------------------------------
  // Points go into state.series as they arrive; the charts they change are marked dirty and redrawn
  // one per animation frame (so no frame holds more than one chart's redraw), charts in view first.
  // A round of redraws starts at most every FLUSH_MS, or later when the last round took long: the
  // page spends at most about a quarter of its time drawing, however fast the run logs.
  let pending = [];
  let flushTimer = null;
  const dirty = new Set();
  let pumping = false;
  let roundStarted = 0;
  let lastRoundMs = 0;

  function queuePoints(points) {
    pending = pending.concat(points);
    if (flushTimer !== null || pumping) return;
    scheduleRound();
  }

  function scheduleRound() {
    const wait = Math.max(0, Math.max(FLUSH_MS, 3 * lastRoundMs) - (performance.now() - roundStarted));
    flushTimer = setTimeout(() => {
      flushTimer = null;
      const batch = pending;
      pending = [];
      if (batch.length) extend(batch);
    }, wait);
  }

  function addToSeries(points) {
    for (const p of points) {
      for (const key of Object.keys(p.values)) {
        const v = p.values[key];
        if (v === null || v === undefined || !Number.isFinite(v)) continue;
        if (!state.series[key]) state.series[key] = { steps: [], values: [] };
        state.series[key].steps.push(p.step);
        state.series[key].values.push(v);
      }
      const tokens = p.values["sampling/generated_tokens"];
      if (Number.isFinite(tokens)) pushTotal(C.AXIS_KEYS.tokens, p.step, tokens);
      const seconds = (p.values["timing/rollout_s"] || 0) + (p.values["timing/train_s"] || 0);
      if (seconds > 0) pushTotal(C.AXIS_KEYS.time, p.step, seconds);
    }
  }

  function pushTotal(key, step, amount) {
    const axis = state.series[key] || (state.series[key] = { steps: [], values: [] });
    const total = (axis.values.length ? axis.values[axis.values.length - 1] : 0) + amount;
    axis.steps.push(step);
    axis.values.push(total);
  }

  function extend(points) {
    addToSeries(points);
    state.lastStep = Math.max(state.lastStep, points[points.length - 1].step);
    if (Object.values(state.series).some((s) => s.steps.length > REFETCH_POINTS) &&
        performance.now() - state.fetchedAt > 10000) {
      load();  // the server downsamples again: the page never holds more than a few thousand points a curve
      return;
    }
    const logged = new Set(points.flatMap((p) => Object.keys(p.values)));
    for (const chart of charts) {
      // every chart follows the last step while not zoomed; else only those with new points
      if (!state.range || keysFor(chart).some((k) => logged.has(k))) dirty.add(chart);
    }
    if (strip) dirty.add(strip);
    if (!pumping) {
      roundStarted = performance.now();
      pumping = true;
      requestAnimationFrame(pump);
    }
  }

  function pump() {
    const next = Array.from(dirty).find((c) => c === strip || !state.observer || state.visible.has(c));
    if (next === undefined) {  // the rest is out of view: drawn when it scrolls in
      for (const chart of dirty) state.stale.add(chart);
      dirty.clear();
      pumping = false;
      lastRoundMs = performance.now() - roundStarted;
      state.drawnAt = performance.now();
      if (pending.length) scheduleRound();
      return;
    }
    dirty.delete(next);
    if (next === strip) drawStrip();
    else drawChart(next);
    requestAnimationFrame(pump);
  }

  // --- the toolbar ------------------------------------------------------------------------------
  function bindControls() {
    const x = document.getElementById("x-axis");
    if (x) x.addEventListener("change", () => { state.x = x.value; state.range = null; redrawAll(); });
    const smoothing = document.getElementById("smoothing");
    const shown = document.getElementById("smoothing-value");
    if (smoothing) {
      smoothing.addEventListener("input", () => {
        state.smoothing = Number(smoothing.value);
        shown.textContent = state.smoothing.toFixed(2);
        redrawAll();
      });
    }
    const log = document.getElementById("log-scale");
    if (log) log.addEventListener("change", () => { state.log = log.checked; redrawAll(); });
    const planned = document.getElementById("planned-extent");
    if (planned) planned.addEventListener("change", () => { state.planned = planned.checked; state.range = null; redrawAll(); });
    for (const toggle of document.querySelectorAll("#chart-controls input[data-kind]")) {
      toggle.addEventListener("change", () => {
        state.show[toggle.dataset.kind] = toggle.checked;
        if (toggle.dataset.kind === "windows") redrawAll();
        else drawStrip();
      });
    }
  }

  function onZoom(range, source) {
    state.range = range;
    const target = currentRange();
    for (const chart of charts) {  // the others follow, one per animation frame
      if (chart !== source && chart.dataset.view !== "pass-at-k") dirty.add(chart);
    }
    if (range === null && source !== strip) Plotly.relayout(source, { "xaxis.range": target });  // undo: fitted
    if (strip) dirty.add(strip);  // markers merge anew at the new scale
    if (!pumping) {
      roundStarted = performance.now();
      pumping = true;
      requestAnimationFrame(pump);
    }
  }

  function showReadout(event) {
    const box = document.getElementById("readout");
    if (!box || !event.points || !event.points.length) return;
    const x = event.points[0].x;
    const parts = [];
    for (const chart of charts) {
      if (!chart.data || chart.dataset.view === "pass-at-k") continue;
      for (const trace of chart.data) {
        if (trace.showlegend === false || trace.visible === false || !trace.x.length) continue;
        const i = C.nearest(trace.x, x);
        parts.push(trace.name + " " + C.formatNumber(trace.y[i]));
      }
    }
    box.textContent = C.AXIS_TITLES[state.x] + " " + C.formatNumber(x) + " · " + parts.join(" · ");
  }

  // --- the rest of the page ---------------------------------------------------------------------
  function showProgress(progress) {
    if (!progress) return;
    state.progress = progress;
    state.totalSteps = progress.total || state.totalSteps;
    const bar = document.getElementById("progress-bar");
    bar.max = progress.total;
    bar.value = progress.step;
    document.getElementById("progress-text").textContent = "step " + progress.step + " / " + progress.total;
    document.getElementById("eta").textContent =
      progress.eta_s === null || progress.eta_s === undefined ? "" : "· ETA " + formatDuration(progress.eta_s);
  }

  function formatDuration(seconds) {
    const s = Math.round(seconds);
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function showStatus(status, error) {
    const badge = document.getElementById("status");
    badge.textContent = status;
    badge.className = "status status-" + status;
    const box = document.getElementById("error");
    box.textContent = error || "";
    box.hidden = !error;
    if (status !== "running") document.getElementById("worker-lost").hidden = true;
    const controls = document.getElementById("controls");
    if (controls) controls.dataset.status = status;  // pause or resume, whichever applies
    if (controls && ["finished", "failed", "stopped"].includes(status)) controls.hidden = true;
    if (status !== "queued") showQueue(null);
  }

  // The queue note of a queued run (templates/studio/queue_status.html): why it waits and its place,
  // pushed whenever the queue changes (studio/queue.py publish_queue); null once it left the queue.
  function showQueue(queue) {
    const note = document.getElementById("queue-status");
    if (!note) return;
    note.hidden = queue === null;
    if (queue === null) return;
    document.getElementById("queue-reason").textContent = queue.reason;
    note.dataset.position = String(queue.position);
  }

  function addSamples(rows) {
    const body = document.getElementById("samples");
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const value of [row.step, row.task, row.prompt, row.response, row.reward.toFixed(3),
                           row.verifier_reward.toFixed(3), row.length + (row.truncated ? " (cut)" : "")]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.appendChild(td);
      }
      body.insertBefore(tr, body.firstChild);
    }
    while (body.rows.length > 20) body.deleteRow(body.rows.length - 1);
  }

  // One row of the events table: step, kind, what happened; an eval's metrics folded under it.
  function eventRow(event) {
    const tr = document.createElement("tr");
    tr.dataset.kind = event.kind;
    tr.dataset.event = event.id;
    const cells = [String(event.step), event.kind];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const what = document.createElement("td");
    const data = event.data || {};
    if (event.kind === "eval" && data.metrics && typeof data.metrics === "object") {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      const count = Object.keys(data.metrics).length;
      summary.textContent = describe(event) + " (" + count + " metrics)";
      details.appendChild(summary);
      const table = document.createElement("table");
      table.className = "metrics";
      for (const key of Object.keys(data.metrics).sort(C.byK)) {
        const row = table.insertRow();
        row.insertCell().textContent = key;
        row.insertCell().textContent = C.formatNumber(data.metrics[key]);
      }
      details.appendChild(table);
      what.appendChild(details);
    } else {
      const known = ["reset", "command", "checkpoint"].includes(event.kind);
      const rest = Object.keys(data).filter((k) => !(known && ["reason", "requested_by", "kind", "path", "id"].includes(k)));
      const text = (known ? describe(event) : "") +
        rest.map((k) => (known ? " · " : "") + k + ": " + (typeof data[k] === "object" ? JSON.stringify(data[k]) : data[k]))
          .join(known ? "" : " · ");
      what.textContent = text;
    }
    tr.appendChild(what);
    return tr;
  }

  function showEvents(events) {
    const body = document.getElementById("events");
    body.innerHTML = "";
    for (const event of events) body.appendChild(eventRow(event));
    document.getElementById("no-events").hidden = events.length > 0;
  }

  // A run across ranks: how many, on which devices, and the slowest rank's rollout time with the spread.
  function showRanks(data) {
    const panel = document.getElementById("ranks");
    if (!panel || !data.ranks) return;
    document.getElementById("rank-count").textContent = data.ranks;
    document.getElementById("rank-devices").textContent = (data.devices || []).join(", ");
    panel.hidden = false;
  }

  function showRankTiming(point) {
    const panel = document.getElementById("ranks");
    const slowest = point["timing/rollout_s"], spread = point["timing/rollout_spread_s"];
    if (!panel || panel.hidden || spread === undefined || spread === null) return;
    document.getElementById("rank-rollout").textContent = slowest.toFixed(2) + " s";
    document.getElementById("rank-spread").textContent = spread.toFixed(2) + " s";
  }

  function addEvent(event) {
    if (event.kind === "status" && event.data.ranks) showRanks(event.data);
    const body = document.getElementById("events");
    if (!body.querySelector('tr[data-event="' + event.id + '"]')) {
      body.insertBefore(eventRow(event), body.firstChild);
      while (body.rows.length > 50) body.deleteRow(body.rows.length - 1);
      document.getElementById("no-events").hidden = true;
    }
    if (MARKED.includes(event.kind) && !state.markers.some((m) => m.id === event.id)) {
      state.markers.push(event);
      if (event.kind === "reset") state.resets.push(event);
      drawStrip();
    }
    if (event.kind === "command") {
      state.applied[event.data.id] = event.step;  // for a command listed after the engine applied it
      const outcome = document.querySelector('#commands li[data-command="' + event.data.id + '"] .outcome');
      if (outcome) outcome.textContent = "applied at step " + event.step;
      if (event.data.kind !== "reset_reference") state.commands.push(event);
    }
  }

  function showCheckpoints(checkpoints) {
    const list = document.getElementById("checkpoints");
    list.innerHTML = "";
    for (const checkpoint of checkpoints) {
      const li = document.createElement("li");
      li.dataset.checkpoint = checkpoint.pk;
      li.textContent = "step " + checkpoint.step + (checkpoint.path ? " · " + checkpoint.path : "");
      if (list.dataset.forkUrl) {
        for (const [label, base, cls] of [["fork", list.dataset.forkUrl, "fork-link"],
                                          ["compare", list.dataset.compareUrl, "compare-link"]]) {
          li.appendChild(document.createTextNode(" · "));
          const a = document.createElement("a");
          a.href = base + "?checkpoint=" + encodeURIComponent(checkpoint.pk);
          a.className = cls;
          a.textContent = label;
          li.appendChild(a);
        }
      }
      list.appendChild(li);
    }
    if (!checkpoints.length) {
      const li = document.createElement("li");
      li.textContent = "none yet";
      list.appendChild(li);
    }
  }

  // The command list as the server sees it (ids, outcomes), pushed after each command event.
  function showCommands(commands) {
    let list = document.getElementById("commands");
    if (!list) {
      list = document.createElement("ul");
      list.id = "commands";
      list.className = "events";
      const anchor = document.getElementById("control-message") || document.getElementById("worker-lost");
      anchor.before(list);
    }
    list.innerHTML = "";
    for (const command of commands) {
      const li = document.createElement("li");
      li.dataset.command = command.id;
      li.dataset.state = command.state;
      li.textContent = command.label + " by " + (command.requested_by || "someone") + " · ";
      const outcome = document.createElement("span");
      outcome.className = "outcome";
      outcome.textContent = command.outcome;
      li.appendChild(outcome);
      list.appendChild(li);
    }
  }

  function showRevoked(text) {
    state.revoked = true;
    const box = document.getElementById("revoked");
    box.textContent = text;
    box.hidden = false;
  }

  async function load() {
    state.fetchedAt = performance.now();
    const response = await fetch(root.dataset.metricsUrl, { credentials: "same-origin" });
    if (response.status === 404 && root.dataset.share) {
      showRevoked("This link was revoked or has expired: the run is no longer shared here.");
      return false;
    }
    const data = await response.json();
    state.series = data.series;
    state.windows = data.windows;
    state.plannedResets = data.planned_resets || [];
    state.markers = data.markers || [];
    state.resets = data.resets;
    state.commands = (data.commands || []).filter((c) => c.data.kind !== "reset_reference");
    state.lastStep = data.last_step;
    state.totalSteps = data.total_steps || state.totalSteps;
    pending = [];
    if (root.dataset.parentUrl && !state.parent) {
      const parent = await fetch(root.dataset.parentUrl, { credentials: "same-origin" });
      if (parent.ok) state.parent = await parent.json();
    }
    drawAll();
    document.getElementById("samples").innerHTML = "";
    addSamples(data.samples);
    showEvents(data.events || []);
    showCheckpoints(data.checkpoints || []);
    showProgress(data.progress);
    showStatus(data.status, data.error);
    document.getElementById("worker-lost").hidden = !data.worker_lost;
    return true;
  }

  const CLOSE_TRY_LATER = 1013;  // studio/consumers.py: the live layer is away, try again later

  function connect() {
    if (state.revoked) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + root.dataset.wsPath + "?after=" + state.lastStep +
                                 (root.dataset.wsQuery || ""));  // "&share=<token>" on a share link's page
    state.socket = socket;
    // The backoff restarts once the server sends something, not on open: a socket closed with 1013
    // right after its handshake (the server cannot reach its channel layer) keeps backing off.
    socket.onmessage = (message) => {
      state.retry = 500;
      handle(JSON.parse(message.data));
    };
    socket.onclose = async (event) => {
      state.socket = null;
      if (state.revoked) return;
      const tryLater = event.code === CLOSE_TRY_LATER;  // the link or login is fine: only retry
      if (!tryLater && root.dataset.share) {  // refused (4403) or dropped: is the link still good?
        const check = await fetch(location.href, { credentials: "same-origin", cache: "no-store" }).catch(() => null);
        if (check && check.status === 404) {
          showRevoked("This link was revoked or has expired: the run is no longer shared here.");
          return;
        }
      } else if (event.code === 4403) {
        showRevoked("You no longer have access to this run: reload the page to see where you stand.");
        return;
      }
      // spread out (x0.5 to x1.5), so that the pages a restart dropped do not all come back at once
      setTimeout(connect, state.retry * (0.5 + Math.random()));
      state.retry = Math.min(state.retry * 2, 10000);
    };
  }

  function handle(msg) {
    if (msg.kind === "metrics") {
      const points = msg.points.filter((p) => p.step > state.lastStep && !pending.some((q) => q.step === p.step));
      if (points.length) {
        queuePoints(points);
        showRankTiming(points[points.length - 1].values);
      }
      showProgress(msg.progress);
      document.getElementById("worker-lost").hidden = true;
    } else if (msg.kind === "event") {
      addEvent(msg.event);
    } else if (msg.kind === "samples") {
      addSamples(msg.rows);
    } else if (msg.kind === "status") {
      showStatus(msg.status, msg.error);
      showProgress(msg.progress);
    } else if (msg.kind === "checkpoints") {
      showCheckpoints(msg.checkpoints);
    } else if (msg.kind === "commands") {
      showCommands(msg.commands);
    } else if (msg.kind === "queue") {
      showQueue(msg.queue);
    } else if (msg.kind === "revoked") {
      showRevoked("This link was revoked: the page no longer updates.");
    } else if (msg.kind === "rewind") {
      // The run resumes from a checkpoint: forget the steps after it and redraw from the server.
      state.lastStep = Math.min(state.lastStep, msg.step);
      pending = [];
      load();
    }
  }

  // Charts scrolled out of view are not redrawn while points arrive; they catch up when seen.
  if ("IntersectionObserver" in window) {
    state.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) {
          state.visible.add(entry.target);
          if (state.stale.has(entry.target) || !entry.target.data) drawChart(entry.target);
        } else {
          state.visible.delete(entry.target);
        }
      }
    }, { rootMargin: "200px" });
    for (const chart of charts) state.observer.observe(chart);
  }

  bindControls();
  load().then((ok) => {
    // Zoom, hover and the readout are bound once every chart exists (drawn, or drawn when seen).
    for (const chart of charts) if (!chart.data) drawChart(chart);
    C.syncZoom(charts.concat(strip ? [strip] : []), onZoom);
    for (const chart of charts) chart.on("plotly_hover", showReadout);
    if (ok) connect();
  });
})();
