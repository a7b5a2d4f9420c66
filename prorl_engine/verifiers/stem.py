"""STEM: the chosen option, or the short final answer, matches the reference (spec section 3).

Two kinds of question, told apart by the record:

multiple choice  `metadata["choices"]` is a non-empty list, or `example.answer` is a single letter
                 A-J (optionally in parentheses). The response's letter is read from, in order of
                 preference, its last `\\boxed{C}` (also `\\boxed{(C)}`, `\\boxed{\\text{C}}`,
                 `\\boxed{C. text}`, or the text of a choice), else its last "answer is (C)",
                 "Answer: C", "correct option is C". Reward 1 when it is the reference letter.
short answer     anything else: the last `\\boxed{}`, else the rest of the last "answer is ..." /
                 "Answer: ..." line, compared with `example.answer` by math-verify (numbers,
                 fractions, expressions) or, failing that, as text ignoring case and spaces.

No answer found: format_ok is False (the trainer's format penalty).
"""

from __future__ import annotations

import re

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict
from prorl_engine.verifiers.equivalence import MathJudge, default_judge
from prorl_engine.verifiers.extract import final_text, last_boxed

LETTERS = "ABCDEFGHIJ"

_LETTER_PHRASE = re.compile(
    r"(?i:answer|option|choice)(?:\s+is\s*:?|\s*:)\s*(?i:option\s+)?[*_\s]*\(?([A-J])\)?(?![A-Za-z0-9])"
)
_ANSWER_LINE = re.compile(r"(?i:answer)(?:\s+is\s*:?|\s*:)\s*(.+)")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_LEADING_LETTER = re.compile(r"^\(?([A-J])(?:[).:]|\s*$)")


class StemVerifier:
    """Binary reward for multiple-choice letters and short numeric or symbolic answers."""

    domain = "stem"

    def __init__(self, judge: MathJudge | None = None) -> None:
        self.judge = judge or default_judge()

    def verify(self, response: str, example: Example) -> Verdict:
        """Score one response against `example.answer` (and `metadata["choices"]` when given)."""
        text = final_text(response)
        choices = list(example.metadata.get("choices") or [])
        reference_letter = _reference_letter(example.answer, choices)
        if reference_letter is not None:
            return _verify_choice(text, reference_letter, choices)
        return self._verify_short_answer(text, str(example.answer))

    def _verify_short_answer(self, text: str, reference: str) -> Verdict:
        answer = last_boxed(text) or _last_answer_line(text)
        if answer is None:
            return Verdict(0.0, format_ok=False, details={"error": "no \\boxed{} or 'Answer:' found"})
        details = {"reference": reference}
        if _plain(answer) == _plain(reference):
            return Verdict(1.0, extracted=answer, details=details)
        judgement = self.judge.equivalent(reference, answer)
        if judgement.error:
            details["error"] = judgement.error
        return Verdict(1.0 if judgement.equal else 0.0, extracted=answer, details=details)


def _verify_choice(text: str, reference: str, choices: list) -> Verdict:
    """Multiple choice: compare the response's letter with the reference letter."""
    letter = _chosen_letter(text, choices)
    if letter is None:
        return Verdict(0.0, format_ok=False, details={"error": "no option letter found", "reference": reference})
    return Verdict(1.0 if letter == reference else 0.0, extracted=letter, details={"reference": reference})


def _reference_letter(answer: object, choices: list) -> str | None:
    """The reference as a letter when the question is multiple choice, else None."""
    text = str(answer).strip()
    letter = text.strip("()")
    if len(letter) == 1 and letter in LETTERS:
        return letter
    if not choices:
        return None
    letter = _letter_of_choice(text, choices)
    if letter is None:
        raise ValueError(f"stem: the answer {text!r} is neither a letter A-J nor one of the choices {choices!r}")
    return letter


def _chosen_letter(text: str, choices: list) -> str | None:
    """The option the response chose: its last boxed letter, else its last 'answer is X' phrase."""
    boxed = last_boxed(text)
    if boxed is not None:
        letter = _letter_in(boxed, choices)
        if letter is not None:
            return letter
    phrases = _LETTER_PHRASE.findall(text)
    return phrases[-1] if phrases else None


def _letter_in(boxed: str, choices: list) -> str | None:
    """`C`, `(C)`, `\\text{C}`, `C. Paris` or the text `Paris` of option C -> `C`."""
    content = _LATEX_TEXT.sub(r"\1", boxed).strip()
    match = _LEADING_LETTER.match(content)
    if match:
        return match.group(1)
    return _letter_of_choice(content, choices)


def _letter_of_choice(text: str, choices: list) -> str | None:
    """The letter of the choice whose text is `text` (ignoring case and spaces), if any."""
    for letter, choice in zip(LETTERS, choices):
        if _plain(str(choice)) == _plain(text):
            return letter
    return None


def _last_answer_line(text: str) -> str | None:
    """The rest of the last 'answer is ...' / 'Answer: ...' line, without a closing full stop or `$`."""
    lines = _ANSWER_LINE.findall(text)
    if not lines:
        return None
    answer = lines[-1].strip().rstrip(".").strip("$* ").strip()
    return answer or None


def _plain(text: str) -> str:
    """Text for a lenient comparison: `\\text{}` unwrapped, no spaces, case folded."""
    return "".join(_LATEX_TEXT.sub(r"\1", text).split()).casefold()
