"""Runs side by side: Alice overlays her runs' curves on shared charts and sees only the config
fields that differ; Charlie, who may see none of them, learns nothing."""

import pytest
from django.urls import reverse
from studio_testing import tiny_config

from studio.models import MetricPoint, Run
from studio.overlay import config_diff

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_runs(alice) -> list[Run]:
    runs = []
    for name, changes in [("baseline", {}), ("longer cycle", {"on_steps": 6, "eval_k": [1, 2, 4]})]:
        config = tiny_config(**changes)
        run = Run.objects.create(owner=alice, name=name, config=config.to_dict(), total_steps=config.steps)
        MetricPoint.objects.bulk_create(
            MetricPoint(run=run, step=s, values={"reward/mean": s / 10, "kl/ref": 0.01}) for s in range(1, 6)
        )
        runs.append(run)
    return runs


def query(runs: list[Run]) -> str:
    return "?" + "&".join(f"run={run.pk}" for run in runs)


def test_the_config_diff_keeps_only_changed_fields():
    a, b = tiny_config().to_dict(), tiny_config(on_steps=6, eval_k=[1, 2, 4]).to_dict()
    assert config_diff([a, b]) == [("on_steps", ["3", "6"]), ("eval_k", ["1, 4", "1, 2, 4"])]
    assert config_diff([a, dict(a)]) == []


def test_alice_overlays_two_runs_and_sees_what_their_configs_change(client, alice, two_runs):
    client.force_login(alice)
    page = client.get(reverse("overlay") + query(two_runs)).content.decode()
    assert 'data-field="on_steps"' in page and 'data-field="eval_k"' in page
    assert 'data-field="learning_rate"' not in page  # unchanged fields are left out
    data = client.get(reverse("overlay-data") + query(two_runs)).json()
    assert [r["name"] for r in data["runs"]] == [f"#{two_runs[0].pk} baseline", f"#{two_runs[1].pk} longer cycle"]
    assert data["keys"] == ["reward/mean", "kl/ref"]  # one chart per metric, the run page's order
    assert all(r["series"]["reward/mean"]["steps"] == [1, 2, 3, 4, 5] for r in data["runs"])


def test_charlie_learns_nothing_from_an_overlay_of_alices_runs(client, charlie, two_runs):
    client.force_login(charlie)
    assert client.get(reverse("overlay") + query(two_runs)).status_code == 404
    assert client.get(reverse("overlay-data") + query(two_runs)).status_code == 404
    assert client.get(reverse("overlay") + query(two_runs[:1]) + "&run=99999").status_code == 404
    assert "baseline" not in client.get(reverse("overlay")).content.decode()
