"""Evaluating saved models: the one held-out selection and the one "evaluate these model folders"
function that the trainer, `prorl eval`, the comparison job and the demo build share."""

from __future__ import annotations

import pytest

from prorl_engine.compare import compare
from prorl_engine.config import DataSource
from prorl_engine.data.example import Example
from prorl_engine.data.sources import TrainingMix, load_source
from prorl_engine.evaluation import evaluate, evaluate_model_folders, held_out_examples, spread_across_tasks
from prorl_engine.modeling import load_policy, load_tokenizer
from prorl_engine.rollout import HFGenerateBackend
from prorl_engine.tiny import build_tiny_model


def test_two_models_answer_the_same_prompts_side_by_side(tiny_model, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=1)
    _, held_out = load_source(DataSource(task="chain_sum", size=1, eval_size=3, instruction=""), seed=0)

    result = compare({"base": tiny_model, "other": other}, held_out, n=2, ks=[1, 2], max_new_tokens=6).to_dict()

    assert result["labels"] == ["base", "other"]
    assert [p["uid"] for p in result["prompts"]] == [e.uid for e in held_out]
    for entry in result["prompts"]:
        assert entry["prompt"].startswith("State the final answer")
        assert [len(entry["answers"][label]) for label in ("base", "other")] == [2, 2]
    row = result["metrics"]["eval/chain_sum/mean_length"]
    assert row["delta"] == row["other"] - row["base"]


def example(task: str, index: int) -> Example:
    return Example(uid=f"{task}/{index}", domain="logic", task=task, prompt=f"{task} {index}")


def test_the_held_out_selection_takes_each_task_in_turn():
    examples = [example("a", 0), example("a", 1), example("a", 2), example("b", 0), example("c", 0), example("c", 1)]

    assert [e.uid for e in spread_across_tasks(examples, 4)] == ["a/0", "b/0", "c/0", "a/1"]
    assert [e.uid for e in spread_across_tasks(examples, 99)] == ["a/0", "b/0", "c/0", "a/1", "c/1", "a/2"]
    assert spread_across_tasks(examples, 0) == []


SOURCES = [
    DataSource(task="chain_sum", size=4, eval_size=3, instruction=""),
    DataSource(task="basic_arithmetic", size=4, eval_size=2, instruction=""),
]


def test_the_held_out_examples_of_a_mix_are_those_its_training_run_holds_out():
    """Source i is split with seed + i, as the run's TrainingMix splits it: a comparison answers the
    prompts the run's own evaluations use, never one the run trained on."""
    mix = TrainingMix(SOURCES, seed=5)
    everything = held_out_examples(SOURCES, seed=5)

    assert [e.uid for e in everything] == [e.uid for e in mix.held_out]
    assert [e.uid for e in everything] == [
        "chain_sum/5/4",
        "chain_sum/5/5",
        "chain_sum/5/6",
        "basic_arithmetic/6/4",
        "basic_arithmetic/6/5",
    ]
    assert [e.uid for e in held_out_examples(SOURCES, seed=5, count=3)] == [
        "chain_sum/5/4",
        "basic_arithmetic/6/4",
        "chain_sum/5/5",
    ]
    trained = {e.uid for stream in mix.streams for e in stream.examples}
    assert not trained & {e.uid for e in everything}


def test_evaluating_a_model_folder_equals_evaluating_the_loaded_model_with_the_same_seed(tiny_model, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=1)
    examples = held_out_examples(SOURCES, seed=0)
    protocol = {
        "n": 3,
        "ks": [1, 3],
        "temperature": 0.6,
        "top_p": 0.95,
        "max_new_tokens": 6,
        "format_penalty": -0.5,
        "truncated_reward": 0.0,
        "seed": 11,
    }

    reports = evaluate_model_folders(
        {"other": other, "base": tiny_model, "again": tiny_model}, examples, device="cpu", batch_size=8, **protocol
    )

    tokenizer = load_tokenizer(tiny_model)
    backend = HFGenerateBackend(
        load_policy(tiny_model, "float32", "cpu"), tokenizer.eos_token_id, tokenizer.pad_token_id, 8
    )
    direct = evaluate(backend, tokenizer, examples, **protocol)
    assert list(reports) == ["other", "base", "again"]
    assert reports["base"].rows() == direct.rows() == reports["again"].rows()  # the model before it changes nothing
    assert reports["base"].metrics == pytest.approx(direct.metrics)
    assert [s.uid for s in reports["other"].samples] == [s.uid for s in direct.samples]
    assert reports["other"].rows() != direct.rows()
