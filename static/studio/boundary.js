// The reasoning-boundary page: per checkpoint and task, pass@k against k (log axis, k = 1..n) of the
// base column and of the checkpoint, from boundary.json (studio/boundary.py). Where the curves part
// at large k is what the task's category says.
(function () {
  "use strict";
  const C = window.studioCharts;
  const root = document.getElementById("boundary");
  const BASE_COLOR = "#888", RL_COLOR = "#6a1b9a";

  function ticks(n) {
    const ks = [];
    for (let k = 1; k < n; k *= 2) ks.push(k);
    return ks.concat([n]);
  }

  // The shared SVG curve (charts.js), unsmoothed, over k = 1..n.
  function curve(name, ys, color, dash) {
    const trace = C.mainTrace(name, ys.map((_, i) => i + 1), ys, color, 0);
    trace.line.dash = dash;
    return trace;
  }

  function draw(holder, base, label, task) {
    const chart = document.createElement("div");
    chart.className = "chart";
    chart.dataset.title = task.task + ": " + task.category;
    holder.appendChild(chart);
    const traces = [curve(base, task.base, BASE_COLOR, "dot"), curve(label, task.rl, RL_COLOR, "solid")];
    const layout = C.baseLayout(chart.dataset.title, traces.length);
    const ks = ticks(task.base.length);
    layout.xaxis = { type: "log", tickvals: ks, ticktext: ks.map(String), title: { text: "k", font: { size: 10 } } };
    layout.yaxis = { range: [0, 1], title: { text: "pass@k", font: { size: 10 } } };
    chart.dataset.empty = "false";
    Plotly.react(chart, traces, layout, C.config("boundary-" + label + "-" + task.task));
  }

  function drawAll(data) {
    const holders = Array.from(root.querySelectorAll(".boundary-charts"));
    for (const holder of holders) {
      const tasks = data.checkpoints[holder.dataset.label] || [];
      for (const task of tasks) draw(holder, data.base, holder.dataset.label, task);
    }
    root.dataset.drawn = "true";
  }

  if (root && root.dataset.url) {
    fetch(root.dataset.url, { credentials: "same-origin" })
      .then((response) => response.json())
      .then(drawAll);
  }
})();
