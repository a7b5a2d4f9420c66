"""The event strip's markers in metrics.json: the latest MAX_MARKERS events of each marker kind (so a
run with thousands of evaluations still shows its resets), oldest first, other kinds left out, and eval
events carrying only their eval/all/* metrics."""

from __future__ import annotations

import json

import pytest
from studio_testing import make_run

from studio import views
from studio.models import Event

pytestmark = pytest.mark.django_db


def test_each_marker_kind_keeps_its_latest_events_oldest_first(client, alice, monkeypatch):
    monkeypatch.setattr(views, "MAX_MARKERS", 2)
    run = make_run(alice, "strip")
    kinds = ["eval", "reset", "eval", "status", "eval", "checkpoint_failed", "reset", "eval", "command", "reset"]
    events = [
        Event.objects.create(run=run, step=step, kind=kind, data={"metrics": {"eval/all/pass@1": step, "x": 1}}, time=0)
        for step, kind in enumerate(kinds, start=1)
    ]
    # two events at one step: the later id is the newer
    events.append(Event.objects.create(run=run, step=10, kind="eval", data={}, time=0))

    client.force_login(alice)
    markers = json.loads(client.get(f"/runs/{run.pk}/metrics.json").content)["markers"]

    # by hand: eval at steps 1, 3, 5, 8, 10 (id last) -> the latest two are step 8 and the step-10 one;
    # reset at 2, 7, 10 -> 7 and 10; checkpoint_failed 6; command 9; status is not a marker kind
    expected = [(6, "checkpoint_failed"), (7, "reset"), (8, "eval"), (9, "command"), (10, "reset"), (10, "eval")]
    assert [(m["step"], m["kind"]) for m in markers] == expected
    assert [m["id"] for m in markers][-1] == events[-1].pk
    eval_at_8 = next(m for m in markers if m["step"] == 8)
    assert eval_at_8["data"]["metrics"] == {"eval/all/pass@1": 8}
