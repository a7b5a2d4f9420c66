"""The overlay's other x-axes: Alice overlays two runs and gets, for each, its running totals of
generated tokens and training wall time, summed over every stored step (as the run page gets them),
and no chart of its own for either total."""

import pytest
from django.urls import reverse
from studio_testing import tiny_config

from studio.models import MetricPoint, Run

pytestmark = pytest.mark.django_db

TOKENS, WALL = "cumulative/generated_tokens", "cumulative/wall_s"


def stored_run(owner, name: str, steps: dict[int, dict[str, float]]) -> Run:
    config = tiny_config()
    run = Run.objects.create(owner=owner, name=name, config=config.to_dict(), total_steps=config.steps)
    MetricPoint.objects.bulk_create(MetricPoint(run=run, step=s, values=v) for s, v in steps.items())
    return run


@pytest.fixture
def two_runs(alice) -> list[Run]:
    first = stored_run(
        alice,
        "first",
        {
            1: {"reward/mean": 0.1, "sampling/generated_tokens": 100, "timing/rollout_s": 1.0, "timing/train_s": 0.5},
            2: {"reward/mean": 0.2, "sampling/generated_tokens": 200, "timing/rollout_s": 2.0, "timing/train_s": 0.5},
            3: {"reward/mean": 0.3, "sampling/generated_tokens": 300, "timing/rollout_s": 3.0, "timing/train_s": 0.5},
        },
    )
    # the second logs no train time: its wall time is its rollout time alone
    second = stored_run(
        alice,
        "second",
        {
            1: {"reward/mean": 0.5, "sampling/generated_tokens": 50, "timing/rollout_s": 2.0},
            2: {"reward/mean": 0.6, "sampling/generated_tokens": 70, "timing/rollout_s": 2.5},
        },
    )
    return [first, second]


def test_each_run_of_the_overlay_comes_with_its_own_running_totals(client, alice, two_runs):
    client.force_login(alice)
    data = client.get(reverse("overlay-data") + "?" + "&".join(f"run={r.pk}" for r in two_runs)).json()
    first, second = (run["series"] for run in data["runs"])
    assert first[TOKENS] == {"steps": [1, 2, 3], "values": [100, 300, 600]}  # 100, +200, +300
    assert first[WALL] == {"steps": [1, 2, 3], "values": [1.5, 4.0, 7.5]}  # 1 + 0.5, +2 + 0.5, +3 + 0.5
    assert second[TOKENS] == {"steps": [1, 2], "values": [50, 120]}
    assert second[WALL] == {"steps": [1, 2], "values": [2.0, 4.5]}
    assert data["keys"] == ["reward/mean", "sampling/generated_tokens", "timing/rollout_s", "timing/train_s"]


def test_the_overlay_page_offers_the_three_x_axes(client, alice, two_runs):
    client.force_login(alice)
    page = client.get(reverse("overlay") + "?" + "&".join(f"run={r.pk}" for r in two_runs)).content.decode()
    assert '<select id="x-axis">' in page
    for value in ("step", "tokens", "time"):
        assert f'<option value="{value}">' in page
