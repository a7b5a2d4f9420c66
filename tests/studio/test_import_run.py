"""`manage.py import_run`: a run folder the CLI trained becomes Alice's run, its rows exactly what
its files hold, stored as the worker's sink stores them; what is not a run folder, a folder still
being trained, a malformed line, an unknown owner and a folder imported before are refused, and
nothing of them is stored."""

from __future__ import annotations

import json
import math
import shutil
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from studio_testing import tiny_config

from prorl_engine import cli, runlock
from prorl_engine.config import RunConfig
from studio import imports
from studio.commands import CommandRefused, send_command
from studio.models import Checkpoint, Event, MetricPoint, Run, RunStatus, Sample

pytestmark = pytest.mark.django_db

STEPS = 5


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder `prorl train` wrote: the engine's tiny preset on a tiny random model, 5 steps, a
    checkpoint every 2 of which the last 2 are kept (step 2's is pruned), a reset at step 5."""
    tmp = tmp_path_factory.mktemp("cli-run")
    config = tiny_config(
        model_path=f"tiny:{tmp / 'tiny-qwen2'}", steps=STEPS, eval_every=0, checkpoint_every=2, keep_checkpoints=2
    )
    (tmp / "tiny.yaml").write_text(config.to_yaml(), encoding="utf-8")
    assert cli.main(["--threads", "1", "train", str(tmp / "tiny.yaml"), "--out", str(tmp / "run")]) == 0
    return tmp / "run"


@pytest.fixture
def run_copy(cli_run: Path, tmp_path: Path) -> Path:
    """A copy of the CLI's run folder that a test may change."""
    return Path(shutil.copytree(cli_run, tmp_path / "run-copy"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def import_run(*args: str) -> tuple[str, str]:
    """Run the command; its stdout and stderr."""
    out, err = StringIO(), StringIO()
    call_command("import_run", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refusal(*args: str) -> str:
    """What the command says on stderr when it refuses, and its error, for a command that must fail."""
    err = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("import_run", *args, stdout=StringIO(), stderr=err)
    return err.getvalue() + str(failed.value)


def test_it_imports_a_cli_run_with_every_row_of_its_files(cli_run, alice):
    out, _ = import_run(str(cli_run), "--owner", "alice", "--name", "tiny cli run", "--tag", "baseline", "--tag", "cli")

    run = Run.objects.get()
    assert out == f"run {run.pk} 'tiny cli run': {STEPS} steps, finished, /runs/{run.pk}/\n"
    config = RunConfig.from_dict(cli.read_config_values(cli_run / "config.yaml"), check_paths=False)
    assert (run.owner, run.config, run.total_steps, run.status, run.error) == (
        alice,
        config.to_dict(),
        STEPS,
        RunStatus.FINISHED,
        "",
    )
    assert sorted(run.tags.values_list("name", flat=True)) == ["baseline", "cli"]
    assert run.imported_from == str(cli_run) and len(run.import_fingerprint) == 64

    metrics = lines(cli_run / "metrics.jsonl")
    points = list(run.points.order_by("step"))
    assert [p.step for p in points] == list(range(1, STEPS + 1)) and run.last_step == STEPS
    assert points[2].values == {key: value for key, value in metrics[2].items() if key != "step"}
    assert math.isfinite(points[-1].values["reward/mean"]) and run.latest_reward == metrics[-1]["reward/mean"]

    events = lines(cli_run / "events.jsonl")
    assert [(e.step, e.kind, e.data, e.time) for e in run.events.order_by("id")] == [
        (e["step"], e["kind"], e["data"], e["time"]) for e in events
    ]
    assert run.started_at.timestamp() == pytest.approx(events[0]["time"], abs=1e-5)
    assert run.finished_at.timestamp() == pytest.approx(events[-1]["time"], abs=1e-5)
    assert events[-1]["data"]["status"] == "finished" and run.attempts == 1

    samples = lines(cli_run / "samples.jsonl")
    assert run.samples.count() == len(samples) == STEPS * 2
    first = run.samples.order_by("id").first()
    assert (first.step, first.prompt, first.response, first.reward, first.details) == (
        samples[0]["step"],
        samples[0]["prompt"],
        samples[0]["response"],
        samples[0]["reward"],
        samples[0]["details"],
    )
    # step 2's checkpoint was pruned after step 5's: the run offers the two kept, where they lie
    assert list(run.checkpoints.values_list("step", "path")) == [
        (4, str(cli_run / "checkpoints" / "step-000004")),
        (5, str(cli_run / "checkpoints" / "step-000005")),
    ]


def test_the_run_page_and_its_metrics_answer_its_owner_and_nobody_else(cli_run, alice, charlie, client):
    import_run(str(cli_run), "--owner", "alice")
    run = Run.objects.get()
    assert run.name == str(cli_run)  # outside the working directory: its absolute path
    client.force_login(alice)
    assert client.get(f"/runs/{run.pk}/").status_code == 200
    data = client.get(f"/runs/{run.pk}/metrics.json").json()
    assert (data["status"], data["last_step"], data["total_steps"]) == ("finished", STEPS, STEPS)
    client.force_login(charlie)
    assert client.get(f"/runs/{run.pk}/").status_code == 404
    assert client.get(f"/runs/{run.pk}/metrics.json").status_code == 404


def test_nan_and_infinity_are_stored_as_the_sink_stores_them(run_copy, alice):
    metrics = lines(run_copy / "metrics.jsonl")
    metrics[1]["reward/mean"] = math.nan
    metrics[-1]["reward/mean"] = math.inf
    write_lines(run_copy / "metrics.jsonl", metrics)
    events = lines(run_copy / "events.jsonl")
    events.insert(1, {"kind": "eval", "step": 1, "data": {"metrics": {"eval/pass@1": math.nan}}, "time": time.time()})
    write_lines(run_copy / "events.jsonl", events)

    import_run(str(run_copy), "--owner", "alice")
    run = Run.objects.get()
    assert run.points.get(step=2).values["reward/mean"] is None
    assert run.points.get(step=STEPS).values["reward/mean"] is None
    assert run.latest_reward == metrics[-2]["reward/mean"]  # the latest reward logged that is a number
    assert run.events.get(kind="eval").data == {"metrics": {"eval/pass@1": None}}


def test_a_run_whose_events_end_without_a_final_status_is_failed_and_not_resumed_here(run_copy, alice):
    events = lines(run_copy / "events.jsonl")
    write_lines(run_copy / "events.jsonl", events[:-1])  # killed before its "finished"

    import_run(str(run_copy), "--owner", "alice")
    run = Run.objects.get()
    assert run.status == RunStatus.FAILED and "without a final status" in run.error
    assert run.finished_at.timestamp() == pytest.approx(events[-2]["time"], abs=1e-5)
    with pytest.raises(CommandRefused, match="imported"):  # its checkpoints are the CLI's, not a worker's
        send_command(run, "resume", alice)


def test_it_refuses_a_folder_that_is_not_a_run_folder(tmp_path, alice):
    (tmp_path / "config.yaml").write_text(tiny_config().to_yaml(), encoding="utf-8")
    assert f"{tmp_path}: not a run folder (no metrics.jsonl)" in refusal(str(tmp_path), "--owner", "alice")
    assert f"{tmp_path / 'nowhere'}: no such folder" in refusal(str(tmp_path / "nowhere"), "--owner", "alice")
    assert not Run.objects.exists()


def test_it_refuses_a_folder_a_trainer_still_holds(run_copy, alice):
    with runlock.run_lock(run_copy):
        assert f"{run_copy}: still being trained" in refusal(str(run_copy), "--owner", "alice")
    assert not Run.objects.exists()


def test_it_refuses_a_malformed_line_and_stores_nothing_of_its_folder(run_copy, cli_run, alice, monkeypatch):
    monkeypatch.setattr(imports, "BATCH_ROWS", 2)  # two batches are stored before the bad line is read
    with (run_copy / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"step": 6, "reward/mean": 0.5\n')

    said = refusal(str(run_copy), str(cli_run), "--owner", "alice")
    assert f"not imported: {run_copy / 'metrics.jsonl'}, line {STEPS + 1}: not valid JSON" in said
    assert "1 of 2 folders not imported" in said
    assert Run.objects.get().imported_from == str(cli_run)  # the other folder was imported
    assert MetricPoint.objects.count() == STEPS


def test_it_refuses_an_unknown_owner(cli_run, alice):
    assert "no user named 'nobody'" in refusal(str(cli_run), "--owner", "nobody")
    assert not Run.objects.exists()


def test_it_refuses_a_folder_imported_before_unless_again(cli_run, run_copy, alice):
    import_run(str(cli_run), "--owner", "alice")
    first = Run.objects.get()
    counts = (Event.objects.count(), Sample.objects.count(), Checkpoint.objects.count())

    said = refusal(str(cli_run), "--owner", "alice")
    assert f"{cli_run}: these files already imported as run #{first.pk}" in said and f"/runs/{first.pk}/" in said
    assert f"already imported as run #{first.pk}" in refusal(str(run_copy), "--owner", "alice")  # the same files
    assert (Run.objects.count(), Event.objects.count(), Sample.objects.count(), Checkpoint.objects.count()) == (
        1,
        *counts,
    )

    out, _ = import_run(str(cli_run), "--owner", "alice", "--again")
    again = Run.objects.exclude(pk=first.pk).get()
    assert out.startswith(f"run {again.pk} ") and again.points.count() == STEPS


def test_a_run_of_100000_steps_imports_in_seconds(tmp_path, alice):
    steps = 100_000
    (tmp_path / "config.yaml").write_text(tiny_config(steps=steps).to_yaml(), encoding="utf-8")
    keys = [f"metric/{i}" for i in range(40)]
    with (tmp_path / "metrics.jsonl").open("w", encoding="utf-8") as handle:
        for step in range(1, steps + 1):
            handle.write(json.dumps({"step": step, **dict.fromkeys(keys, step / steps), "reward/mean": 0.5}) + "\n")
    write_lines(
        tmp_path / "events.jsonl", [{"kind": "status", "step": steps, "data": {"status": "finished"}, "time": 1.0}]
    )

    started = time.monotonic()
    import_run(str(tmp_path), "--owner", "alice")
    elapsed = time.monotonic() - started
    run = Run.objects.get()
    assert (run.last_step, run.points.count(), run.status) == (steps, steps, RunStatus.FINISHED)
    assert elapsed < 45, f"{steps} steps took {elapsed:.1f} s"  # 15-20 s on a loaded 2-core machine
