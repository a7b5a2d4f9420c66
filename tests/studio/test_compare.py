"""Comparisons: Alice chooses checkpoints (and base models), an evaluation job has each answer the
same held-out prompts, and the page shows metrics with their differences and the completions side
by side. Bob (viewer) sees it but may not start one on her runs; Charlie learns nothing."""

import re

import pytest
from django.urls import reverse
from studio_testing import tiny_config, write_checkpoints

from studio.compare import side_by_side
from studio.models import Checkpoint, Comparison, Membership, Run, RunStatus, Team, TeamRole

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkpoints(alices_run) -> list[Checkpoint]:
    return [
        Checkpoint.objects.create(run=alices_run, step=step, path=f"/runs/{alices_run.pk}/step-{step:06d}")
        for step in (4, 8)
    ]


def choose(checkpoints, **changes) -> dict:
    return {"checkpoints": [c.pk for c in checkpoints], "n": "4", "ks": "1, 4", "prompts": "3", **changes}


def test_the_form_lists_alices_checkpoints_and_preselects_the_one_she_came_from(client, alice, checkpoints):
    client.force_login(alice)
    page = client.get(reverse("compare-new") + f"?checkpoint={checkpoints[1].pk}").content.decode()
    boxes = dict(re.findall(r'name="checkpoints" value="(\d+)"\s*(checked)?', page))
    assert boxes == {str(checkpoints[0].pk): "", str(checkpoints[1].pk): "checked"}
    assert "tiny:var/models/tiny-qwen2" in page  # the run's base model is offered too


def test_alice_starts_a_comparison_of_two_checkpoints(
    client, alice, checkpoints, enqueued, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("compare-new"), choose(checkpoints))
    comparison = Comparison.objects.get()
    assert response.url == comparison.get_absolute_url() and enqueued == [comparison.pk]
    run = checkpoints[0].run
    assert [e["label"] for e in comparison.entries] == [
        f"alice's tiny run #{run.pk} @ 4",
        f"alice's tiny run #{run.pk} @ 8",
    ]
    assert [e["path"] for e in comparison.entries] == [c.path for c in checkpoints]
    assert {k: comparison.settings[k] for k in ("n", "ks", "prompts", "max_new_tokens", "prompts_run")} == {
        "n": 4,
        "ks": [1, 4],
        "prompts": 3,
        "max_new_tokens": tiny_config().max_response_tokens,
        "prompts_run": run.pk,
    }
    page = client.get(comparison.get_absolute_url()).content.decode()
    assert "status-queued" in page and "this page updates when it is done" in page
    assert client.get(reverse("compare-data", args=[comparison.pk])).json()["status"] == "queued"


def test_a_comparison_needs_two_models(client, alice, checkpoints, enqueued):
    client.force_login(alice)
    response = client.post(reverse("compare-new"), choose(checkpoints[:1]))
    assert response.status_code == 400
    assert "Choose at least two models" in response.content.decode()
    assert not Comparison.objects.exists()


def test_pass_at_k_needs_as_many_samples(client, alice, checkpoints, enqueued):
    client.force_login(alice)
    response = client.post(reverse("compare-new"), choose(checkpoints, n="2", ks="1, 4"))
    assert (
        response.status_code == 400
        and "pass@4 needs at least 4 samples per prompt (n is 2)" in response.content.decode()
    )


def test_a_checkpoint_may_be_compared_with_a_base_model(client, alice, checkpoints, enqueued):
    client.force_login(alice)
    client.post(reverse("compare-new"), choose(checkpoints[:1], base_models=["tiny:var/models/tiny-qwen2"]))
    entries = Comparison.objects.get().entries
    assert [(e["label"], e["path"]) for e in entries][1] == (
        "base: tiny:var/models/tiny-qwen2",
        "tiny:var/models/tiny-qwen2",
    )


def test_charlie_can_neither_compare_nor_see_alices_checkpoints(client, alice, charlie, checkpoints, enqueued):
    client.force_login(charlie)
    assert "alice" not in client.get(reverse("compare-new")).content.decode()
    response = client.post(reverse("compare-new"), choose(checkpoints))
    assert response.status_code == 400 and not Comparison.objects.exists()
    client.force_login(alice)
    client.post(reverse("compare-new"), choose(checkpoints))
    comparison = Comparison.objects.get()
    client.force_login(charlie)
    assert client.get(comparison.get_absolute_url()).status_code == 404
    assert client.get(reverse("compare-data", args=[comparison.pk])).status_code == 404


def test_bob_as_a_viewer_sees_alices_comparison_but_may_not_start_one(client, alice, bob, checkpoints, enqueued):
    team = Team.objects.create(name="lab")
    Membership.objects.create(team=team, user=bob, role=TeamRole.VIEWER)
    Run.objects.filter(pk=checkpoints[0].run_id).update(team=team)
    client.force_login(bob)
    response = client.post(reverse("compare-new"), choose(checkpoints))
    assert response.status_code == 400 and "but not start evaluations on it" in response.content.decode()
    client.force_login(alice)
    client.post(reverse("compare-new"), choose(checkpoints))
    client.force_login(bob)
    assert client.get(Comparison.objects.get().get_absolute_url()).status_code == 200


def test_evaluation_jobs_go_to_the_eval_queue_which_the_embedded_eval_worker_alone_consumes():
    from studio import up
    from worker.celery import app

    assert app.amqp.router.route({}, "worker.eval_tasks.run_comparison")["queue"].name == "eval"
    assert app.amqp.router.route({}, "worker.tasks.train_run")["queue"].name == "gpu"
    queues = {name: up.worker_command(name)[up.worker_command(name).index("--queues") + 1] for name in up.WORKERS}
    assert queues == {"gpu-worker": "gpu", "eval-worker": "eval"}  # a comparison never waits behind training


def answer(response: str, correct: bool) -> dict:
    return {"response": response, "reward": float(correct), "correct": correct, "length": 3, "details": {}}


def test_the_page_marks_differences_in_metrics_and_answers():
    result = {
        "labels": ["a", "b"],
        "metrics": {
            "eval/all/pass@1": {"a": 0.25, "b": 0.75, "delta": 0.5},
            "eval/chain_sum/pass@1": {"a": 0.25, "b": 0.75, "delta": 0.5},
        },
        "prompts": [
            {
                "uid": "p1",
                "prompt": "1+1",
                "task": "chain_sum",
                "domain": "logic",
                "answers": {"a": [answer("2", True), answer("3", False)], "b": [answer("2", True), answer("2", True)]},
            },
            {
                "uid": "p2",
                "prompt": "2+2",
                "task": "chain_sum",
                "domain": "logic",
                "answers": {"a": [answer("4", True)], "b": [answer("4", True)]},
            },
        ],
    }
    view = side_by_side(result)
    assert [(m["key"], m["scope"], [c["delta_text"] for c in m["cells"]]) for m in view["metrics"]] == [
        ("eval/all/pass@1", "all", ["", "+0.500"]),
        ("eval/chain_sum/pass@1", "task", ["", "+0.500"]),
    ]
    first, second = view["prompts"]
    assert first["differs"] and not second["differs"] and view["differing"] == 1
    assert [c["better"] for c in first["columns"]] == [False, True]
    assert [s["changed"] for s in first["columns"][1]["samples"]] == [False, True]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_checkpoints_of_a_tiny_run_answer_the_same_prompts_side_by_side(
    client, alice, settings, tmp_path, enqueued
):
    from worker.eval_tasks import run_comparison

    settings.RUNS_DIR = tmp_path
    config = tiny_config(steps=4, checkpoint_every=2, eval_every=0)
    run = Run.objects.create(
        owner=alice, name="tiny", config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )
    checkpoints = write_checkpoints(run, steps=[2, 4])

    client.force_login(alice)
    client.post(
        reverse("compare-new"),
        choose(checkpoints, n="2", ks="1, 2", prompts="3", max_new_tokens="8", base_models=[config.model_path]),
    )
    comparison = Comparison.objects.get()
    assert enqueued == [comparison.pk]
    assert run_comparison.apply(args=[comparison.pk]).get() == "finished"

    comparison.refresh_from_db()
    labels = [f"tiny #{run.pk} @ 2", f"tiny #{run.pk} @ 4", f"base: {config.model_path}"]
    assert comparison.status == Comparison.Status.FINISHED and comparison.result["labels"] == labels
    prompts = comparison.result["prompts"]
    assert len(prompts) == 3
    for entry in prompts:
        assert [len(entry["answers"][label]) for label in labels] == [2, 2, 2]
    row = comparison.result["metrics"]["eval/all/pass@1"]
    assert set(row) == {*labels, "delta"}

    page = client.get(comparison.get_absolute_url()).content.decode()
    assert page.count('class="compare-prompt') == 3
    for entry in prompts:
        section = page[page.index(f'data-uid="{entry["uid"]}"') :]
        section = section[: section.index("</section>")]
        assert all(f'data-label="{label}"' in section for label in labels)
    assert 'data-metric="eval/all/pass@1"' in page and 'data-metric="eval/chain_sum/mean_length"' in page


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_embedded_workers_queues_take_an_evaluation_job_started_over_http(live_studio, alice, tmp_path):
    """A real Celery worker on gpu,eval (as `make up` starts it) runs a comparison Alice starts
    through the HTTP form; she reads the finished result from data.json."""
    import json
    import time

    from studio_testing import Browserless

    from prorl_engine.tiny import build_tiny_model

    config = tiny_config()
    run = Run.objects.create(
        owner=alice, name="two seeds", config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )
    checkpoints = [
        Checkpoint.objects.create(run=run, step=step, path=str(build_tiny_model(tmp_path / f"s{step}", seed=step)))
        for step in (1, 2)
    ]
    live_studio.start_worker("gpu-and-eval", queues="gpu,eval")
    browser = Browserless(live_studio.url)
    browser.log_in("alice", "alice-password")
    browser.get("/compare/")
    body = "&".join([f"checkpoints={c.pk}" for c in checkpoints] + ["n=2", "ks=1,2", "prompts=2"])
    status, url = post_raw(browser, "/compare/", body)
    comparison = Comparison.objects.get(owner=alice)
    assert status == 200 and url.endswith(comparison.get_absolute_url())
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        data = json.loads(browser.get(f"/compare/{comparison.pk}/data.json")[1])
        if data["status"] in ("finished", "failed"):
            break
        time.sleep(0.5)
    assert data["status"] == "finished", (data["error"], live_studio.logs())
    assert data["result"]["labels"] == [f"two seeds #{run.pk} @ 1", f"two seeds #{run.pk} @ 2"]
    assert all(len(p["answers"][label]) == 2 for p in data["result"]["prompts"] for label in data["result"]["labels"])


def post_raw(browser, path: str, body: str) -> tuple[int, str]:
    """POST an already encoded form body (repeated keys for a multiple choice)."""
    import urllib.request

    data = (body + f"&csrfmiddlewaretoken={browser.csrf_token()}").encode()
    request = urllib.request.Request(browser.base_url + path, data=data, headers={"Referer": browser.base_url + path})
    with browser.opener.open(request, timeout=60) as response:
        return response.status, response.url
