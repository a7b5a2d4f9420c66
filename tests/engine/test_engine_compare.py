"""Comparing checkpoints: the same prompts for every model, metrics with differences."""

from __future__ import annotations

from prorl_engine.compare import compare
from prorl_engine.config import DataSource
from prorl_engine.data.sources import load_source
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
