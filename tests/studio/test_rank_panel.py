"""The run page of a run across ranks: how many, on which devices, and the rollout time of the slowest rank
with the spread (the latest point's timing/rollout_s and timing/rollout_spread_s)."""

import re

import pytest
from django.urls import reverse

from studio.models import Event, MetricPoint

pytestmark = pytest.mark.django_db


def panel(client, run) -> str:
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    return re.search(r'<p class="meta" id="ranks"[^>]*>(.*?)</p>', page, re.S).group(0)


def test_a_run_in_one_process_has_no_rank_panel(client, alice, alices_run):
    client.force_login(alice)
    Event.objects.create(run=alices_run, step=0, kind="status", time=0, data={"status": "running"})
    assert 'id="ranks" hidden' in panel(client, alices_run)


def test_the_panel_shows_the_ranks_devices_and_the_latest_rollout_timing(client, alice, alices_run):
    client.force_login(alice)
    Event.objects.create(
        run=alices_run, step=0, kind="status", time=0, data={"status": "running", "ranks": 2, "devices": ["cpu", "cpu"]}
    )
    Event.objects.create(  # resumed later on four GPUs: the page shows the latest placement
        run=alices_run,
        step=2,
        kind="status",
        time=1,
        data={"status": "running", "ranks": 4, "devices": ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]},
    )
    Event.objects.create(run=alices_run, step=3, kind="status", time=2, data={"status": "paused"})
    for step, slowest, spread in ((1, 2.5, 0.5), (3, 1.234, 0.256)):
        MetricPoint.objects.create(
            run=alices_run, step=step, values={"timing/rollout_s": slowest, "timing/rollout_spread_s": spread}
        )
    shown = " ".join(panel(client, alices_run).split())
    assert "hidden" not in shown.split(">")[0]
    devices = "cuda:0, cuda:1, cuda:2, cuda:3"
    assert f'<span id="rank-count">4</span> ranks on <span id="rank-devices">{devices}</span>' in shown
    assert '<span id="rank-rollout">1.23 s</span>' in shown and '<span id="rank-spread">0.26 s</span>' in shown
