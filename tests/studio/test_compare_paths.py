"""The evaluation job re-applies the path rules before it loads anything, as the training worker does
for a run: a comparison stored by any route (an admin edit, an old row, a form that forgot to ask)
evaluates only models its owner may use, on held-out data of a run they may still see, and fails
with the message a run gets otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from access_testing import team_of
from studio_testing import tiny_config

from prorl_engine.config import RunConfig
from prorl_engine.paths import DATA_REFUSED, MODEL_REFUSED
from studio.models import Checkpoint, Comparison, RegisteredDataset, Run, TeamRole
from worker.eval_tasks import permitted_models, permitted_prompts_config, run_comparison

pytestmark = pytest.mark.django_db
TINY = "tiny:var/models/tiny-qwen2"


def base(path: str) -> dict:
    return {"label": f"base: {path}", "path": path, "run": None, "checkpoint": None, "step": 0}


def of_checkpoint(checkpoint: Checkpoint) -> dict:
    return {
        "label": f"#{checkpoint.run_id} @ {checkpoint.step}",
        "path": checkpoint.path,
        "run": checkpoint.run_id,
        "checkpoint": checkpoint.pk,
        "step": checkpoint.step,
    }


def stored_comparison(owner, entries: list[dict], prompts_run: Run, config: RunConfig | None = None) -> Comparison:
    """A queued comparison whose models and config no form checked."""
    config = config or RunConfig.from_dict(prompts_run.config, check_paths=False)
    comparison = Comparison.objects.create(
        owner=owner,
        entries=entries,
        settings={
            "n": 1,
            "ks": [1],
            "prompts": 2,
            "max_new_tokens": 4,
            "prompts_run": prompts_run.pk,
            "config": config.to_dict(),
        },
    )
    comparison.runs.set({e["run"] for e in entries if e["run"]} | {prompts_run.pk})
    return comparison


def outcome(comparison: Comparison) -> tuple[str, str, dict | None]:
    """(what the task returned, the stored error, the stored result)."""
    returned = run_comparison.apply(args=[comparison.pk]).get()
    comparison.refresh_from_db()
    return returned, comparison.error, comparison.result


@pytest.fixture
def bobs_run(bob) -> Run:
    config = tiny_config()
    return Run.objects.create(owner=bob, name="bob's", config=config.to_dict(), total_steps=config.steps)


@pytest.fixture
def alices_checkpoint(alices_run, tmp_path) -> Checkpoint:
    """A checkpoint of Alice's run: a folder with a config.json, as far as the rules look."""
    folder = tmp_path / "runs" / str(alices_run.pk) / "checkpoints" / "step-000004"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return Checkpoint.objects.create(run=alices_run, step=4, path=str(folder))


def test_bobs_stored_comparison_of_alices_checkpoint_fails_as_a_missing_model_would(bob, bobs_run, alices_checkpoint):
    refused = outcome(stored_comparison(bob, [base(TINY), base(alices_checkpoint.path)], bobs_run))
    missing = outcome(stored_comparison(bob, [base(TINY), base("/no/such/model")], bobs_run))
    as_a_checkpoint = outcome(stored_comparison(bob, [base(TINY), of_checkpoint(alices_checkpoint)], bobs_run))
    assert refused == missing == as_a_checkpoint == ("failed", f"invalid config: model_path: {MODEL_REFUSED}", None)


def test_the_job_builds_no_model_where_a_stored_comparison_says(bob, bobs_run, tmp_path):
    target = tmp_path / "written-by-the-worker"
    returned, error, _ = outcome(stored_comparison(bob, [base(TINY), base(f"tiny:{target}")], bobs_run))
    assert (returned, error) == ("failed", f"invalid config: model_path: {MODEL_REFUSED}") and not target.exists()


def test_the_job_reads_no_server_file_as_held_out_prompts(bob, bobs_run, tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"prompt": "the root password is", "answer": "hunter2"}) + "\n")
    config = tiny_config(data=[{"task": "x", "source": "file", "path": str(secret), "domain": "math", "eval_size": 1}])
    returned, error, result = outcome(
        stored_comparison(bob, [base(TINY), base("tiny:var/models/other")], bobs_run, config=config)
    )
    assert (returned, error, result) == ("failed", f"invalid config: data[0]: {DATA_REFUSED}", None)


def test_an_editor_demoted_before_the_job_ran_has_his_comparison_refused(alice, bob, alices_run, alices_checkpoint):
    team = team_of(alice, (bob, TeamRole.EDITOR))
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    comparison = stored_comparison(bob, [of_checkpoint(alices_checkpoint), base(TINY)], alices_run)
    assert list(permitted_models(comparison).values())[0] == alices_checkpoint.path  # allowed while an editor
    team.memberships.filter(user=bob).update(role=TeamRole.VIEWER)
    assert outcome(comparison)[:2] == ("failed", f"invalid config: model_path: {MODEL_REFUSED}")


def test_a_viewer_uses_the_held_out_prompts_of_alices_upload_until_he_leaves_her_team(
    settings, alice, bob, alices_run, tmp_path
):
    upload = tmp_path / "uploads" / str(alice.pk) / "f00d" / "sums.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_text("".join(json.dumps({"prompt": f"{i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(4)))
    RegisteredDataset.objects.create(name="sums", owner=alice, path=str(upload), domain="math", uploaded=True)
    config = tiny_config(
        data=[{"task": "sums", "source": "file", "path": str(upload), "domain": "math", "eval_size": 2}]
    )
    team = team_of(alice, (bob, TeamRole.VIEWER))
    Run.objects.filter(pk=alices_run.pk).update(team=team, config=config.to_dict())
    alices_run.refresh_from_db()
    comparison = stored_comparison(bob, [base(TINY), base("tiny:var/models/other")], alices_run)

    assert permitted_prompts_config(comparison).data[0].path == str(upload)
    assert permitted_models(comparison) == {
        f"base: {TINY}": f"tiny:{Path(settings.MODEL_BUILD_DIR) / 'tiny-qwen2'}",
        "base: tiny:var/models/other": f"tiny:{Path(settings.MODEL_BUILD_DIR) / 'other'}",
    }
    team.memberships.filter(user=bob).delete()
    returned, error, _ = outcome(comparison)
    assert returned == "failed" and error.startswith("invalid config: prompts_from: the run whose held-out prompts")
