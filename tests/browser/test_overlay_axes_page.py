"""In headless Chromium: Alice overlays a 30-step and a 20-step run and switches the x-axis to
generated tokens, then to wall time; every chart draws both runs, each on its own running total."""

from __future__ import annotations

import pytest
from charts_testing import CHARTS_JS, ConsoleWatch, seeded_run

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The x of each run's last point on the KL chart (trace 2i + 1: run i's main curve; 2i: its raw one).
LAST_X_JS = """() => { const c = document.querySelector('#overlay-charts .chart[data-metric="kl/ref"]');
  return [c.layout.xaxis.title.text, c.data[1].x[c.data[1].x.length - 1], c.data[3].x[c.data[3].x.length - 1]]; }"""


def tokens_until(step: int) -> int:
    """seeded_run logs 400 + s generated tokens at step s."""
    return sum(400 + s for s in range(1, step + 1))


def test_the_overlay_switches_its_x_axis_for_every_run(live_studio, alice, page, log_in):
    longer, shorter = seeded_run(alice, "longer", steps=30), seeded_run(alice, "shorter", steps=20)
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, "alice")
    page.goto(f"{live_studio.url}/overlay/?run={longer.pk}&run={shorter.pk}")
    page.wait_for_function("() => window.studioOverlay.charts.length > 0 && window.studioOverlay.charts[0].data")
    assert page.evaluate(LAST_X_JS) == ["step", 30, 20]

    page.select_option("#x-axis", "tokens")
    page.wait_for_function("() => window.studioOverlay.charts.every((c) => c.layout.xaxis.title.text !== 'step')")
    assert page.evaluate(LAST_X_JS) == ["generated tokens", tokens_until(30), tokens_until(20)]  # 12465, 8210

    page.select_option("#x-axis", "time")
    page.wait_for_function("() => window.studioOverlay.charts.every((c) => c.layout.xaxis.title.text.includes('wall'))")
    title, longer_x, shorter_x = page.evaluate(LAST_X_JS)
    # 0.5 s rollout + 0.25 s train a step, in minutes
    assert title == "training wall time (min)" and longer_x == pytest.approx(30 * 0.75 / 60)
    assert shorter_x == pytest.approx(20 * 0.75 / 60)
    charts = page.evaluate(CHARTS_JS, "#overlay-charts .chart")
    assert len(charts) >= 10 and all(c["drawn"] == 2 for c in charts), charts
    assert watch.problems == [], "\n".join(watch.problems)
