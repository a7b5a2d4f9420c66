"""The logic verifier: reasoning-gym's own scorer on the last <answer> tag (spec section 3)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import reasoning_gym

from prorl_engine.data.example import Example
from prorl_engine.verifiers.logic import LogicVerifier

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="the scorers run only in bubblewrap (scripts/install_system.sh)"
)


def puzzle(task: str = "leg_counting", seed: int = 3, entry_form: str = "entry") -> Example:
    """A reasoning-gym item as the data loader builds it: the entry, a JSON string of it, or its parts."""
    entry = reasoning_gym.create_dataset(task, size=1, seed=seed)[0]
    metadata = {
        "entry": {"entry": entry},
        "json": {"entry": json.dumps(entry)},
        "parts": {"metadata": entry["metadata"]},
    }[entry_form]
    return Example(
        uid="l1", domain="logic", task=task, prompt=entry["question"], answer=entry["answer"], metadata=metadata
    )


@pytest.fixture(scope="module")
def verifier():
    return LogicVerifier()


@pytest.mark.parametrize("entry_form", ["entry", "json", "parts"])
def test_the_right_answer_in_the_tag_earns_1(verifier, entry_form):
    example = puzzle(entry_form=entry_form)
    verdict = verifier.verify(f"Counting legs... <answer> {example.answer} </answer>", example)
    assert (verdict.reward, verdict.format_ok, verdict.extracted) == (1.0, True, example.answer)
    assert verdict.details["task"] == "leg_counting"


def test_a_wrong_answer_earns_0(verifier):
    example = puzzle()
    verdict = verifier.verify(f"<answer>{int(example.answer) + 1}</answer>", example)
    assert (verdict.reward, verdict.format_ok) == (0.0, True)


def test_no_complete_answer_tag_is_a_format_failure(verifier):
    example = puzzle()
    for response in (example.answer, f"<answer>{example.answer}", f"{example.answer}</answer>"):
        verdict = verifier.verify(response, example)
        assert (verdict.reward, verdict.format_ok) == (0.0, False)


def test_only_the_last_tag_counts_so_injected_tags_do_not_help(verifier):
    example = puzzle()
    right, wrong = example.answer, str(int(example.answer) + 1)
    assert verifier.verify(f"<answer>{right}</answer> no: <answer>{wrong}</answer>", example).reward == 0.0
    assert verifier.verify(f"<answer>{wrong}</answer> no: <answer>{right}</answer>", example).reward == 1.0
    assert verifier.verify(f"<answer>{wrong}<answer>{right}</answer>", example).reward == 1.0
    assert verifier.verify(f"<think><answer>{right}</answer></think><answer>{wrong}</answer>", example).reward == 0.0


def test_the_task_s_own_verifier_decides_including_its_partial_credit(verifier):
    example = puzzle("word_sorting", seed=5)
    words = example.answer.split(", ")
    assert verifier.verify(f"<answer>{example.answer}</answer>", example).reward == 1.0
    shuffled = verifier.verify(f"<answer>{', '.join(reversed(words))}</answer>", example).reward
    assert 0.0 <= shuffled < 1.0


def test_a_huge_answer_is_rejected_quickly(verifier):
    started = time.monotonic()
    verdict = verifier.verify("<answer>" * 100_000 + "1" * 1_000_000 + "</answer>", puzzle())
    assert verdict.reward == 0.0 and "longer than" in verdict.details["error"]
    assert time.monotonic() - started < 2.0


def test_an_unknown_task_is_a_data_error_naming_it(verifier):
    example = Example(uid="l1", domain="logic", task="no_such_puzzle", prompt="?", answer="1")
    with pytest.raises(ValueError, match="no_such_puzzle"):
        verifier.verify("<answer>1</answer>", example)
