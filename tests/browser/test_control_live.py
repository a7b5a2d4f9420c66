"""In headless Chromium: Alice presses "Reset reference now" on her live tiny run, and a reset marker
with her name appears on the event strip above the charts within one step; then she stops the run,
which saves a checkpoint first."""

import pytest

from studio.models import Checkpoint, Event, Run, RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

KL_CHART = '.chart[data-metric="kl/ref"]'
KL_POINTS = f"((c) => c && c.data ? c.data[0].x.length : 0)(document.querySelector('{KL_CHART}'))"
# Markers are drawn on the event strip above the charts (one row per kind, hover text per marker).
ALICES_MARKER = (
    "((s) => (s && s.data) ? s.data.filter(t => t.meta === 'reset')"
    ".flatMap(t => t.x.filter((x, i) => t.text[i].includes('reset (manual) by alice'))) : [])"
    "(document.getElementById('event-strip'))"
)
WATCH_FOR_ALICES_MARKER = f"""() => {{
  window.alicesMarker = null;
  document.getElementById('event-strip').on('plotly_afterplot', () => {{
    const xs = {ALICES_MARKER};
    if (xs.length && window.alicesMarker === null) window.alicesMarker = [xs, window.studioRun.lastStep];
  }});
}}"""


def test_alice_resets_the_reference_of_her_live_run_and_sees_her_marker_on_the_kl_chart(
    live_studio, alice, page, log_in, artifacts
):
    live_studio.start_worker("control-worker")
    log_in(page, live_studio.url, "alice")
    page.goto(live_studio.url + "/runs/new/")
    page.fill("#id_name", "steered live")
    page.fill("#id_steps", "300")
    page.fill("#id_eval_every", "0")
    page.fill("#id_reset_interval", "")  # no scheduled resets: the only marker is Alice's
    page.click("#launch")
    page.wait_for_url("**/runs/*/")
    run = Run.objects.get(name="steered live")

    page.wait_for_function(f"() => {KL_POINTS} >= 2", timeout=240_000)
    # Note what the KL chart holds at the moment a marker of Alice's is first drawn on it.
    page.evaluate(WATCH_FOR_ALICES_MARKER)
    clicked_at = Run.objects.get(pk=run.pk).last_step
    # A DOM click: live charts keep the renderer of a CPU-only Chromium too busy for timely pointer clicks.
    page.locator("#reset-reference").dispatch_event("click")
    page.wait_for_function(
        "() => document.getElementById('control-message').textContent === "
        "'The reference will be reset to the current policy at the next step boundary.'"
    )

    page.wait_for_function("() => window.alicesMarker !== null", timeout=120_000)
    markers, chart_step = page.evaluate("window.alicesMarker")
    reset = Event.objects.get(run=run, kind="reset")
    assert reset.data == {"reason": "manual", "requested_by": "alice"} and reset.step >= clicked_at
    assert markers == [reset.step] and chart_step <= reset.step + 1  # on the strip within one step
    page.wait_for_function(
        "() => document.querySelector('#commands .outcome').textContent.startsWith('applied at step')", timeout=30_000
    )
    page.screenshot(path=str(artifacts / "run-page-reset.png"), full_page=True)

    # Stop is graceful: the run saves a checkpoint of its last step, then stops.
    page.locator("#stop").dispatch_event("click")
    page.wait_for_function("() => document.getElementById('status').textContent === 'stopped'", timeout=60_000)
    stopped = Run.objects.get(pk=run.pk)
    assert stopped.status == RunStatus.STOPPED and stopped.last_step < 300
    assert Checkpoint.objects.filter(run=run, step=stopped.last_step).exists()
    assert page.locator("#controls").is_hidden()
