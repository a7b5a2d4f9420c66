// Runs side by side: one chart per metric key, one trace per run, from overlay/data.json.
(function () {
  "use strict";
  const root = document.getElementById("overlay");
  const holder = document.getElementById("overlay-charts");

  async function load() {
    const response = await fetch(root.dataset.url, { credentials: "same-origin" });
    const data = await response.json();
    for (const key of data.keys) {
      const chart = document.createElement("div");
      chart.className = "chart";
      chart.dataset.metric = key;
      holder.appendChild(chart);
      const traces = data.runs.filter((run) => run.series[key]).map((run) => ({
        name: run.name, mode: "lines", type: "scatter", x: run.series[key].steps, y: run.series[key].values,
      }));
      Plotly.newPlot(chart, traces, {
        title: { text: key, font: { size: 13 } }, margin: { l: 50, r: 10, t: 30, b: 30 }, height: 240,
        showlegend: true, legend: { orientation: "h", y: -0.18 },
      }, { displaylogo: false, responsive: true });
    }
  }

  load();
})();
