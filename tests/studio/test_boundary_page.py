"""The reasoning-boundary page of a comparison: Alice sees her tasks sorted by how RL moved pass@k,
Bob (her teammate, a viewer) sees it too, Charlie learns nothing; boundary studies sample up to 256
completions per prompt and keep the text of the first 64."""

from __future__ import annotations

import re

import pytest
from access_testing import team_of
from django.urls import reverse
from studio_testing import tiny_config, write_checkpoints

from prorl_engine.boundary import CATEGORIES
from prorl_engine.novelty import NgramIndex, example_text, novelty_shares, training_examples
from studio.compare import side_by_side
from studio.models import Checkpoint, Comparison, Run, RunStatus
from worker.eval_tasks import keep_first_texts, run_comparison

pytestmark = pytest.mark.django_db

BASE, CHECKPOINT = "base: tiny:var/models/tiny-qwen2", "alice's tiny run @ 8"


def answers(*correct: int) -> list[dict]:
    return [{"response": "x", "reward": float(c), "correct": bool(c), "length": 3, "details": {}} for c in correct]


def prompt(uid: str, task: str, base: list[dict], checkpoint: list[dict]) -> dict:
    return {"uid": uid, "prompt": "?", "task": task, "domain": "logic", "answers": {BASE: base, CHECKPOINT: checkpoint}}


@pytest.fixture
def comparison(alice, alices_run) -> Comparison:
    """Finished: on "sum" the base never answers right and the checkpoint does; on "eq" the
    checkpoint answers right more often (3 of 4, not 1 of 4) but both solve it at k = 4."""
    result = {
        "labels": [BASE, CHECKPOINT],
        "metrics": {},
        "prompts": [
            prompt("p1", "sum", answers(0, 0, 0, 0), answers(1, 0, 0, 0)),
            prompt("p2", "sum", answers(0, 0, 0, 0), answers(1, 1, 0, 0)),
            prompt("p3", "eq", answers(1, 0, 0, 0), answers(1, 1, 1, 0)),
        ],
    }
    entries = [
        {"label": BASE, "path": "tiny:var/models/tiny-qwen2", "run": None, "checkpoint": None, "step": 0},
        {"label": CHECKPOINT, "path": "/runs/1/step-8", "run": alices_run.pk, "checkpoint": None, "step": 8},
    ]
    comparison = Comparison.objects.create(
        owner=alice,
        entries=entries,
        settings={"n": 4, "ks": [1, 4], "prompts": 3, "prompts_run": alices_run.pk},
        status=Comparison.Status.FINISHED,
        result=result,
    )
    comparison.runs.set([alices_run])
    return comparison


def rows(page: str) -> dict[str, tuple[str, list[str]]]:
    """task -> (its category, its pass@k cells "base → checkpoint")."""
    found = {}
    for task, category, cells in re.findall(r'<tr data-task="(\w+)" data-category="([^"]+)">(.*?)</tr>', page, re.S):
        found[task] = (category, re.findall(r"<td>([\d.]+ → [\d.]+)</td>", cells))
    return found


def test_alice_sees_each_task_sorted_by_how_rl_moved_its_boundary(client, alice, comparison):
    client.force_login(alice)
    page = client.get(reverse("compare-boundary", args=[comparison.pk])).content.decode()
    assert rows(page) == {
        # eq: (4, 1) -> 1/4, 1/2, 1; (4, 3) -> 3/4, 1, 1
        "eq": ("RL only sharpens", ["0.250 → 0.750", "0.500 → 1.000", "1.000 → 1.000"]),
        # sum: the base 0 everywhere; (4, 1), (4, 2) -> 3/8, 2/3, 1
        "sum": ("base never solves", ["0.000 → 0.375", "0.000 → 0.667", "0.000 → 1.000"]),
    }
    assert re.findall(r"<th>pass@(\d+)<br>", page) == ["1", "2", "4"]
    assert 'data-category="RL only sharpens">RL only sharpens: 1<' in page
    assert 'data-category="RL widens">RL widens: 0<' in page
    link = reverse("compare-boundary", args=[comparison.pk])
    assert f'href="{link}" id="boundary-link"' in client.get(comparison.get_absolute_url()).content.decode()


def test_the_data_holds_every_k_of_every_curve(client, alice, comparison):
    client.force_login(alice)
    data = client.get(reverse("compare-boundary-data", args=[comparison.pk])).json()
    assert data["base"] == BASE and list(data["checkpoints"]) == [CHECKPOINT]
    eq, total = data["checkpoints"][CHECKPOINT]
    assert (eq["task"], eq["prompts"], eq["margin"]) == ("eq", 1, 0.02)
    assert eq["base"] == [0.25, 0.5, 0.75, 1.0] and eq["rl"] == [0.75, 1.0, 1.0, 1.0]
    assert total["task"] == "sum" and total["category"] == "base never solves"


def test_choosing_the_checkpoint_as_base_measures_the_base_model_against_it(client, alice, comparison):
    client.force_login(alice)
    page = client.get(reverse("compare-boundary", args=[comparison.pk]) + "?base=1").content.decode()
    assert rows(page)["eq"] == ("no gain", ["0.750 → 0.250", "1.000 → 0.500", "1.000 → 1.000"])
    assert rows(page)["sum"][0] == "RL narrows"  # pass@4 1 -> 0 on both prompts, no spread: past the margin


def test_a_base_that_names_no_column_falls_back_to_the_first_base_model(client, alice, comparison):
    client.force_login(alice)
    for shown in ("7", "-1", "x", "9" * 5000):
        response = client.get(reverse("compare-boundary", args=[comparison.pk]), {"base": shown})
        assert response.status_code == 200 and rows(response.content.decode())["eq"][0] == "RL only sharpens"


def test_bob_her_teammate_sees_it_and_charlie_learns_nothing(client, alice, bob, charlie, comparison, alices_run):
    alices_run.team = team_of(alice, (bob, "viewer"))
    alices_run.save(update_fields=["team"])
    client.force_login(bob)
    assert client.get(reverse("compare-boundary", args=[comparison.pk])).status_code == 200
    client.force_login(charlie)
    assert client.get(reverse("compare-boundary", args=[comparison.pk])).status_code == 404
    assert client.get(reverse("compare-boundary-data", args=[comparison.pk])).status_code == 404


def test_it_asks_strangers_to_log_in_and_rejects_post(client, alice, comparison):
    response = client.get(reverse("compare-boundary", args=[comparison.pk]))
    assert response.status_code == 302 and reverse("login") in response.url
    client.force_login(alice)
    assert client.post(reverse("compare-boundary", args=[comparison.pk])).status_code == 405


def test_an_unfinished_comparison_says_the_boundary_comes_when_it_is_done(client, alice, comparison):
    Comparison.objects.filter(pk=comparison.pk).update(status=Comparison.Status.RUNNING)
    client.force_login(alice)
    page = client.get(reverse("compare-boundary", args=[comparison.pk])).content.decode()
    assert "its boundary shows once it has finished" in page and "data-task" not in page
    assert client.get(reverse("compare-boundary-data", args=[comparison.pk])).json()["checkpoints"] == {}


def test_the_form_takes_up_to_256_samples_per_prompt(client, alice, alices_run, enqueued):
    ids = [Checkpoint.objects.create(run=alices_run, step=s, path=f"/runs/{alices_run.pk}/step-{s}").pk for s in (4, 8)]
    client.force_login(alice)
    choice = {"checkpoints": ids, "ks": "1, 256", "prompts": "2"}
    assert client.post(reverse("compare-new"), {**choice, "n": "257"}).status_code == 400
    assert client.post(reverse("compare-new"), {**choice, "n": "256"}).status_code == 302
    assert Comparison.objects.get(owner=alice, settings__n=256).settings["ks"] == [1, 256]


def test_the_form_measures_novelty_against_the_prompt_runs_corpus_unless_told_another(
    client, alice, alices_run, enqueued
):
    alices_run.config = tiny_config(novelty_corpus="training_data").to_dict()
    alices_run.save(update_fields=["config"])
    ids = [Checkpoint.objects.create(run=alices_run, step=s, path=f"/runs/{alices_run.pk}/step-{s}").pk for s in (4, 8)]
    client.force_login(alice)
    choice = {"checkpoints": ids, "n": "2", "ks": "1", "prompts": "2"}
    assert client.post(reverse("compare-new"), choice).status_code == 302
    assert client.post(reverse("compare-new"), {**choice, "novelty_corpus": "none"}).status_code == 302
    assert client.post(reverse("compare-new"), {**choice, "novelty_corpus": "wiki"}).status_code == 400
    stored = [c.settings["config"]["novelty_corpus"] for c in Comparison.objects.order_by("pk")]
    assert stored == ["training_data", "none"]


def test_past_64_completions_only_what_pass_at_k_counts_is_stored_and_shown():
    many = answers(*([1, 0] * 40))  # 80 completions
    result = keep_first_texts({"prompts": [prompt("p", "eq", many, answers(1))]})
    kept = result["prompts"][0]["answers"][BASE]
    assert len(kept) == 80 and all("response" in a for a in kept[:64])
    assert kept[64:] == [{"correct": c, "reward": float(c), "length": 3} for c in [True, False] * 8]
    view = side_by_side({"labels": [BASE, CHECKPOINT], "metrics": {}, **result})
    column = view["prompts"][0]["columns"][0]
    assert len(column["samples"]) == 80 and len(column["folded"]) == 62 and column["rate"] == 0.5


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_comparison_job_reports_novelty_against_the_training_split_and_its_boundary_renders(
    client, alice, settings, tmp_path, enqueued
):
    settings.RUNS_DIR = tmp_path
    config = tiny_config(steps=2, checkpoint_every=2, eval_every=0)  # no corpus: the form names one
    run = Run.objects.create(
        owner=alice, name="tiny", config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )
    (checkpoint,) = write_checkpoints(run, steps=[2])
    client.force_login(alice)
    choice = {"checkpoints": [checkpoint.pk], "base_models": [config.model_path], "n": "4", "ks": "1, 4"}
    client.post(
        reverse("compare-new"), {**choice, "prompts": "2", "max_new_tokens": "12", "novelty_corpus": "training_data"}
    )
    comparison = Comparison.objects.get()
    assert run_comparison.apply(args=[comparison.pk]).get() == "finished"

    comparison.refresh_from_db()
    index = NgramIndex.build(example_text(e) for e in training_examples(config.data, config.seed))
    for label in comparison.result["labels"]:
        responses = [a["response"] for p in comparison.result["prompts"] for a in p["answers"][label]]
        expected = novelty_shares(index, responses)
        measured = {n: comparison.result["metrics"][f"eval/all/novelty@{n}"][label] for n in expected}
        assert expected and measured == pytest.approx(expected)
    page = client.get(reverse("compare-boundary", args=[comparison.pk])).content.decode()
    assert {category for category, _ in rows(page).values()} <= set(CATEGORIES) and rows(page)


def test_a_runs_page_charts_novelty_only_when_its_config_names_a_corpus(client, alice, alices_run):
    client.force_login(alice)
    chart = 'data-metric-pattern="^eval/all/novelty@[0-9]+$" data-range="0,1"'
    assert chart not in client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    alices_run.config = tiny_config(novelty_corpus="training_data").to_dict()
    alices_run.save(update_fields=["config"])
    page = client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    assert chart in page and "share never in training_data" in page
