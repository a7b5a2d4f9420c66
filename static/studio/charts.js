// What every chart page of the studio draws the same way (run page, fork's run page, overlay):
// SVG traces only, legends below the plot, a "no data yet" note, one hover readout per step, EMA
// smoothing with the raw curve faint behind it, a log-scale switch, zoom shared by all charts and the
// x-axis as step, generated tokens or wall time.
//
// Why SVG ("scatter") and never a WebGL trace type: a browser keeps only a few WebGL contexts
// (Chromium: 16), so a page of 12 charts, or an overlay of 5 runs, loses the oldest ones and they go
// blank; and plotly's WebGL code compiles with Function(), which the studio's CSP refuses. The
// server downsamples each curve to about CHART_POINTS points, which SVG draws in milliseconds.
// The plotly bundle the pages load (plotly-basic.min.js) has no WebGL trace type at all.
(function () {
  "use strict";

  const NO_DATA = "no data yet";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf"];

  // Exponential moving average as TensorBoard draws it: debiased, so the first points are not
  // pulled towards 0. weight 0 returns the values as they are.
  function ema(values, weight, start) {
    let last = start ? start.last : 0;
    let n = start ? start.n : 0;
    const out = new Array(values.length);
    for (let i = 0; i < values.length; i++) {
      n += 1;
      last = last * weight + (1 - weight) * values[i];
      out[i] = weight > 0 ? last / (1 - Math.pow(weight, n)) : values[i];
    }
    return { values: out, state: { last: last, n: n } };
  }

  // The k of "eval/all/pass@16" (16), for sorting keys in k order rather than as text.
  function kOf(key) {
    const match = /pass@(\d+)$/.exec(key);
    return match ? Number(match[1]) : Infinity;
  }

  function byK(a, b) {
    return kOf(a) - kOf(b) || (a < b ? -1 : a > b ? 1 : 0);
  }

  function noDataNote() {
    return { text: NO_DATA, xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
             font: { size: 14, color: "#999" }, name: "no-data" };
  }

  // The layout every chart starts from: legend under the plot (never squeezing it), one unified
  // hover label for all curves at the hovered x.
  function baseLayout(title, traceCount) {
    return {
      title: { text: title, font: { size: 13 }, x: 0.01, xanchor: "left" },
      margin: { l: 55, r: 15, t: 32, b: 40 }, height: traceCount > 2 ? 300 : 260,
      hovermode: "x unified", showlegend: traceCount > 1,
      legend: { orientation: "h", x: 0, xanchor: "left", y: -0.18, yanchor: "top", font: { size: 10 } },
      xaxis: { automargin: true, zeroline: false }, yaxis: { automargin: true, zeroline: false },
      uirevision: "keep",  // a redraw keeps what the person toggled in the legend
    };
  }

  function config(filename) {
    return {
      displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"],
      toImageButtonOptions: { format: "png", filename: filename.replace(/[^A-Za-z0-9_.-]+/g, "_"), scale: 2 },
    };
  }

  // The raw curve, faint, behind its smoothed one (hidden when there is no smoothing).
  function rawTrace(name, xs, ys, color, smoothing) {
    return { name: name + " (raw)", type: "scatter", mode: "lines", x: xs, y: ys, showlegend: false,
             hoverinfo: "skip", line: { color: color, width: 1 }, opacity: 0.25, visible: smoothing > 0 };
  }

  function mainTrace(name, xs, ys, color, smoothing) {
    return { name: name, type: "scatter", mode: "lines", x: xs, y: ema(ys, smoothing).values,
             line: { color: color, width: 1.6 } };
  }

  // Zoom shared by a page's charts: a zoom (or the double-click that undoes it) on any of them is
  // applied to the others. `onChange(range or null)` hears about each; null: back to the fitted range.
  // A person's zoom arrives as "xaxis.range[0]"/"xaxis.range[1]" (or "xaxis.autorange"); the pages
  // set ranges themselves as "xaxis.range": [a, b], which is therefore not taken for a zoom.
  function syncZoom(charts, onChange) {
    let syncing = false;
    for (const chart of charts) {
      chart.on("plotly_relayout", (event) => {
        if (syncing) return;
        let range;
        if (event["xaxis.range[0]"] !== undefined) range = [event["xaxis.range[0]"], event["xaxis.range[1]"]];
        else if (event["xaxis.autorange"]) range = null;
        else return;
        syncing = true;
        try {
          onChange(range, chart);
        } finally {
          syncing = false;
        }
      });
    }
    return { busy: () => syncing };
  }

  // The x-axes a chart page offers: the step, or a running total that the server sums over every
  // stored step (studio/series.py `cumulative_axes`) and sends as curves of their own.
  const AXIS_KEYS = { tokens: "cumulative/generated_tokens", time: "cumulative/wall_s" };
  const AXIS_TITLES = { step: "step", tokens: "generated tokens", time: "training wall time (min)" };

  // x of `step` on axis `x` ("step", "tokens" or "time") for the run whose curves are `series`: the
  // step, or the running total at that step, interpolated between the downsampled points of the
  // total (which only grows); wall time in minutes. null when the run has no such total.
  function xOf(series, x, step) {
    if (x === "step") return step;
    const axis = series[AXIS_KEYS[x]];
    if (!axis || !axis.steps.length) return null;
    const steps = axis.steps;
    const i = nearest(steps, step);
    let total;
    if (steps[i] === step || steps.length === 1) total = axis.values[i];
    else {
      const j = steps[i] < step ? Math.min(i + 1, steps.length - 1) : Math.max(i - 1, 0);
      const [a, b] = i < j ? [i, j] : [j, i];
      const t = steps[b] === steps[a] ? 0 : (step - steps[a]) / (steps[b] - steps[a]);
      total = axis.values[a] + Math.min(Math.max(t, 0), 1) * (axis.values[b] - axis.values[a]);
    }
    return x === "time" ? total / 60 : total;
  }

  function xsOf(series, x, steps) {
    return x === "step" ? steps.slice() : steps.map((step) => xOf(series, x, step));
  }

  // The value of each drawn curve at (nearest to) x: the readout under the toolbar.
  function nearest(xs, x) {
    let lo = 0;
    let hi = xs.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && Math.abs(xs[lo - 1] - x) <= Math.abs(xs[lo] - x)) lo -= 1;
    return lo;
  }

  function formatNumber(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return Number(v.toPrecision(4)).toString();
  }

  // Whether a chart drew something: the test's and the readout's notion of "not blank".
  function drawnTraces(chart) {
    return Array.from(chart.querySelectorAll(".scatterlayer .trace path.js-line"))
      .filter((path) => (path.getAttribute("d") || "").length > 1).length;
  }

  window.studioCharts = { ema, kOf, byK, noDataNote, baseLayout, config, rawTrace, mainTrace, syncZoom, nearest,
                          xOf, xsOf, formatNumber, drawnTraces, AXIS_KEYS, AXIS_TITLES, PALETTE, NO_DATA };
})();
