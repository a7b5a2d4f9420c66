"""The STEM verifier: multiple-choice letters and short numeric or symbolic answers (spec section 3)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from prorl_engine.data.example import Example
from prorl_engine.verifiers.equivalence import MathJudge
from prorl_engine.verifiers.stem import StemVerifier

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="the scorers run only in bubblewrap (scripts/install_system.sh)"
)

CHOICES = ["Volt", "Ampere", "Coulomb", "Ohm"]


def question(answer: str, choices: list[str] | None = None) -> Example:
    metadata = {"choices": choices} if choices else {}
    return Example(uid="s1", domain="stem", task="test", prompt="?", answer=answer, metadata=metadata)


@pytest.fixture(scope="module")
def verifier():
    judge = MathJudge(timeout_s=5.0, size=2)
    yield StemVerifier(judge)
    judge.close()


@pytest.mark.parametrize(
    "response",
    [
        "The unit is the coulomb, so \\boxed{C}.",
        "\\boxed{(C)}",
        "\\boxed{\\text{C}}",
        "\\boxed{C. Coulomb}",
        "\\boxed{Coulomb}",
        "The answer is (C).",
        "Answer: C",
        "The correct option is C",
        "**Answer:** **C**",
    ],
)
def test_the_right_letter_in_any_usual_form_earns_1(verifier, response):
    verdict = verifier.verify(response, question("C", CHOICES))
    assert (verdict.reward, verdict.format_ok, verdict.extracted) == (1.0, True, "C")


def test_a_wrong_letter_earns_0(verifier):
    verdict = verifier.verify("Answer: B", question("C", CHOICES))
    assert (verdict.reward, verdict.format_ok, verdict.extracted) == (0.0, True, "B")


def test_no_letter_is_a_format_failure(verifier):
    assert verifier.verify("Because charge is measured in coulombs.", question("C", CHOICES)).format_ok is False
    assert verifier.verify("Answer: Because of units", question("C", CHOICES)).format_ok is False


def test_the_last_stated_letter_counts_and_a_boxed_letter_wins(verifier):
    assert verifier.verify("Answer: A. Hmm, no. The answer is C.", question("C", CHOICES)).reward == 1.0
    assert verifier.verify("\\boxed{B} ... the answer is C", question("C", CHOICES)).reward == 0.0


def test_a_letter_without_a_choices_list_is_still_multiple_choice(verifier):
    assert verifier.verify("\\boxed{D}", question("(D)")).reward == 1.0
    assert verifier.verify("\\boxed{4}", question("D")).reward == 0.0


def test_a_reference_given_as_a_choice_text_is_turned_into_its_letter(verifier):
    assert verifier.verify("Answer: C", question("Coulomb", CHOICES)).reward == 1.0


def test_a_reference_that_is_neither_letter_nor_choice_is_a_data_error(verifier):
    with pytest.raises(ValueError, match="Tesla"):
        verifier.verify("Answer: C", question("Tesla", CHOICES))


@pytest.mark.parametrize(
    "response, reference",
    [
        ("The speed is \\boxed{10} m/s.", "10"),
        ("\\boxed{0.125}", "\\frac{1}{8}"),
        ("The final answer is 12.", "12"),
        ("Answer: $8x + 3$", "3 + 8x"),
        ("\\boxed{\\text{Mitochondria}}", "mitochondria"),
    ],
)
def test_a_short_answer_equal_in_value_or_text_earns_1(verifier, response, reference):
    assert verifier.verify(response, question(reference)).reward == 1.0


def test_a_wrong_short_answer_earns_0_and_no_answer_is_a_format_failure(verifier):
    assert verifier.verify("\\boxed{11}", question("10")).reward == 0.0
    verdict = verifier.verify("It goes fast.", question("10"))
    assert (verdict.reward, verdict.format_ok) == (0.0, False)


def test_answers_given_while_thinking_do_not_count(verifier):
    assert verifier.verify("<think>Answer: C</think>So, Answer: B", question("C", CHOICES)).reward == 0.0


def test_it_works_from_worker_threads(verifier):
    cases = [("\\boxed{C}", question("C", CHOICES)), ("\\boxed{1/8}", question("0.125"))] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        rewards = list(pool.map(lambda case: verifier.verify(*case).reward, cases))
    assert rewards == [1.0] * 8
