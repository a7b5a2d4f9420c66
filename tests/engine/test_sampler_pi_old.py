"""pi_old taken from the float32 HF sampler (`pi_old_from_sampler`, backends.sampler_gives_pi_old):
the same samples, log-probs equal to the recomputed pi_old, and a step that learns the same."""

from __future__ import annotations

import pytest
import torch
from test_trainer import TIMING_KEYS, digit_reward, read_jsonl, tiny_config  # noqa: F401 (digit_reward: a fixture)

from prorl_engine.backends import sampler_gives_pi_old
from prorl_engine.events import JsonlSink
from prorl_engine.modeling import load_policy, load_tokenizer
from prorl_engine.rollout import HFGenerateBackend, SamplingParams, batched_logprobs, pack
from prorl_engine.trainer import Trainer


@pytest.mark.parametrize("lean", [False, True])
@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_the_recorded_log_probs_are_the_recomputed_pi_old_of_the_same_samples(tiny_model, top_p, lean):
    """At the spec's temperature 1.2, with and without a nucleus, through `generate` and through the
    lean loop (decode.py): recording changes no sampled token (same seed), and each token's
    recorded log-prob equals the tempered, truncated log-prob of a full forward pass to float32
    rounding (the KV-cached passes round differently)."""
    model = load_policy(tiny_model, "float32", torch.device("cpu"))
    tokenizer = load_tokenizer(tiny_model)
    prompts = [tokenizer("What is 3 + 4?")["input_ids"], tokenizer("Add 12 and 7.")["input_ids"]]
    params = SamplingParams(n=4, max_new_tokens=12, temperature=1.2, top_p=top_p)
    samples = {}
    for record in (False, True):
        torch.manual_seed(0)
        backend = HFGenerateBackend(
            model, tokenizer.eos_token_id, tokenizer.pad_token_id, 8, record_logprobs=record, lean=lean
        )
        samples[record] = backend.generate(prompts, params)

    assert [g.token_ids for g in samples[True]] == [g.token_ids for g in samples[False]]
    assert all(g.logprobs is None for g in samples[False])
    batch = pack([prompts[g.prompt_index] for g in samples[True]], [g.token_ids for g in samples[True]], 0)
    (recomputed,) = batched_logprobs(model, [batch], torch.device("cpu"), temperature=1.2, top_p=top_p)
    recorded = torch.zeros_like(recomputed)
    for row, g in enumerate(samples[True]):
        assert len(g.logprobs) == len(g.token_ids)
        recorded[row, : len(g.logprobs)] = torch.tensor(g.logprobs)
    on = batch.mask > 0
    assert int(on.sum()) >= 40 and torch.isfinite(recorded[on]).all()
    torch.testing.assert_close(recorded[on], recomputed[on], rtol=0, atol=1e-5)


def test_only_a_float32_hf_sampler_gives_pi_old(tiny_model):
    config = tiny_config(tiny_model)
    assert sampler_gives_pi_old(config)
    assert not sampler_gives_pi_old(config.replace(dtype="bfloat16"))
    assert not sampler_gives_pi_old(config.replace(pi_old_from_sampler=False))


def _two_steps(model, run_dir, monkeypatch, **changes) -> tuple[list[dict], list[str], dict[str, torch.Tensor]]:
    """Metrics of a 2-step run, which model each no-grad log-prob pass ran on, and the final weights."""
    sink = JsonlSink(run_dir)
    trainer = Trainer(tiny_config(model, steps=2, checkpoint_every=10, **changes), run_dir, sink)
    passes = []
    logprobs = trainer._logprobs

    def counted(model, batches):
        passes.append("policy" if model is trainer.policy else "reference")
        return logprobs(model, batches)

    monkeypatch.setattr(trainer, "_logprobs", counted)
    trainer.train()
    sink.close()
    return read_jsonl(run_dir / "metrics.jsonl"), passes, trainer.policy.state_dict()


@pytest.mark.usefixtures("digit_reward")
def test_a_step_with_the_samplers_pi_old_learns_what_the_recomputed_one_does(tiny_model, tmp_path, monkeypatch):
    """Two seeded steps: the same samples, losses, metrics and weights to float tolerance, with one
    no-grad pass per step (pi_ref) instead of two (pi_old and pi_ref)."""
    fast, fast_passes, fast_weights = _two_steps(tiny_model, tmp_path / "fast", monkeypatch, temperature=1.2)
    slow, slow_passes, slow_weights = _two_steps(
        tiny_model, tmp_path / "slow", monkeypatch, temperature=1.2, pi_old_from_sampler=False
    )

    assert fast_passes == ["reference", "reference"]
    assert slow_passes == ["policy", "reference", "policy", "reference"]
    for row, expected in zip(fast, slow, strict=True):
        assert row.keys() == expected.keys()
        assert row["sampling/generated_tokens"] == expected["sampling/generated_tokens"]
        for key in expected.keys() - TIMING_KEYS:
            assert row[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-7), (row["step"], key)
    for name, tensor in slow_weights.items():  # Adam moves each weight by up to lr = 1e-3 a step
        torch.testing.assert_close(fast_weights[name], tensor, rtol=0, atol=5e-5)
