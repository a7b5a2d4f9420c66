"""The log-probs the update uses are those of the policy that sampled (tempered, and cut to the
nucleus when top_p < 1), and the verifier judges the text the model wrote.

The committed demo base model is used where a peaked distribution matters (a random tiny model's
next-token distribution is nearly uniform, so temperature would hardly change it).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from prorl_engine.config import RunConfig
from prorl_engine.data.example import Example
from prorl_engine.events import JsonlSink
from prorl_engine.modeling import load_policy, load_tokenizer
from prorl_engine.prompts import decode_response, encode_prompt
from prorl_engine.rewards import score_all
from prorl_engine.rollout import HFGenerateBackend, SamplingParams, batched_logprobs, pack, response_logprobs
from prorl_engine.tiny import EOS, train_tokenizer
from prorl_engine.trainer import Trainer

DEMO_BASE = "prorl_engine/configs/demo-base"
QUESTION = (
    "State the final answer to the following arithmetic problem: 7 + 5 =\n"
    "Put your final answer inside <answer></answer> tags."
)


@pytest.fixture(scope="module")
def demo_model():
    tokenizer = load_tokenizer(DEMO_BASE)
    return load_policy(DEMO_BASE, "float32", torch.device("cpu")), tokenizer


def test_logprobs_at_the_rollout_temperature_match_the_sampled_frequencies(demo_model):
    """4,000 one-token rollouts at tau = 2: the most frequent first token's frequency equals
    exp(log pi) taken at tau = 2 (within 4 standard errors) and differs from the untempered one."""
    model, tokenizer = demo_model
    prompt = encode_prompt(tokenizer, QUESTION)
    backend = HFGenerateBackend(model, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=4000)
    n, tau = 4000, 2.0
    torch.manual_seed(0)
    firsts = Counter(g.token_ids[0] for g in backend.generate([prompt], SamplingParams(n, 1, tau, 1.0)))
    token, count = firsts.most_common(1)[0]
    frequency = count / n

    batch = pack([prompt], [[token]], tokenizer.pad_token_id)
    with torch.no_grad():
        tempered = math.exp(response_logprobs(model, batch, temperature=tau)[0][0, 0].item())
        untempered = math.exp(response_logprobs(model, batch)[0][0, 0].item())
    se = math.sqrt(tempered * (1 - tempered) / n)
    assert abs(frequency - tempered) < 4 * se, (frequency, tempered)
    assert abs(frequency - untempered) > 10 * se, (frequency, untempered)


def test_entropy_is_that_of_the_tempered_distribution(demo_model):
    model, tokenizer = demo_model
    prompt = encode_prompt(tokenizer, QUESTION)
    batch = pack([prompt], [[tokenizer.eos_token_id]], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids).logits[0, len(prompt) - 1].float()
        expected = -(torch.softmax(logits / 1.5, -1) * torch.log_softmax(logits / 1.5, -1)).sum().item()
        _, entropy = response_logprobs(model, batch, with_entropy=True, temperature=1.5)
    assert entropy[0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_answer_tags_that_a_tokenizer_marks_special_reach_the_verifier():
    """tiny.train_tokenizer makes <answer> and </answer> special tokens; decoding must keep them
    (and drop only the closing eos), or every response would get the format penalty."""
    tokenizer = train_tokenizer(["What is 7 + 5?\n<answer>12</answer>"] * 20, vocab_size=300)
    ids = tokenizer("7 + 5 = 12\n<answer>12</answer>", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert "<answer>" not in tokenizer.decode(ids, skip_special_tokens=True)  # what the engine used to judge
    text = decode_response(tokenizer, ids)
    assert text == "7 + 5 = 12\n<answer>12</answer>"
    assert EOS not in text

    example = Example(
        uid="chain_sum/0",
        prompt="What is 7 + 5?",
        domain="logic",
        task="chain_sum",
        answer="12",
        metadata={"entry": {"question": "What is 7 + 5?", "answer": "12", "metadata": {"source_dataset": "chain_sum"}}},
    )
    (score,) = score_all([example], [text], [False], format_penalty=-0.5, truncated_reward=0.0)
    assert score.verdict.format_ok and score.reward == 1.0


def test_the_trainers_pi_old_at_top_p_0_95_is_the_distribution_the_sampler_drew_from(tmp_path, monkeypatch):
    """The sampler's own log-probs are generate's processed scores (logits / tau, cut to the nucleus);
    the trainer's pi_old of the sampled tokens equals them. The untruncated softmax (what pi_old was
    before) is off by log(kept mass) on every token."""
    config = RunConfig.from_dict(
        {
            "model_path": DEMO_BASE,
            "seed": 0,
            "temperature": 1.2,
            "top_p": 0.95,
            "steps": 1,
            "data": [
                {
                    "task": "chain_sum",
                    "size": 16,
                    "eval_size": 2,
                    "params": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
                }
            ],
            "max_prompt_tokens": 64,
            "prompts_per_step": 4,
            "samples_per_prompt": 8,
            "max_response_tokens": 48,
            "updates_per_step": 2,
            "device": "cpu",
        }
    )
    trainer = Trainer(config, tmp_path, JsonlSink(tmp_path))
    trainer.backend.lean = False  # HF's sampler, whose scores `generate` returns (the lean loop's: test_sampler_pi_old)
    generate, recorded = trainer.policy.generate, []

    def recording_generate(**kwargs):
        output = generate(**kwargs, output_scores=True, output_logits=True, return_dict_in_generate=True)
        recorded.append((torch.stack(output.scores, dim=1), torch.stack(output.logits, dim=1)))  # (M, steps, V)
        return output.sequences

    monkeypatch.setattr(trainer.policy, "generate", recording_generate)
    torch.manual_seed(0)
    rollout, _ = trainer._generate(trainer.mix.draw(4), None, penalty_on=False)
    ((scores, raw_logits),) = recorded  # one chunk: the 4 prompts x 8 samples, left-padded by the sampler
    batch = pack(rollout.prompts, rollout.responses, trainer.tokenizer.pad_token_id)
    T, mask = batch.targets.shape[1], batch.mask.bool()
    targets = batch.targets.unsqueeze(-1)
    sampler = torch.log_softmax(scores[:, :T].float(), dim=-1).gather(-1, targets).squeeze(-1)

    (pi_old,) = trainer._logprobs(trainer.policy, [batch])

    torch.testing.assert_close(pi_old[mask], sampler[mask], atol=2e-5, rtol=0)
    kept_mass = (torch.softmax(raw_logits[:, :T].float() / 1.2, dim=-1) * torch.isfinite(scores[:, :T])).sum(-1)
    (untruncated,) = batched_logprobs(trainer.policy, [batch], torch.device("cpu"), temperature=1.2)
    torch.testing.assert_close(untruncated[mask], (sampler + kept_mass.log())[mask], atol=2e-5, rtol=0)
    assert (kept_mass[mask] < 1).float().mean() > 0.5  # the cut acts on most tokens here
    assert (sampler - untruncated)[mask].mean() > 0.01  # the gap the trainer used to leave, in nats
