"""`prorl` from a terminal: train with the real reasoning-gym verifier, resume, eval, refuse bad
configs and missing files in one line, stop on Ctrl-C saying how to continue."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from prorl_engine.cli import interrupted, main
from prorl_engine.config import RunConfig
from prorl_engine.evaluation import held_out_examples

ROOT = Path(__file__).resolve().parents[2]


def tiny_yaml(tmp_path: Path, model: Path, **changes) -> Path:
    config = yaml.safe_load((ROOT / "prorl_engine/configs/tiny.yaml").read_text())
    config.update({"model_path": str(model), "steps": 3, "eval_every": 3, "checkpoint_every": 2, **changes})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_prorl_train_writes_the_run_folder(tiny_model, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(tiny_yaml(tmp_path, tiny_model)), "--set", "seed=5", "--out", str(run)]) == 0

    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 5
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert "eval/chain_sum/pass@1" in metrics[2] and "eval/logic/pass@4" in metrics[2]
    kinds = [e["kind"] for e in read_jsonl(run / "events.jsonl")]
    assert kinds[0] == "status" and kinds[-1] == "status" and "checkpoint" in kinds and "eval" in kinds
    assert read_jsonl(run / "samples.jsonl")[0]["task"] == "chain_sum"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_prorl_train_refuses_an_existing_run_and_resume_finishes_one(tiny_model, tmp_path, capsys):
    config = tiny_yaml(tmp_path, tiny_model, steps=2, eval_every=0)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    assert main(["train", str(config), "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    events = (run / "events.jsonl").read_text()
    saved = (run / "checkpoints/step-000002/trainer_state.pt").stat().st_mtime_ns
    assert main(["resume", str(run)]) == 0
    assert capsys.readouterr().out == f"run {run} finished at step 2; nothing to do\n"
    assert (run / "events.jsonl").read_text() == events  # no status events, no checkpoint saved again
    assert (run / "checkpoints/step-000002/trainer_state.pt").stat().st_mtime_ns == saved

    text = (run / "config.yaml").read_text().replace("steps: 2", "steps: 3")
    (run / "config.yaml").write_text(text)
    assert main(["resume", str(run)]) == 0
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]


def test_a_bad_config_is_refused_before_anything_runs(tiny_model, tmp_path, capsys):
    config = tiny_yaml(tmp_path, tiny_model, samples_per_prompt=1, eps_high=0.1)
    run = tmp_path / "run"

    assert main(["train", str(config), "--set", "beta=-1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"samples_per_prompt: must be at least 2", err)
    assert re.search(r"eps_high: must be >= eps_low", err)
    assert re.search(r"beta: must be >= 0", err)
    assert not run.exists()


def test_prorl_eval_writes_pass_at_k_that_match_its_per_sample_results(tiny_model, tmp_path):
    data = tmp_path / "mixed.jsonl"
    data.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"id": "m1", "prompt": "What is 1+1?", "answer": "2"},
                {"id": "m2", "prompt": "What is 2+3?", "answer": "5"},
            ]
        )
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                str(tiny_model),
                "--data",
                f"{data}:math",
                "--data",
                "rg:chain_sum",
                "--size",
                "3",
                "--n",
                "4",
                "--k",
                "1,2,4",
                "--max-new-tokens",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )

    metrics = json.loads((out / "eval.json").read_text())
    rows = read_jsonl(out / "eval_samples.jsonl")
    assert {r["domain"] for r in rows} == {"math", "logic"}
    by_prompt = defaultdict(list)
    for r in rows:
        by_prompt[(r["task"], r["uid"])].append(r["correct"])
    for task in {task for task, _ in by_prompt}:
        counts = [(len(v), sum(v)) for (t, _), v in by_prompt.items() if t == task]
        for k in (1, 2, 4):
            expected = sum(1 - math.comb(n - c, k) / math.comb(n, k) for n, c in counts) / len(counts)
            assert abs(metrics[f"eval/{task}/pass@{k}"] - expected) < 1e-12
        task_rows = [r for r in rows if r["task"] == task]
        assert abs(metrics[f"eval/{task}/mean_reward"] - sum(r["reward"] for r in task_rows) / len(task_rows)) < 1e-12


def test_a_mix_of_all_five_domains_trains_and_logs_a_reward_per_domain(tiny_model, tmp_path):
    examples = ROOT / "prorl_engine/data/examples"
    data = [
        {
            "task": domain,
            "source": "file",
            "path": str(examples / f"{domain}.jsonl"),
            "domain": domain,
            "weight": 1.0,
            "eval_size": 1,
        }
        for domain in ("math", "code", "stem", "logic", "ifeval")
    ]
    config = tiny_yaml(
        tmp_path,
        tiny_model,
        steps=1,
        eval_every=0,
        data=data,
        prompts_per_step=10,
        max_prompt_tokens=512,
        dynamic_sampling=False,
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0

    row = read_jsonl(run / "metrics.jsonl")[0]
    domains = {key.split("/")[1] for key in row if key.startswith("reward/")} - {
        "mean",
        "verifier_mean",
        "format_fail_frac",
    }
    assert domains <= {"math", "code", "stem", "logic", "ifeval"} and len(domains) >= 3  # 10 weighted draws over 5
    assert row["sampling/kept_groups"] == 10


def test_prorl_ablate_hands_its_options_to_the_ablation_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--out", str(tmp_path / "report"), "--variants", "full,no_such_variant"])
    assert exit_info.value.code == 2
    assert "unknown variants no_such_variant" in capsys.readouterr().err


def test_other_commands_refuse_unknown_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["resume", str(tmp_path), "--variants", "full"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --variants full" in capsys.readouterr().err


# --- one-line refusals --------------------------------------------------------------------------
def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder, not a config file\n"
    assert main(["resume", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing'} has no config.yaml: not a run folder\n"
    assert not (tmp_path / "run").exists()


def test_malformed_yaml_is_one_line_naming_where_and_exit_2(tiny_model, tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("steps: [1, 2\nseed: 0\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        f"error: {config}: not valid YAML at line 2, column 5: "
        "did not find expected ',' or ']' (while parsing a flow sequence)\n"
    )

    good = tiny_yaml(tmp_path, tiny_model)
    assert main(["train", str(good), "--set", "data=[{task: chain_sum", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set data=[{task: chain_sum: not valid YAML at line ") and err.count("\n") == 1

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("steps: 3\n  seed: 0\n")
    assert main(["resume", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"error: {run / 'config.yaml'}: not valid YAML at line 2, column 7: "
        "mapping values are not allowed in this context\n"
    )
    assert not (run / "checkpoints").exists()


def test_a_fork_of_a_folder_that_is_no_checkpoint_is_refused_before_the_run_folder_exists(tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_yaml(tmp_path, tiny_model)), "--from", str(tmp_path), "--out", str(run)]) == 2
    assert capsys.readouterr().err == f"error: --from {tmp_path}: not a checkpoint (no trainer_state.pt)\n"
    assert not run.exists()


# --- prorl eval of a run's checkpoint -----------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory) -> Path:
    """A 2-step run whose evaluation settings differ from every `prorl eval` default."""
    folder = tmp_path_factory.mktemp("finished")
    config = tiny_yaml(
        folder,
        tiny_model,
        seed=4,
        steps=2,
        eval_every=0,
        eval_samples=2,
        eval_k=[1, 2],
        eval_prompts=3,
        eval_temperature=0.9,
        eval_top_p=0.8,
        max_response_tokens=6,
    )
    assert main(["train", str(config), "--out", str(folder / "run")]) == 0
    return folder / "run"


def test_prorl_eval_of_a_checkpoint_takes_the_runs_evaluation_settings_and_held_out_prompts(
    finished_run, tmp_path, capsys
):
    checkpoint = finished_run / "checkpoints/step-000002"
    capsys.readouterr()
    assert main(["eval", str(checkpoint), "--out", str(tmp_path / "eval")]) == 0

    err = capsys.readouterr().err
    assert (
        "prorl eval: 3 prompts x 2 samples, pass@1,2, up to 6 new tokens, temperature 0.9, top_p 0.8, backend hf "
        f"(defaults from the run config in {checkpoint})"
    ) in err
    assert "3/3" in err  # the progress bar over prompts, on stderr
    rows = read_jsonl(tmp_path / "eval/eval_samples.jsonl")
    config = RunConfig.load(finished_run / "config.yaml")
    assert sorted({r["uid"] for r in rows}) == sorted(e.uid for e in held_out_examples(config.data, 4, 3))
    assert len(rows) == 3 * 2 and max(r["length"] for r in rows) == 6  # the run's budget, not 1,024 tokens
    metrics = json.loads((tmp_path / "eval/eval.json").read_text())
    assert {key for key in metrics if key.startswith("eval/all/pass@")} == {"eval/all/pass@1", "eval/all/pass@2"}


def test_prorl_eval_flags_override_the_runs_settings_and_a_run_task_keeps_its_held_out_split(
    finished_run, tmp_path, capsys
):
    argv = ["eval", str(finished_run), "--data", "rg:chain_sum", "--n", "3", "--k", "1,3", "--size", "2"]
    assert main([*argv, "--max-new-tokens", "2", "--temperature", "1.0", "--out", str(tmp_path / "eval")]) == 0

    err = capsys.readouterr().err
    assert f"{finished_run} is a run folder: evaluating its latest checkpoint, step-000002" in err
    assert "prorl eval: 2 prompts x 3 samples, pass@1,3, up to 2 new tokens, temperature 1, top_p 0.8" in err
    rows = read_jsonl(tmp_path / "eval/eval_samples.jsonl")
    # the run's chain_sum source (size 200, seed 4): its held-out items come after its 200 training items
    assert sorted({r["uid"] for r in rows}) == ["chain_sum/4/200", "chain_sum/4/201"]
    assert len(rows) == 2 * 3 and max(r["length"] for r in rows) <= 2


def test_prorl_eval_of_a_plain_model_folder_needs_data_and_an_existing_folder(tiny_model, tmp_path, capsys):
    assert main(["eval", str(tiny_model)]) == 2
    assert capsys.readouterr().err == (
        "error: --data is needed: the model is not a run's checkpoint, so it has no data mix of its own\n"
    )
    assert main(["eval", str(tmp_path / "gone"), "--data", "rg:chain_sum"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'gone'}: no such model folder\n"


# --- Ctrl-C -------------------------------------------------------------------------------------
def test_the_interruption_message_says_where_a_resume_starts():
    assert interrupted(Path("runs/a b"), 1, 12, None, None) == (
        "interrupted: run runs/a b stopped after step 1 of 12 (what it had done of step 2 is lost)\n"
        "continue it with: prorl resume 'runs/a b'   (from step 0: it has no checkpoint yet)"
    )
    assert interrupted(Path("runs/f"), 7, 12, None, "runs/p/checkpoints/step-000006") == (
        "interrupted: run runs/f stopped after step 7 of 12 (what it had done of step 8 is lost)\n"
        "continue it with: prorl resume runs/f   (from the checkpoint it was forked from, "
        "runs/p/checkpoints/step-000006: it has none of its own yet)"
    )
    resumed = interrupted(Path("runs/r"), 5, 12, 4, None)
    assert resumed.endswith("(from its last checkpoint, step 4; step 5 is trained again)")
    assert interrupted(Path("runs/r"), 12, 12, 12, None) == (
        "interrupted: run runs/r stopped after step 12 of 12\n"
        "continue it with: prorl resume runs/r   (from its last checkpoint, step 12)"
    )


def test_ctrl_c_during_prorl_train_says_where_it_stopped_and_the_resume_command_works(tiny_model, tmp_path, capsys):
    config = tiny_yaml(tmp_path, tiny_model, steps=500, eval_every=0, checkpoint_every=2)
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-m", "prorl_engine.cli", "--threads", "1", "train", str(config), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal, whoever started pytest
    )
    try:
        deadline = time.monotonic() + 180
        while not ((run / "metrics.jsonl").is_file() and len(read_jsonl(run / "metrics.jsonl")) >= 3):
            assert child.poll() is None and time.monotonic() < deadline, "the run did not log 3 steps"
            time.sleep(0.1)
        # a second trainer on the folder is refused at once, naming the folder and the trainer's PID
        assert main(["resume", str(run)]) == 2
        assert capsys.readouterr().err == (
            f"error: run folder {run} is being trained by process {child.pid} (lock {run / 'trainer.lock'})\n"
        )
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode == 130 and "Traceback" not in err
    done = len(read_jsonl(run / "metrics.jsonl"))
    checkpoints = sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir() if not p.name.endswith(".tmp"))
    last = checkpoints[-1]
    assert done >= 3 and last in (done - 1, done)  # a checkpoint every 2 steps
    again = "" if last == done else f"; step {done} is trained again"
    assert err.endswith(
        f"interrupted: run {run} stopped after step {done} of 500 (what it had done of step {done + 1} is lost)\n"
        f"continue it with: prorl resume {run}   (from its last checkpoint, step {last}{again})\n"
    )

    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("steps: 500", f"steps: {done + 1}"))
    assert main(["resume", str(run)]) == 0  # the lock died with the interrupted trainer
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, done + 2))
    assert os.path.getsize(run / "trainer.lock") == 0


def test_the_progress_bar_changes_no_sample_of_an_evaluation(tiny_model):
    from prorl_engine.evaluation import evaluate
    from prorl_engine.modeling import load_policy, load_tokenizer
    from prorl_engine.rollout import HFGenerateBackend

    config = RunConfig.load(tiny_yaml(Path(tiny_model).parent, tiny_model))
    examples = held_out_examples(config.data, 0)[:3]
    tokenizer = load_tokenizer(tiny_model)
    backend = HFGenerateBackend(
        load_policy(tiny_model, "float32", "cpu"), tokenizer.eos_token_id, tokenizer.pad_token_id, 4
    )
    settings = dict(n=2, ks=[1, 2], temperature=1.0, top_p=1.0, max_new_tokens=5, format_penalty=-0.5)
    plain = evaluate(backend, tokenizer, examples, **settings, truncated_reward=0.0, seed=11)
    batches = []
    shown = evaluate(backend, tokenizer, examples, **settings, truncated_reward=0.0, seed=11, progress=batches.append)
    assert batches == [2, 1]  # 4 sequences per batch at n = 2: the backend's own batches
    assert shown.rows() == plain.rows() and shown.metrics == plain.metrics
    assert len({r["response"] for r in plain.rows()}) > 1  # sampled, not one constant text
