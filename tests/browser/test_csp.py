"""In headless Chromium: every page of the studio works under its Content-Security-Policy.

Alice walks through the run list, the run form (its schedule preview), her run's page with live
charts (a point pushed over the websocket), a fork form, the sharing page (a new link), a
comparison, an overlay of two runs, teams, API tokens, the registry of models and data sets and a
404; Dana opens the share link; Mallory gets the lockout page. Any `securitypolicyviolation` event (a
refused inline script or style, an eval, a connection elsewhere) or console error on any of them
fails the test, and every page's response carries the policy.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.layers import get_channel_layer

from prorl_engine.config import RunConfig
from studio.models import Checkpoint, Comparison, Event, MetricPoint, Run, RunStatus, ShareLink
from studio.payloads import metrics_message, point_payload, run_progress
from studio.permissions import new_token, token_hash
from studio.presets import default_values

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POINTS_JS = "(sel) => { const c = document.querySelector(sel); return c && c.data ? c.data[0].x.length : 0; }"
REWARD_CHART = '.chart[data-metric="reward/mean"]'
SOCKET_OPEN_JS = "() => window.studioRun && window.studioRun.socket && window.studioRun.socket.readyState === 1"
# Reported to the test from every document the context opens (init scripts run before the page's own).
LISTEN_JS = """document.addEventListener("securitypolicyviolation", (e) => window.reportViolation(
  [location.pathname, e.violatedDirective, e.blockedURI, e.sourceFile + ":" + e.lineNumber].join(" | ")));"""
KEYS = ("reward/mean", "reward/verifier_mean", "length/mean", "kl/ref", "policy/entropy")
NOT_FOUND_PATH = "/runs/999999999/"
# The browser logs each response with an error status it was sent to on purpose (the 404, the lockout).
STATUS_LOG = "Failed to load resource: the server responded with a status of "
SELECTED_JS = (
    "(id) => { const i = document.getElementById(id); return i.value.length > 0 && i.selectionStart === 0 "
    "&& i.selectionEnd === i.value.length; }"
)


class Watch:
    """Collects CSP violations, console errors and uncaught exceptions of a browser context."""

    def __init__(self, context, expected_statuses: tuple[int, ...] = ()):
        self.problems: list[str] = []
        self.policies: dict[str, str] = {}
        self.expected = tuple(f"{STATUS_LOG}{status}" for status in expected_statuses)
        context.expose_function("reportViolation", lambda text: self.problems.append(f"CSP violation: {text}"))
        context.add_init_script(LISTEN_JS)

    def page(self, context):
        page = context.new_page()
        page.on("console", lambda message: self._console(message, page.url))
        page.on("pageerror", lambda error: self.problems.append(f"exception: {error} ({page.url})"))
        page.on("response", self._record_policy)
        return page

    def _console(self, message, url: str) -> None:
        if message.type == "error" and not message.text.startswith(self.expected):
            self.problems.append(f"console error: {message.text} ({url})")

    def _record_policy(self, response) -> None:
        if response.request.resource_type == "document":
            self.policies[response.url] = response.headers.get("content-security-policy", "")


def tiny_config() -> dict:
    return RunConfig.from_dict(default_values(), check_paths=False).to_dict()


def with_points(run: Run, steps: int) -> Run:
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, step=s, values={k: s / 10 for k in KEYS}) for s in range(1, steps + 1)
    )
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, last_step=steps)
    Event.objects.create(run=run, step=2, kind="reset", data={"reason": "schedule"}, time=0.0)
    run.refresh_from_db()
    return run


def finished_comparison(owner, run: Run, checkpoint: Checkpoint) -> Comparison:
    answer = {"response": "<answer>2</answer>", "reward": 1.0, "correct": True, "length": 3, "details": {}}
    result = {
        "labels": ["a", "b"],
        "metrics": {"eval/all/pass@1": {"a": 0.5, "b": 1.0}},
        "prompts": [
            {
                "uid": "p1",
                "prompt": "1+1",
                "task": "chain_sum",
                "domain": "logic",
                "answers": {"a": [answer], "b": [answer]},
            }
        ],
    }
    comparison = Comparison.objects.create(
        owner=owner,
        status=Comparison.Status.FINISHED,
        result=result,
        settings={"n": 1, "ks": [1], "prompts": 1, "max_new_tokens": 8, "prompts_run": run.pk},
        entries=[
            {"label": "a", "path": checkpoint.path, "run": run.pk, "checkpoint": checkpoint.pk, "step": 3},
            {"label": "b", "path": "tiny:", "run": None, "checkpoint": None, "step": 0},
        ],
    )
    comparison.runs.set([run])
    return comparison


def push_point(live_studio, settings, run: Run, step: int) -> None:
    """A metrics payload to the run's group on the live studio's channel layer, as a worker sends it
    (from a thread of its own: Playwright's event loop holds this one)."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": live_studio.env["REDIS_URL"], "socket_timeout": None}],
                "prefix": live_studio.env["CHANNEL_LAYER_PREFIX"],
            },
        }
    }
    MetricPoint.objects.create(run=run, step=step, values={k: step / 10 for k in KEYS})
    Run.objects.filter(pk=run.pk).update(last_step=step)
    run.refresh_from_db()
    payload = metrics_message([point_payload(step, {k: step / 10 for k in KEYS})], run_progress(run))
    thread = threading.Thread(target=lambda: asyncio.run(get_channel_layer().group_send(run.group_name, payload)))
    thread.start()
    thread.join(30)


def watch_live_chart(page, live_studio, settings, run: Run) -> None:
    # Every predicate is a function: Playwright eval()s a bare expression in the page, which the policy refuses.
    page.wait_for_function(f"(sel) => ({POINTS_JS})(sel) >= 1", arg=REWARD_CHART, timeout=60_000)
    page.wait_for_function(SOCKET_OPEN_JS, timeout=30_000)
    seen = page.evaluate(POINTS_JS, REWARD_CHART)
    push_point(live_studio, settings, run, Run.objects.get(pk=run.pk).last_step + 1)
    page.wait_for_function(f"(sel) => ({POINTS_JS})(sel) > {seen}", arg=REWARD_CHART, timeout=30_000)


def test_every_page_runs_under_the_policy_without_a_violation(live_studio, settings, alice, browser):
    run = with_points(Run.objects.create(owner=alice, name="csp run", config=tiny_config(), total_steps=50), 3)
    other = with_points(Run.objects.create(owner=alice, name="other run", config=tiny_config(), total_steps=50), 4)
    checkpoint = Checkpoint.objects.create(run=run, step=3, path=str(run.run_dir / "checkpoints" / "step-000003"))
    comparison = finished_comparison(alice, run, checkpoint)
    token = new_token()
    ShareLink.objects.create(run=run, token_hash=token_hash(token), created_by=alice)

    alices = browser.new_context(viewport={"width": 1400, "height": 1600})
    watch = Watch(alices, expected_statuses=(404,))
    page = watch.page(alices)
    url = live_studio.url
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")

    page.goto(url + "/runs/new/")
    page.wait_for_function("() => document.querySelector('#preview .main-svg') !== null", timeout=60_000)
    page.fill("#id_steps", "120")  # the preview redraws from preview.json
    page.wait_for_timeout(800)

    page.goto(f"{url}/runs/{run.pk}/")
    watch_live_chart(page, live_studio, settings, run)
    # plotly's own rules (hover labels, modebar) went into its hash-allowed <style> through the CSSOM
    assert page.evaluate("() => document.getElementById('plotly.js-style-global').sheet.cssRules.length") > 0

    page.goto(f"{url}/runs/{run.pk}/fork/?checkpoint={checkpoint.pk}")
    page.goto(f"{url}/runs/{run.pk}/sharing/")
    page.click("#create-link")
    page.click("#new-link-url")
    assert page.evaluate(SELECTED_JS, "new-link-url")  # select_on_click.js, the inline onclick it replaces

    page.goto(f"{url}/compare/?checkpoint={checkpoint.pk}")
    page.goto(f"{url}/compare/{comparison.pk}/")
    page.check("#only-differing")
    page.goto(f"{url}/overlay/?run={run.pk}&run={other.pk}")
    page.wait_for_function("() => document.querySelectorAll('#overlay-charts .main-svg').length >= 5", timeout=60_000)
    page.goto(url + "/teams/")
    page.fill("#team-create input[name=name]", "csp team")
    page.click("#team-create button[type=submit]")
    page.wait_for_url("**/teams/*/")
    page.goto(url + "/account/api-tokens/")
    page.click("#token-create button[type=submit]")
    page.click("#new-token-value")
    assert page.evaluate(SELECTED_JS, "new-token-value")
    page.goto(url + "/registry/")
    page.fill("#register_name", "csp model")  # its two forms render and take input under the policy
    assert page.goto(url + NOT_FOUND_PATH).status == 404

    danas = browser.new_context(viewport={"width": 1400, "height": 1600})
    watch_dana = Watch(danas)
    shared = watch_dana.page(danas)
    shared.goto(f"{url}/s/{token}/")
    watch_live_chart(shared, live_studio, settings, run)

    mallorys = browser.new_context()
    watch_mallory = Watch(mallorys, expected_statuses=(429,))
    login = watch_mallory.page(mallorys)
    for _ in range(settings.AXES_FAILURE_LIMIT):  # the live server runs with the same default
        login.goto(url + "/accounts/login/")
        login.fill("#id_username", "mallory")
        login.fill("#id_password", "not her password")
        login.click("button[type=submit]")
        login.wait_for_load_state()
    assert "Too many failed logins" in login.content()

    problems = watch.problems + watch_dana.problems + watch_mallory.problems
    assert problems == [], "\n".join(problems)
    policies = {**watch.policies, **watch_dana.policies, **watch_mallory.policies}
    missing = [
        page_url
        for page_url, policy in policies.items()
        if "script-src 'self'" not in policy and not page_url.endswith(NOT_FOUND_PATH)
    ]  # DEBUG: none on 404
    assert len(policies) >= 13 and url + "/registry/" in policies and missing == []
    for context in (alices, danas, mallorys):
        context.close()
