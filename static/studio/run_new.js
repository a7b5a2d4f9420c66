// The new-run page: redraw the schedule preview (length-penalty windows, planned resets) as the
// form changes.
(function () {
  "use strict";
  const form = document.getElementById("run-form");
  const chart = document.getElementById("preview");
  const errors = document.getElementById("preview-errors");
  let timer = null;

  async function preview() {
    const response = await fetch(form.dataset.previewUrl, { method: "POST", body: new FormData(form),
                                                            credentials: "same-origin" });
    const data = await response.json();
    errors.innerHTML = "";
    if (data.errors) {
      for (const message of data.errors) {
        const li = document.createElement("li");
        li.textContent = message;
        errors.appendChild(li);
      }
      return;
    }
    const shapes = data.windows.map(([first, last]) => ({
      type: "rect", x0: first - 0.5, x1: last + 0.5, y0: 0, y1: 1, yref: "paper",
      fillcolor: "rgba(255, 165, 0, 0.3)", line: { width: 0 },
    })).concat(data.resets.map((step) => ({
      type: "line", x0: step, x1: step, y0: 0, y1: 1, yref: "paper", line: { color: "#c00", width: 1 },
    })));
    const traces = [
      { name: "penalty on", x: [null], y: [null], mode: "markers", marker: { color: "orange", symbol: "square" } },
      { name: "reset", x: [null], y: [null], mode: "lines", line: { color: "#c00" } },
    ];
    Plotly.react(chart, traces, {
      height: 200, margin: { l: 20, r: 10, t: 10, b: 40 }, shapes: shapes,
      xaxis: { range: [0, data.steps + 1], title: { text: "step" } }, yaxis: { visible: false },
      legend: { orientation: "h", y: -0.4 },
    }, { displaylogo: false, responsive: true });
    chart.dataset.windows = JSON.stringify(data.windows);
    chart.dataset.resets = JSON.stringify(data.resets);
  }

  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(preview, 300); });
  preview();
})();
