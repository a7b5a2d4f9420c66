// Runs side by side: one chart per metric key, one curve per run, from overlay/data.json; the x-axis
// (step, generated tokens or wall time: each run's curve on its own running totals), smoothing, log
// scale and zoom shared by all charts (studio/charts.js draws them the way the run page does).
(function () {
  "use strict";
  const C = window.studioCharts;
  const root = document.getElementById("overlay");
  const holder = document.getElementById("overlay-charts");
  const state = { data: null, x: "step", smoothing: 0, log: false, range: null, charts: [] };
  window.studioOverlay = state;  // for the browser tests

  function draw(chart) {
    const key = chart.dataset.metric;
    const runs = state.data.runs;
    const traces = [];
    runs.forEach((run, i) => {
      const s = run.series[key];
      if (!s) return;
      const color = C.PALETTE[i % C.PALETTE.length];
      const xs = C.xsOf(run.series, state.x, s.steps);
      traces.push(C.rawTrace(run.name, xs, s.values, color, state.smoothing));
      traces.push(C.mainTrace(run.name, xs, s.values, color, state.smoothing));
    });
    const layout = C.baseLayout(key, runs.length);
    layout.showlegend = traces.length > 0;
    if (/pass@\d+$/.test(key)) layout.yaxis.range = [0, 1];
    else if (state.log) layout.yaxis.type = "log";
    if (state.range) layout.xaxis.range = state.range;
    layout.xaxis.title = { text: C.AXIS_TITLES[state.x], font: { size: 10 }, standoff: 4 };
    layout.annotations = traces.length ? [] : [C.noDataNote()];
    chart.dataset.empty = traces.length ? "false" : "true";
    Plotly.react(chart, traces, layout, C.config("overlay-" + key));
  }

  function onZoom(range) {
    state.range = range;
    for (const chart of state.charts) {
      Plotly.relayout(chart, range ? { "xaxis.range": range } : { "xaxis.autorange": true });
    }
  }

  async function load() {
    const response = await fetch(root.dataset.url, { credentials: "same-origin" });
    state.data = await response.json();
    for (const key of state.data.keys) {
      const chart = document.createElement("div");
      chart.className = "chart";
      chart.dataset.metric = key;
      holder.appendChild(chart);
      state.charts.push(chart);
      draw(chart);
    }
    C.syncZoom(state.charts, onZoom);
  }

  const x = document.getElementById("x-axis");
  if (x) x.addEventListener("change", () => { state.x = x.value; state.range = null; state.charts.forEach(draw); });
  const smoothing = document.getElementById("smoothing");
  if (smoothing) {
    smoothing.addEventListener("input", () => {
      state.smoothing = Number(smoothing.value);
      document.getElementById("smoothing-value").textContent = state.smoothing.toFixed(2);
      state.charts.forEach(draw);
    });
  }
  const log = document.getElementById("log-scale");
  if (log) log.addEventListener("change", () => { state.log = log.checked; state.charts.forEach(draw); });
  load();
})();
