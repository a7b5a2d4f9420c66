"""The math verifier: the last \\boxed{} answer against the reference, by value (spec section 3)."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from prorl_engine.data.example import Example
from prorl_engine.verifiers.equivalence import MathJudge
from prorl_engine.verifiers.math import MathVerifier

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="the scorers run only in bubblewrap (scripts/install_system.sh)"
)


def problem(answer: str) -> Example:
    return Example(uid="m1", domain="math", task="test", prompt="?", answer=answer)


@pytest.fixture(scope="module")
def verifier():
    judge = MathJudge(timeout_s=5.0, size=2)
    yield MathVerifier(judge)
    judge.close()


@pytest.fixture(scope="module")
def impatient():
    """A verifier whose comparisons may take 1 s, to show the bound without waiting 5 s."""
    judge = MathJudge(timeout_s=1.0, size=1)
    yield MathVerifier(judge)
    judge.close()


def test_a_correct_boxed_answer_earns_1(verifier):
    verdict = verifier.verify("17 * 23 = 391, so the answer is \\boxed{391}.", problem("391"))
    assert (verdict.reward, verdict.format_ok, verdict.extracted) == (1.0, True, "391")


@pytest.mark.parametrize(
    "written, reference",
    [
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{\\dfrac{2}{3}}", "\\frac{2}{3}"),
        ("\\boxed{\\sqrt{50}}", "5\\sqrt{2}"),
        ("\\boxed{x = 5}", "5"),
        ("\\boxed{\\{3, 2\\}}", "\\{2, 3\\}"),
        ("\\boxed{1+2x+x^2}", "x^2 + 2x + 1"),
    ],
)
def test_an_equal_value_in_another_form_earns_1(verifier, written, reference):
    assert verifier.verify(f"So we get {written}.", problem(reference)).reward == 1.0


def test_a_wrong_answer_earns_0_with_a_readable_answer(verifier):
    verdict = verifier.verify("\\boxed{390}", problem("391"))
    assert (verdict.reward, verdict.format_ok, verdict.extracted) == (0.0, True, "390")
    assert verdict.details["reference"] == "391"


def test_no_boxed_answer_is_a_format_failure(verifier):
    verdict = verifier.verify("The answer is 391.", problem("391"))
    assert (verdict.reward, verdict.format_ok, verdict.extracted) == (0.0, False, None)


def test_of_several_boxed_answers_only_the_last_counts(verifier):
    assert verifier.verify("\\boxed{391} or maybe \\boxed{390}", problem("391")).reward == 0.0
    assert verifier.verify("\\boxed{390}, no wait: \\boxed{391}", problem("391")).reward == 1.0


def test_the_braceless_and_fbox_forms_are_read(verifier):
    assert verifier.verify("Final: $\\boxed 391$", problem("391")).reward == 1.0
    assert verifier.verify("Final: \\fbox{391}", problem("391")).reward == 1.0


def test_a_truncated_last_box_falls_back_to_the_last_complete_one(verifier):
    verdict = verifier.verify("\\boxed{\\frac{2}{3}} and then \\boxed{\\frac{1", problem("\\frac{2}{3}"))
    assert (verdict.reward, verdict.extracted) == (1.0, "\\frac{2}{3}")


def test_an_answer_boxed_while_thinking_does_not_count(verifier):
    thinking = "<think>Maybe \\boxed{391}?</think>"
    assert verifier.verify(thinking + " It is \\boxed{390}.", problem("391")).reward == 0.0
    assert verifier.verify(thinking + " I do not know.", problem("391")).format_ok is False


def test_a_huge_response_of_unclosed_boxes_is_rejected_quickly(verifier):
    response = "blah " * 200_000 + "\\boxed{" * 100_000
    started = time.monotonic()
    verdict = verifier.verify(response, problem("391"))
    assert verdict.format_ok is False
    assert time.monotonic() - started < 2.0


def test_an_overlong_boxed_answer_earns_0_unread(verifier):
    verdict = verifier.verify("\\boxed{" + "1" * 2000 + "}", problem("391"))
    assert verdict.reward == 0.0 and "longer than" in verdict.details["error"]


def test_an_answer_that_would_take_sympy_minutes_is_cut_off_and_the_judge_recovers(impatient):
    started = time.monotonic()
    verdict = impatient.verify("\\boxed{9^{9^{9}}}", problem("391"))
    assert verdict.reward == 0.0 and "timed out" in verdict.details["error"]
    assert time.monotonic() - started < 4.0
    assert impatient.verify("\\boxed{391}", problem("3 9 1")).reward == 1.0
    assert impatient.verify("\\boxed{\\frac{782}{2}}", problem("391")).reward == 1.0


def test_it_works_from_worker_threads(verifier):
    responses = [f"\\boxed{{{n}/2}}" for n in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda n: verifier.verify(responses[n], problem(f"{n / 2}")), range(8)))
    assert [v.reward for v in verdicts] == [1.0] * 8
