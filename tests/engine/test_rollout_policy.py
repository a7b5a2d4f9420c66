"""The log-probs the update uses are those of the policy that sampled, and the verifier judges the
text the model wrote.

The committed demo base model is used where a peaked distribution matters (a random tiny model's
next-token distribution is nearly uniform, so temperature would hardly change it).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from prorl_engine.data.example import Example
from prorl_engine.modeling import decode_response, encode_prompt, load_policy, load_tokenizer
from prorl_engine.rewards import score_all
from prorl_engine.rollout import HFGenerateBackend, SamplingParams, pack, response_logprobs
from prorl_engine.tiny import EOS, train_tokenizer

DEMO_BASE = "prorl_engine/configs/demo-base"
QUESTION = "State the final answer to the following arithmetic problem: 7 + 5 =\nPut your final answer inside <answer></answer> tags."


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

    example = Example(uid="chain_sum/0", prompt="What is 7 + 5?", domain="logic", task="chain_sum",
                      answer="12", metadata={"entry": {"question": "What is 7 + 5?", "answer": "12",
                                                       "metadata": {"source_dataset": "chain_sum"}}})
    score, = score_all([example], [text], [False], format_penalty=-0.5, truncated_reward=0.0)
    assert score.verdict.format_ok and score.reward == 1.0
