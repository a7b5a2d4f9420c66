// The run page: draw every chart from metrics.json, then extend it live from the websocket.
// Each chart is a <div data-metric="key,key"> (or data-metric-prefix="eval/"); nothing else here
// knows which curves exist.
(function () {
  "use strict";
  const root = document.getElementById("run");
  const charts = Array.from(document.querySelectorAll(".chart"));
  const state = { lastStep: 0, windows: [], resets: [], commands: [], applied: {}, parent: null, socket: null,
                  retry: 500, progress: null };
  window.studioRun = state;  // for people poking at the page, and the browser tests

  function keysFor(chart, available) {
    const prefix = chart.dataset.metricPrefix;
    if (prefix) return available.filter((k) => k.startsWith(prefix)).sort();
    return chart.dataset.metric.split(",");
  }

  function shapes() {
    const out = state.windows.map(([first, last]) => ({
      type: "rect", xref: "x", yref: "paper", x0: first - 0.5, x1: last + 0.5, y0: 0, y1: 1,
      fillcolor: "rgba(255, 165, 0, 0.15)", line: { width: 0 }, layer: "below",
    }));
    for (const reset of state.resets) {
      out.push({ type: "line", xref: "x", yref: "paper", x0: reset.step, x1: reset.step, y0: 0, y1: 1,
                 line: { color: "rgba(200, 0, 0, 0.6)", width: 1, dash: "dot" } });
    }
    for (const command of state.commands) {  // pause, resume, stop, save: who asked, at which step
      out.push({ type: "line", xref: "x", yref: "paper", x0: command.step, x1: command.step, y0: 0, y1: 1,
                 line: { color: "rgba(60, 60, 160, 0.5)", width: 1, dash: "dash" } });
    }
    return out;
  }

  function annotations() {
    return state.resets.map((reset) => ({
      x: reset.step, y: 1, xref: "x", yref: "paper", showarrow: false, textangle: -90, xanchor: "right",
      yanchor: "top", font: { size: 9, color: "#a00" },
      text: "reset: " + (reset.data.reason || "") + (reset.data.requested_by ? " (" + reset.data.requested_by + ")" : ""),
    })).concat(state.commands.map((command) => ({
      x: command.step, y: 0, xref: "x", yref: "paper", showarrow: false, textangle: -90, xanchor: "left",
      yanchor: "bottom", font: { size: 9, color: "#336" },
      text: command.data.kind + (command.data.requested_by ? " (" + command.data.requested_by + ")" : ""),
    })));
  }

  function layout(title) {
    return {
      title: { text: title, font: { size: 13 } }, margin: { l: 50, r: 10, t: 30, b: 30 }, height: 240,
      xaxis: { automargin: true }, showlegend: true, legend: { orientation: "h", y: -0.18 },
      shapes: shapes(), annotations: annotations(),
    };
  }

  function draw(series) {
    const available = Object.keys(series);
    for (const chart of charts) {
      const keys = keysFor(chart, available);
      chart.dataset.keys = JSON.stringify(keys);
      const traces = keys.map((key) => ({
        // SVG traces: plotly's WebGL trace type compiles code with Function(), which the
        // Content-Security-Policy refuses (no 'unsafe-eval'); ~CHART_POINTS points a curve draw fast in SVG.
        name: key, mode: "lines", type: "scatter",
        x: series[key] ? series[key].steps.slice() : [], y: series[key] ? series[key].values.slice() : [],
      }));
      Plotly.react(chart, traces, layout(chart.dataset.title), { displaylogo: false, responsive: true });
    }
  }

  function redecorate() {
    for (const chart of charts) Plotly.relayout(chart, { shapes: shapes(), annotations: annotations() });
  }

  // Points are drawn once per animation frame: a page that falls behind (a fast run, a slow
  // machine) extends each chart once with everything that arrived, instead of once per message.
  let pending = [];
  function queuePoints(points) {
    if (!pending.length) {
      requestAnimationFrame(() => {
        const batch = pending;
        pending = [];
        if (batch.length) extend(batch);
      });
    }
    pending = pending.concat(points);
  }

  function extend(points) {
    for (const chart of charts) {
      let keys = JSON.parse(chart.dataset.keys || "[]");
      if (chart.dataset.metricPrefix) {  // a new eval key appears: give it a trace
        const fresh = new Set();
        for (const p of points) for (const k of Object.keys(p.values)) {
          if (k.startsWith(chart.dataset.metricPrefix) && !keys.includes(k)) fresh.add(k);
        }
        if (fresh.size) {
          const added = Array.from(fresh).sort();
          Plotly.addTraces(chart, added.map((k) => ({ name: k, mode: "lines", type: "scatter", x: [], y: [] })));
          keys = keys.concat(added);
          chart.dataset.keys = JSON.stringify(keys);
        }
      }
      if (!keys.length) continue;
      const xs = keys.map(() => []);
      const ys = keys.map(() => []);
      for (const p of points) {
        keys.forEach((key, i) => {
          const v = p.values[key];
          if (v !== null && v !== undefined) { xs[i].push(p.step); ys[i].push(v); }
        });
      }
      Plotly.extendTraces(chart, { x: xs, y: ys }, keys.map((_, i) => i));
    }
  }

  function showProgress(progress) {
    if (!progress) return;
    state.progress = progress;
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

  function addEvent(event) {
    const list = document.getElementById("events");
    const li = document.createElement("li");
    li.textContent = "step " + event.step + " · " + event.kind + " · " + JSON.stringify(event.data);
    list.insertBefore(li, list.firstChild);
    if (event.kind === "reset" && !state.resets.some((r) => r.id === event.id)) {
      state.resets.push(event);
      redecorate();
    }
    if (event.kind === "command") {
      state.applied[event.data.id] = event.step;  // for a command listed after the engine applied it
      const outcome = document.querySelector('#commands li[data-command="' + event.data.id + '"] .outcome');
      if (outcome) outcome.textContent = "applied at step " + event.step;
      if (event.data.kind !== "reset_reference" && !state.commands.some((c) => c.id === event.id)) {
        state.commands.push(event);  // a reset request is drawn by its reset event
        redecorate();
      }
    }
  }

  async function load() {
    const response = await fetch(root.dataset.metricsUrl, { credentials: "same-origin" });
    const data = await response.json();
    state.windows = data.windows;
    state.resets = data.resets;
    state.commands = (data.commands || []).filter((c) => c.data.kind !== "reset_reference");
    state.lastStep = data.last_step;
    draw(data.series);
    if (root.dataset.parentUrl) await drawParent();
    document.getElementById("samples").innerHTML = "";
    addSamples(data.samples);
    showProgress(data.progress);
    showStatus(data.status, data.error);
    document.getElementById("worker-lost").hidden = !data.worker_lost;
  }

  // A fork's page: the parent's curves up to the fork step, in grey, behind the fork's own.
  async function drawParent() {
    if (!state.parent) {
      const response = await fetch(root.dataset.parentUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      state.parent = await response.json();
    }
    for (const chart of charts) {
      if (chart.dataset.metricPrefix) continue;  // its traces grow as eval keys appear
      const keys = JSON.parse(chart.dataset.keys || "[]").filter((key) => state.parent.series[key]);
      Plotly.addTraces(chart, keys.map((key) => ({
        name: key + " (parent #" + state.parent.run + ")", mode: "lines", type: "scatter",
        line: { color: "rgba(120, 120, 120, 0.7)" }, x: state.parent.series[key].steps,
        y: state.parent.series[key].values,
      })));
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + root.dataset.wsPath + "?after=" + state.lastStep +
                                 (root.dataset.wsQuery || ""));  // "&share=<token>" on a share link's page
    state.socket = socket;
    socket.onopen = () => { state.retry = 500; };
    socket.onmessage = (message) => handle(JSON.parse(message.data));
    socket.onclose = () => {
      state.socket = null;
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 10000);
    };
  }

  function handle(msg) {
    if (msg.kind === "metrics") {
      const points = msg.points.filter((p) => p.step > state.lastStep);
      if (points.length) {
        queuePoints(points);
        state.lastStep = points[points.length - 1].step;
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
    } else if (msg.kind === "rewind") {
      // The run resumes from a checkpoint: forget the steps after it and redraw from the server.
      state.lastStep = Math.min(state.lastStep, msg.step);
      pending = [];
      load();
    }
  }

  load().then(connect);
})();
