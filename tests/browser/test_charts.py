"""In headless Chromium: every chart of the run page, a fork's page and an overlay of five runs is
drawn (SVG curves, no WebGL), markers of 30 resets stay in the event strip, the toolbar's x-axis,
smoothing, log scale and shared zoom work, and the pages fit a 390 px wide phone.

The runs here have stored curves and events but train nothing (the live tiny run is
test_run_page.py): the pages are what is tested, on the live studio's daphne."""

from __future__ import annotations

from pathlib import Path

import pytest
from charts_testing import CHARTS_JS, KS, NO_HORIZONTAL_SCROLL_JS, STRIP_JS, ConsoleWatch, seeded_run

from studio.models import Checkpoint, Run, RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ALL_DRAWN_JS = """(selector) => { const charts = document.querySelectorAll(selector);
  return charts.length > 0 && Array.from(charts).every((c) => c.data && c.dataset.empty !== undefined
    && c.querySelector('.main-svg')); }"""
PASS_AT_K = [f"eval/all/pass@{k}" for k in KS]
THIRTY_RESETS = tuple(range(5, 151, 5))


def chart(charts: list[dict], title: str) -> dict:
    return next(c for c in charts if c["title"] == title)


def open_run_page(page, live_studio, log_in, run: Run, username: str = "alice") -> ConsoleWatch:
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, username)
    page.goto(f"{live_studio.url}/runs/{run.pk}/")
    page.wait_for_function(ALL_DRAWN_JS, arg="#run .chart", timeout=60_000)
    page.wait_for_function("() => document.getElementById('event-strip').data !== undefined", timeout=30_000)
    return watch


def test_every_chart_of_the_run_page_is_drawn_and_30_resets_stay_in_the_strip(
    live_studio, alice, page, log_in, artifacts
):
    run = seeded_run(alice, "charted", steps=150, total=3000, resets=THIRTY_RESETS, evals=(30, 60, 90, 120, 150))
    watch = open_run_page(page, live_studio, log_in, run)

    charts = page.evaluate(CHARTS_JS, "#run .chart")
    assert len(charts) == 11
    for c in charts:  # every chart drew its curves, in SVG, with a real plot area and no line across it
        assert c["empty"] == "false" and c["drawn"] >= 1 and c["area"] > 20_000 and c["gl"] == 0, c
        assert c["lines"] == 0 and not any("reset" in note for note in c["notes"]), c
    over_time = chart(charts, "pass@k (held-out, all tasks)")
    assert over_time["legend"] == PASS_AT_K and over_time["drawn"] == 4  # k order, not text order
    against_k = chart(charts, "pass@k against k, per evaluation")
    assert against_k["legend"] == [f"step {s}" for s in (30, 60, 90, 120, 150)] and against_k["drawn"] == 5
    assert chart(charts, "Held-out response length (tokens)")["legend"] == ["eval/all/mean_length"]
    assert chart(charts, "Clip fractions")["drawn"] == 2
    layouts = page.evaluate(
        "() => Array.from(document.querySelectorAll('#run .chart')).map((c) => "
        "[c.dataset.title, c.layout.xaxis.range, c.layout.yaxis.range, c.layout.legend.y])"
    )
    ranges = {title: (x, y, legend_y) for title, x, y, legend_y in layouts}
    assert ranges["pass@k (held-out, all tasks)"][1] == [0, 1]
    assert ranges["KL to reference"][0] == [1, 150]  # fitted to the data, not the 3,000 planned steps
    assert all(legend_y < 0 for _, _, legend_y in ranges.values())  # legends below the plot
    assert "step 150 of 3000 planned" in chart(charts, "KL to reference")["notes"]

    strip = page.evaluate(STRIP_JS)
    assert strip["reset"]["stands_for"] == 30 and 1 <= strip["reset"]["drawn"] <= 30
    assert (strip["checkpoint"]["stands_for"], strip["eval"]["stands_for"]) == (1, 5)
    assert strip["inside"] and strip["points"] >= 3
    page.screenshot(path=str(artifacts / "run-page-charts.png"), full_page=True)

    # Zoom one chart: all follow, and the strip; more resets stand apart once zoomed in.
    page.evaluate(
        "() => Plotly.relayout(document.querySelector('.chart[data-metric=\"kl/ref\"]'), "
        "{'xaxis.range[0]': 50, 'xaxis.range[1]': 100})"
    )
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#run .chart:not([data-view]), #event-strip'))"
        ".every((c) => c.layout.xaxis.range[0] === 50 && c.layout.xaxis.range[1] === 100)"
    )
    zoomed = page.evaluate(STRIP_JS)
    assert zoomed["reset"]["drawn"] >= strip["reset"]["drawn"] and zoomed["reset"]["stands_for"] == 30
    page.evaluate(
        "() => Plotly.relayout(document.querySelector('.chart[data-metric=\"kl/ref\"]'), {'xaxis.autorange': true})"
    )
    page.wait_for_function(
        "() => document.querySelector('.chart[data-metric=\"reward/mean\"]').layout.xaxis.range[1] === 150"
    )

    # The hover readout names every curve's value at the hovered step.
    page.hover('.chart[data-metric="kl/ref"] .nsewdrag')
    page.wait_for_function("() => document.getElementById('readout').textContent.startsWith('step ')")
    readout = page.locator("#readout").inner_text()
    assert "reward/mean" in readout and "kl/ref" in readout and "policy/clip_frac_high" in readout

    # Toolbar: smoothing draws the raw curve faint behind; log scale; x as generated tokens.
    page.evaluate(
        "() => { const s = document.getElementById('smoothing'); s.value = '0.9';"
        " s.dispatchEvent(new Event('input')); }"
    )
    page.wait_for_function(
        "() => document.querySelector('.chart[data-metric=\"policy/clip_frac_low,policy/clip_frac_high\"]')"
        ".data[0].visible === true"
    )
    smoothed = page.evaluate(CHARTS_JS, "#run .chart")
    assert chart(smoothed, "KL to reference")["drawn"] == 2 and chart(smoothed, "Clip fractions")["drawn"] == 4
    page.check("#log-scale")
    page.wait_for_function("() => document.querySelector('.chart[data-metric=\"kl/ref\"]').layout.yaxis.type === 'log'")
    page.select_option("#x-axis", "tokens")
    tokens = sum(400 + s for s in range(1, 151))
    page.wait_for_function(
        "(end) => Array.from(document.querySelectorAll('#run .chart:not([data-view])'))"
        ".every((c) => c.layout.xaxis.range[0] === 401 && c.layout.xaxis.range[1] === end)",
        arg=tokens,
    )
    assert all(c["drawn"] >= 1 for c in page.evaluate(CHARTS_JS, "#run .chart"))
    page.select_option("#x-axis", "step")

    # Each kind of marker can be hidden.
    page.uncheck("#chart-controls input[data-kind=reset]")
    page.wait_for_function(
        "() => document.getElementById('event-strip').data.find((t) => t.meta === 'reset').visible === false"
    )

    # A chart as a PNG: plotly's own button, under the policy (data: images only).
    kl = page.locator('.chart[data-metric="kl/ref"]')
    kl.hover()
    with page.expect_download(timeout=30_000) as download:
        kl.locator('.modebar-btn[data-title="Download plot as a PNG"]').click()
    assert download.value.suggested_filename == f"run-{run.pk}-KL_to_reference.png"
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The events table folds an evaluation's 40 metrics under one line.
    summary = page.locator("#events tr[data-kind=eval] summary").first.inner_text()
    assert summary.startswith("eval: pass@1 ") and summary.endswith("(40 metrics)")
    assert page.locator("#events tr[data-kind=eval] table.metrics").first.is_hidden()
    assert watch.problems == [], "\n".join(watch.problems)


def test_an_overlay_of_five_runs_and_a_forks_page_draw_every_chart(live_studio, alice, page, log_in, artifacts):
    runs = [seeded_run(alice, f"run {i}", steps=30, evals=(10, 20, 30)) for i in range(5)]
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, "alice")
    page.goto(live_studio.url + "/overlay/?" + "&".join(f"run={r.pk}" for r in runs))
    page.wait_for_function(ALL_DRAWN_JS, arg="#overlay-charts .chart", timeout=60_000)
    charts = page.evaluate(CHARTS_JS, "#overlay-charts .chart")
    assert len(charts) >= 50  # every training curve and each of the 40 eval keys
    for c in charts:  # not one blank chart: five curves each, SVG
        assert c["drawn"] == 5 and c["area"] > 20_000 and c["gl"] == 0 and len(c["legend"]) == 5, c
    page.screenshot(path=str(artifacts / "overlay-five-runs.png"), full_page=True)

    parent = runs[0]
    Run.objects.filter(pk=parent.pk).update(status=RunStatus.FINISHED)
    start = Checkpoint.objects.get(run=parent, step=20)
    fork = seeded_run(
        alice,
        "forked",
        first=21,
        steps=40,
        evals=(30, 40),
        parent_run=parent,
        parent_checkpoint=start,
        fork_step=20,
    )
    page.goto(f"{live_studio.url}/runs/{fork.pk}/")
    page.wait_for_function(ALL_DRAWN_JS, arg="#run .chart", timeout=60_000)
    page.wait_for_function("() => window.studioRun.parent !== null")
    charts = page.evaluate(CHARTS_JS, "#run .chart")
    for c in charts:
        assert c["empty"] == "false" and c["drawn"] >= 1 and c["gl"] == 0, c
    assert chart(charts, "KL to reference")["legend"] == ["kl/ref", f"kl/ref (parent #{parent.pk})"]
    assert chart(charts, "KL to reference")["drawn"] == 2
    assert chart(charts, "pass@k against k, per evaluation")["drawn"] == 2

    page.goto(f"{live_studio.url}/runs/{parent.pk}/fork/?checkpoint={start.pk}")
    page.wait_for_function("() => document.querySelector('#preview .main-svg') !== null", timeout=60_000)
    assert watch.problems == [], "\n".join(watch.problems)


def test_the_run_page_and_the_overlay_fit_a_390_px_phone(live_studio, alice, browser, log_in, artifacts):
    run = seeded_run(alice, "a run with a rather long name to see whether the title wraps on a phone", steps=40)
    other = seeded_run(alice, "other", steps=40)
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    open_run_page(page, live_studio, log_in, run)
    width, viewport = page.evaluate(NO_HORIZONTAL_SCROLL_JS)
    assert viewport == 390 and width <= 390
    boxes = page.evaluate(
        "() => Array.from(document.querySelectorAll('#run .chart')).map((c) => c.getBoundingClientRect().left)"
    )
    assert len(set(round(left) for left in boxes)) == 1  # one column
    page.screenshot(path=str(artifacts / "run-page-390px.png"), full_page=True)
    for path in (f"/overlay/?run={run.pk}&run={other.pk}", "/runs/new/", f"/runs/{run.pk}/fork/"):
        page.goto(live_studio.url + path)
        page.wait_for_load_state("networkidle")
        width, _ = page.evaluate(NO_HORIZONTAL_SCROLL_JS)
        assert width <= 390, path
