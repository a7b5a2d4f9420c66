"""Helpers of the chart tests: runs with stored curves and events (no training), what a page's
charts drew, and payloads pushed to a live studio's channel layer as a worker sends them."""

from __future__ import annotations

import asyncio
import threading
import time

from channels.layers import get_channel_layer

from prorl_engine.config import RunConfig
from studio.models import Checkpoint, Event, MetricPoint, Run, RunStatus
from studio.presets import default_values

TRAIN_KEYS = (
    "reward/mean",
    "reward/verifier_mean",
    "length/mean",
    "kl/ref",
    "policy/entropy",
    "policy/clip_frac_low",
    "policy/clip_frac_high",
    "sampling/filtered_frac",
    "throughput/tokens_per_s",
)
KS = (1, 2, 4, 16)

# Every chart of a page: its title, whether it is empty, how many curves it drew (SVG paths with a
# non-empty "d"), the names in its legend, the area of its plot, and any WebGL canvas in it.
CHARTS_JS = """(selector) => Array.from(document.querySelectorAll(selector)).map((c) => {
  const drag = c.querySelector('.nsewdrag');
  const box = drag ? drag.getBoundingClientRect() : { width: 0, height: 0 };
  return { title: c.dataset.title || c.dataset.metric, empty: c.dataset.empty,
           drawn: window.studioCharts.drawnTraces(c),
           legend: (c.data || []).filter((t) => t.showlegend !== false && t.visible !== false).map((t) => t.name),
           area: Math.round(box.width * box.height), gl: c.querySelectorAll('canvas.gl-canvas').length,
           lines: ((c.layout && c.layout.shapes) || []).filter((s) => s.type === 'line').length,
           notes: ((c.layout && c.layout.annotations) || []).map((a) => a.text) };
})"""
# The event strip: per kind, the markers it drew, how many markers they stand for, and whether
# every drawn marker lies inside the strip's box.
STRIP_JS = """() => {
  const strip = document.getElementById('event-strip');
  const box = strip.getBoundingClientRect();
  const out = {};
  for (const trace of strip.data) {
    out[trace.meta] = { drawn: trace.x.length, stands_for: trace.customdata.reduce((a, b) => a + b, 0) };
  }
  const points = Array.from(strip.querySelectorAll('.scatterlayer path.point')).map((p) => p.getBoundingClientRect());
  out.inside = points.every((r) => r.top >= box.top && r.bottom <= box.bottom && r.left >= box.left - 1
                                   && r.right <= box.right + 1);
  out.points = points.length;
  return out;
}"""
NO_HORIZONTAL_SCROLL_JS = "() => [document.documentElement.scrollWidth, window.innerWidth]"


def tiny_config(**changes) -> dict:
    return RunConfig.from_dict({**default_values(), **changes}, check_paths=False).to_dict()


def eval_metrics(step: int) -> dict[str, float]:
    """40 eval keys as the engine logs them: pass@k per scope, mean reward and length."""
    metrics = {}
    scopes = ("all", "logic", "math", "chain_sum", "basic_arithmetic", "leg_counting", "gsm_symbolic", "ifeval")
    for scope in scopes:
        for k in (1, 4, 16):
            metrics[f"eval/{scope}/pass@{k}"] = min(1.0, 0.1 + 0.002 * step + 0.05 * k**0.5)
        metrics[f"eval/{scope}/mean_length"] = 20.0 + step / 10
        metrics[f"eval/{scope}/mean_reward"] = 0.2 + step / 1000
    metrics["eval/all/pass@2"] = min(1.0, 0.12 + 0.002 * step)
    metrics.pop("eval/ifeval/mean_reward")
    assert len(metrics) == 40
    return metrics


def step_values(step: int, evals: tuple[int, ...]) -> dict[str, float]:
    values = {key: 0.1 + (step % 17) / 40 + i / 10 for i, key in enumerate(TRAIN_KEYS)}
    values["sampling/generated_tokens"] = 400.0 + step
    values["timing/rollout_s"] = 0.5
    values["timing/train_s"] = 0.25
    if step in evals:
        values.update(eval_metrics(step))
    return values


def seeded_run(
    owner,
    name: str,
    steps: int = 40,
    total: int = 300,
    first: int = 1,
    resets: tuple[int, ...] = (),
    evals: tuple[int, ...] = (10, 20, 30, 40),
    status: str = RunStatus.RUNNING,
    **run_fields,
) -> Run:
    """A run with stored steps `first`..`steps` of every training curve, evaluations at `evals` (eval events
    with 40 metrics each), reference resets at `resets`, a checkpoint at step 20 and one command."""
    run = Run.objects.create(
        owner=owner, name=name, config=tiny_config(steps=total), total_steps=total, status=status, **run_fields
    )
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, step=s, values=step_values(s, evals)) for s in range(first, steps + 1)
    )
    for step in resets:
        Event.objects.create(run=run, step=step, kind="reset", data={"reason": "interval"}, time=0.0)
    for step in evals:
        if first <= step <= steps:
            Event.objects.create(run=run, step=step, kind="eval", data={"metrics": eval_metrics(step)}, time=0.0)
    if first <= 20 <= steps:
        path = str(run.run_dir / "checkpoints" / "step-000020")
        Event.objects.create(run=run, step=20, kind="checkpoint", data={"path": path}, time=0.0)
        Checkpoint.objects.create(run=run, step=20, path=path)
    Run.objects.filter(pk=run.pk).update(last_step=steps)
    run.refresh_from_db()
    return run


def use_live_layer(settings, live_studio) -> None:
    """This test process's channel layer: the live studio's Redis and prefix."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": live_studio.env["REDIS_URL"], "socket_timeout": None}],
                "prefix": live_studio.env["CHANNEL_LAYER_PREFIX"],
            },
        }
    }


def publish(group: str, payloads: list[dict], interval_s: float = 0.0) -> threading.Thread:
    """Send `payloads` to `group` from a thread of its own (Playwright's event loop holds this one),
    `interval_s` apart; returns the started thread."""

    async def send_all():
        layer = get_channel_layer()
        start = time.monotonic()
        for i, payload in enumerate(payloads):
            await layer.group_send(group, payload)
            if interval_s:  # on a fixed schedule: the send's own time does not slow the rate
                await asyncio.sleep(max(0.0, start + (i + 1) * interval_s - time.monotonic()))

    thread = threading.Thread(target=lambda: asyncio.run(send_all()))
    thread.start()
    return thread


class ConsoleWatch:
    """Console errors, warnings that name WebGL, and uncaught exceptions of a page."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"exception: {error}"))
        page.on("response", self._response)

    def _response(self, response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status}: {response.url}")

    def _console(self, message) -> None:
        if message.type == "error" or "webgl" in message.text.lower():
            self.problems.append(f"console {message.type}: {message.text}")
