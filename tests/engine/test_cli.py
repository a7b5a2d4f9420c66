"""`prorl` from a terminal: train with the real reasoning-gym verifier, resume, eval, refuse bad configs."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from prorl_engine.cli import main

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
