"""The Trainer end to end on a tiny random model: it learns, logs every key, resumes exactly, resets.

Most tests score responses with `DigitShare`, a deterministic test verifier (reward = share of
digit characters in the response): a random model's texts spread under it, so every group carries
signal and the tests exercise the update path on every step. One test uses the real reasoning-gym
verifier through `prorl train`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prorl_engine.config import RunConfig
from prorl_engine.events import Command, CommandKind, JsonlSink
from prorl_engine.trainer import Trainer
from prorl_engine.verifiers.base import Verdict

SPEC_METRIC_KEYS = {
    "reward/mean", "reward/verifier_mean", "reward/format_fail_frac", "reward/logic", "length/mean",
    "length/truncated_frac", "kl/ref", "policy/entropy", "policy/clip_frac_low", "policy/clip_frac_high",
    "policy/approx_kl_old", "policy/grad_norm", "policy/lr", "sampling/filtered_frac", "sampling/generation_batches",
    "schedule/length_penalty_on", "timing/rollout_s", "timing/train_s", "throughput/tokens_per_s",
}
TIMING_KEYS = {"timing/rollout_s", "timing/train_s", "throughput/tokens_per_s"}


class DigitShare:
    domain = "logic"

    def verify(self, response, example):
        share = sum(ch.isdigit() for ch in response) / max(1, len(response))
        return Verdict(reward=share, format_ok=True, extracted=response[:20])


@pytest.fixture
def digit_reward(monkeypatch):
    monkeypatch.setattr("prorl_engine.rewards.verifier_for", lambda domain: DigitShare())


def tiny_config(model: Path, **changes) -> RunConfig:
    values = {
        "model_path": str(model), "seed": 3, "steps": 3,
        "data": [{"task": "chain_sum", "size": 64, "eval_size": 4, "instruction": "",
                  "params": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}],
        "max_prompt_tokens": 64, "prompts_per_step": 2, "samples_per_prompt": 4, "max_response_tokens": 8,
        "temperature": 1.0, "rollout_batch_size": 8, "updates_per_step": 2, "micro_batch_size": 4,
        "learning_rate": 1e-3, "beta": 0.01, "reset_interval": None, "checkpoint_every": 2, "eval_every": 0,
        "on_steps": 2, "off_steps": 2, "samples_per_step_logged": 2, "truncated_reward": None,
    }
    return RunConfig.from_dict({**values, **changes})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ScriptedControl:
    """Hands out scripted commands at given step boundaries (the step about to start)."""

    def __init__(self, trainer_ref: list, script: dict[int, list[Command]]):
        self.trainer_ref, self.script = trainer_ref, script

    def poll(self):
        return self.script.pop(self.trainer_ref[0].step + 1, [])


def train(config: RunConfig, run_dir: Path, script: dict[int, list[Command]] | None = None) -> Trainer:
    sink = JsonlSink(run_dir)
    holder: list = []
    trainer = Trainer(config, run_dir, sink, ScriptedControl(holder, dict(script or {})))
    holder.append(trainer)
    trainer.train()
    sink.close()
    return trainer


def test_tiny_model_trains_three_steps_and_its_parameters_change(tiny_model, tmp_path, digit_reward):
    before = load_file(tiny_model / "model.safetensors")
    trainer = train(tiny_config(tiny_model), tmp_path)

    after = trainer.policy.state_dict()
    moved = [name for name, tensor in before.items() if not torch.equal(tensor, after[name].cpu())]
    assert len(moved) == len(before), "every parameter tensor should have been updated"
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert SPEC_METRIC_KEYS <= row.keys()
        assert row["sampling/kept_groups"] == 2 and row["policy/grad_norm"] > 0
    # the schedule: on for steps 1-2, off for step 3 (on_steps = off_steps = 2)
    assert [row["schedule/length_penalty_on"] for row in rows] == [1.0, 1.0, 0.0]
    # shaped reward = verifier reward + lambda_len * eta(t) while on, equal to it when off
    assert rows[0]["reward/mean"] < rows[0]["reward/verifier_mean"]
    assert rows[2]["reward/mean"] == pytest.approx(rows[2]["reward/verifier_mean"])
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == 6 and {"prompt", "response", "reward", "verifier_reward"} <= samples[0].keys()


def test_the_reference_stays_fixed_between_resets(tiny_model, tmp_path, digit_reward):
    trainer = train(tiny_config(tiny_model), tmp_path)
    reference = load_file(tiny_model / "model.safetensors")
    for name, tensor in trainer.reference.state_dict().items():
        if name in reference:
            assert torch.equal(tensor.cpu(), reference[name])


def test_four_steps_straight_equal_two_steps_then_resume_then_two(tiny_model, tmp_path, digit_reward):
    config = tiny_config(tiny_model, steps=4, reset_interval=3, kl_reset_threshold=50.0, kl_window=2)
    straight = train(config, tmp_path / "straight")

    stop = {3: [Command(CommandKind.STOP, "alice")]}
    first = train(config, tmp_path / "resumed", stop)  # stops gracefully after step 2, saving a checkpoint
    assert first.step == 2
    resumed = train(config, tmp_path / "resumed")

    a = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [row["step"] for row in b] == [1, 2, 3, 4]
    for row_a, row_b in zip(a, b):
        for key in row_a.keys() - TIMING_KEYS:
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-5, abs=1e-7), (row_a["step"], key)
    for name, tensor in straight.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[name], tensor, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(resumed.reference.state_dict()[name], straight.reference.state_dict()[name])
    assert resumed.reset_history == straight.reset_history == [{"step": 3, "reason": "interval", "requested_by": ""}]


def test_a_crash_after_a_checkpoint_resumes_without_doubled_points(tiny_model, tmp_path, digit_reward):
    config = tiny_config(tiny_model, steps=4)

    class CrashAtStep3(JsonlSink):
        def metrics(self, step, values):
            super().metrics(step, values)
            if step == 3:
                raise RuntimeError("worker died")

    sink = CrashAtStep3(tmp_path)
    with pytest.raises(RuntimeError, match="worker died"):
        Trainer(config, tmp_path, sink).train()
    sink.close()
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]

    train(config, tmp_path)  # resumes from the checkpoint at step 2 and rewinds step 3
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


def test_after_an_interval_reset_the_kl_to_the_reference_is_zero(tiny_model, tmp_path, digit_reward):
    train(tiny_config(tiny_model, steps=3, reset_interval=2), tmp_path)

    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[1]["kl/ref"] > 0  # the policy moved away from the initial reference
    assert rows[2]["kl/ref"] == 0.0  # step 3 samples from pi_old == pi_ref
    resets = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "reset"]
    assert [(e["step"], e["data"]["reason"]) for e in resets] == [(2, "interval")]


def test_a_manual_reset_applies_at_the_next_step_boundary_and_names_who_asked(tiny_model, tmp_path, digit_reward):
    script = {2: [Command(CommandKind.RESET_REFERENCE, "alice", "cmd-1")]}
    trainer = train(tiny_config(tiny_model, steps=3), tmp_path, script)

    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0]["kl/ref"] == 0.0 and rows[1]["kl/ref"] == 0.0  # step 2 starts right after the reset
    assert rows[2]["kl/ref"] > 0
    events = read_jsonl(tmp_path / "events.jsonl")
    reset = next(e for e in events if e["kind"] == "reset")
    assert reset["step"] == 1 and reset["data"] == {"reason": "manual", "requested_by": "alice"}
    assert trainer.reset_history == [{"step": 1, "reason": "manual", "requested_by": "alice"}]


def test_the_kl_threshold_triggers_a_reset(tiny_model, tmp_path, digit_reward):
    train(tiny_config(tiny_model, steps=4, kl_reset_threshold=1e-9, kl_window=1), tmp_path)
    resets = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "reset"]
    assert resets and all(e["data"]["reason"] == "kl_threshold" for e in resets)


def test_pause_holds_the_run_until_resume_and_both_are_events(tiny_model, tmp_path, digit_reward, monkeypatch):
    monkeypatch.setattr("prorl_engine.trainer.PAUSE_POLL_S", 0.0)
    script = {2: [Command(CommandKind.PAUSE, "bob")]}

    class ResumeLater(ScriptedControl):
        polls_while_paused = 0

        def poll(self):
            trainer = self.trainer_ref[0]
            if trainer.paused:
                self.polls_while_paused += 1
                return [Command(CommandKind.RESUME, "bob")] if self.polls_while_paused == 3 else []
            return super().poll()

    holder: list = []
    control = ResumeLater(holder, script)
    trainer = Trainer(tiny_config(tiny_model), tmp_path, JsonlSink(tmp_path), control)
    holder.append(trainer)
    assert trainer.train() == "finished"
    statuses = [(e["step"], e["data"]["status"]) for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "status"]
    assert statuses == [(0, "running"), (1, "paused"), (1, "running"), (3, "finished")]
    assert control.polls_while_paused == 3


def test_a_llama_model_loads_and_trains_through_the_same_path(tiny_llama, tmp_path, digit_reward):
    trainer = train(tiny_config(tiny_llama, steps=1), tmp_path)
    assert trainer.policy.config.model_type == "llama"
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["policy/grad_norm"] > 0


def test_a_fork_continues_from_the_parent_checkpoints_weights_reference_and_step(tiny_model, tmp_path, digit_reward):
    parent = train(tiny_config(tiny_model, steps=2, reset_interval=1), tmp_path / "parent")
    checkpoint = tmp_path / "parent" / "checkpoints" / "step-000002"

    sink = JsonlSink(tmp_path / "fork")
    fork = Trainer(tiny_config(tiny_model, steps=4, max_response_tokens=6, reset_interval=None),
                   tmp_path / "fork", sink, fork_from=checkpoint)
    fork._restore(checkpoint, fork=True)
    for name, tensor in parent.policy.state_dict().items():
        assert torch.equal(fork.policy.state_dict()[name], tensor)
        assert torch.equal(fork.reference.state_dict()[name], parent.reference.state_dict()[name])
    assert fork.step == 2 and fork.reset_history == parent.reset_history

    fork.step = 0  # train() restores from the fork point itself
    fork.train()
    sink.close()
    rows = read_jsonl(tmp_path / "fork" / "metrics.jsonl")
    assert [row["step"] for row in rows] == [3, 4]
    assert rows[0]["kl/ref"] == 0.0  # the parent reset its reference at step 2 (reset_interval=1)
    assert all(row["length/mean"] <= 6 for row in rows)  # the edited config applies


def test_a_prompt_longer_than_max_prompt_tokens_is_refused_before_training(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"max_prompt_tokens: prompt chain_sum/\S+ has \d+ tokens \(> 5\)"):
        Trainer(tiny_config(tiny_model, max_prompt_tokens=5), tmp_path, JsonlSink(tmp_path))


def test_pruned_checkpoints_are_announced(tiny_model, tmp_path, digit_reward):
    train(tiny_config(tiny_model, steps=4, checkpoint_every=1, keep_checkpoints=2), tmp_path)

    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    removed = [e["data"]["checkpoint_step"] for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "checkpoint_removed"]
    assert removed == [1, 2]
