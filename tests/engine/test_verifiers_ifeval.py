"""The instruction-following verifier: IFEval's verifiable constraints, fraction met (spec section 3)."""

from __future__ import annotations

import re
import time

import pytest

from prorl_engine.data.example import Example
from prorl_engine.verifiers.ifeval import IFEvalVerifier
from prorl_engine.verifiers.ifeval_constraints import CONSTRAINTS

ENGLISH = "The quick brown fox jumps over the lazy dog while the farmer watches from the field."

# (instruction id, kwargs, a response that meets it, a response that does not)
CASES = [
    ("keywords:existence", {"keywords": ["salt", "Horizon"]}, "Salt on the wind, a far horizon.", "Salt on the wind."),
    ("keywords:frequency", {"keyword": "light", "frequency": 2, "relation": "at least"},
     "Light comes, and the light stays.", "Light comes and goes."),
    ("keywords:frequency", {"keyword": "light", "frequency": 2, "relation": "less than"},
     "Light comes and goes.", "Light comes, and the light stays."),
    ("keywords:forbidden_words", {"forbidden_words": ["tree", "wind"]}, "Leaves fall in the treetops.", "The Wind blows."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "less than"},
     "A lazy dog.", "Zany zebras zigzag."),
    ("language:response_language", {"language": "fr"},
     "Les feuilles tombent en automne parce que les jours raccourcissent et il fait plus froid.", ENGLISH),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "One. Two! Three?", "One. Two."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n***\nSecond.\n***\nThird.",
     "First.\n***\n\n***\nThird."),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "Just four words here.",
     "These are exactly five words."),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"},
     "Tea is calming.\n\n\"However, it has caffeine.", "Tea is calming.\n\nIt has caffeine."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you at [address].",
     "Dear [name], see you soon."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Regards.\nP.S. Bring tea.", "Regards. Bring tea."),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Regards.\nP.P.S. Bring tea.", "Regards.\nP.S. Bring tea."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Benefits:\n* sleep\n* mood\n- health",
     "Benefits:\n* sleep\n* mood"),
    ("detectable_format:constrained_response", {}, "I think so. My answer is yes.", "Yes, I think so."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "A *bright* lamp with **warm** light.",
     "A *bright* lamp with ** ** light."),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nOnce upon a time.\nSECTION 2\nThe end.", "SECTION 1\nOnce upon a time. The end."),
    ("detectable_format:json_format", {}, '```json\n{"planets": ["Mercury", "Venus"]}\n```', "planets: Mercury, Venus"),
    ("detectable_format:title", {}, "<<The Lamp>>\nIt glows.", "<< >>\nIt glows."),
    ("combination:two_responses", {}, "Whiskers\n******\nMittens", "Whiskers\n******\nWhiskers"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "What is a good name for a bakery?"},
     "what is a good name for a bakery? Rise & Shine.", "A good name: Rise & Shine."),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
     "Done. Is there anything else I can help with?", "Is there anything else I can help with? Done."),
    ("startend:quotation", {}, '"Plants make sugar from light."', 'Plants make "sugar" from light.'),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "NEVER give UP.", "Never give UP."),
    ("change_case:english_capital", {}, ENGLISH.upper(), ENGLISH),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), ENGLISH),
    ("punctuation:no_comma", {}, "Salt and wind and sea.", "Salt, wind and sea."),
]


def request(ids: list[str], kwargs: list[dict]) -> Example:
    metadata = {"instruction_id_list": ids, "kwargs": kwargs}
    return Example(uid="i1", domain="ifeval", task="test", prompt="?", metadata=metadata)


@pytest.fixture(scope="module")
def verifier():
    return IFEvalVerifier()


def test_every_ifeval_family_is_covered_here():
    assert {case[0] for case in CASES} == set(CONSTRAINTS)


@pytest.mark.parametrize("instruction, kwargs, meets, fails", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_constraint_passes_and_fails(verifier, instruction, kwargs, meets, fails):
    example = request([instruction], [kwargs])
    passing = verifier.verify(meets, example)
    assert (passing.reward, passing.format_ok) == (1.0, True)
    assert passing.details["constraints"] == [{"id": instruction, "met": True}]
    failing = verifier.verify(fails, example)
    assert (failing.reward, failing.format_ok) == (0.0, True)
    assert failing.details["constraints"] == [{"id": instruction, "met": False}]


def test_the_reward_is_the_fraction_of_constraints_met(verifier):
    example = request(["punctuation:no_comma", "keywords:existence", "startend:quotation"],
                      [{}, {"keywords": ["sea"]}, {}])
    verdict = verifier.verify("Salt, wind and sea.", example)
    assert verdict.reward == pytest.approx(1 / 3)
    assert [c["met"] for c in verdict.details["constraints"]] == [False, True, False]
    assert (verdict.details["met"], verdict.details["total"]) == (1, 3)


def test_ifeval_s_padded_kwargs_with_nulls_are_accepted(verifier):
    padded = {"keywords": None, "num_words": 5, "relation": "less than", "end_phrase": None, "language": None}
    assert verifier.verify("Four words right here.", request(["length_constraints:number_words"], [padded])).reward == 1.0


def test_only_the_text_after_thinking_is_checked(verifier):
    example = request(["punctuation:no_comma"], [{}])
    assert verifier.verify("<think>Hmm, commas, commas.</think>No commas here.", example).reward == 1.0
    assert verifier.verify("<think>Let me think.</think>  ", example).format_ok is False


@pytest.mark.parametrize("hostile", ["*[<<" * 100_000, " " * 500_000 + "p", "[" * 500_000, "<" * 500_000])
def test_a_hostile_response_is_checked_in_linear_time(verifier, hostile):
    example = request(list(CONSTRAINTS), [case_kwargs(name) for name in CONSTRAINTS])
    started = time.monotonic()
    verdict = verifier.verify(hostile, example)
    assert verdict.details["total"] == len(CONSTRAINTS)
    assert time.monotonic() - started < 3.0


HOSTILE = {  # each about 64k to 1 MB; a quadratic check takes seconds to minutes on them
    "64k newlines": "\n" * 65_536,
    "1 MB of tabs and newlines": "\t\n" * 500_000,
    "1 MB of indented lines": (" " * 60 + "\n") * 16_000,
    "1 MB of spaces, then a letter": " " * 1_000_000 + "p",
    "1 MB of bullet-like lines": "* \n- \n" * 170_000,
    "1 MB of words and sentences": "Salt and light. " * 62_500,
    "1 MB of markup": "**<<[*P. S. SECTION 1 ***" * 40_000,
    "1 MB of letters": "a" * 1_000_000,
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("instruction", sorted(CONSTRAINTS))
def test_every_constraint_takes_linear_time_on_hostile_input(instruction):
    check, kwargs = CONSTRAINTS[instruction], case_kwargs(instruction)
    check("warm up: langdetect loads its profiles on first use", **kwargs)
    for name, text in HOSTILE.items():
        started = time.monotonic()
        check(text, **kwargs)
        assert time.monotonic() - started < 2.0, name


@pytest.mark.parametrize("text", [
    "Benefits:\n* sleep\n* mood\n- health",
    "  * indented\n\t- tabbed\n**bold** is no bullet\n*** rule\n-dash",
    "\n\n\n* after blank lines\n\n- and between them\n",
    "No bullets at all.\nJust lines * with stars - and dashes.",
    "* one\r\n* two\r\n",
])
def test_bullets_are_counted_as_ifeval_s_own_patterns_count_them(text):
    ifeval = len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)) + len(re.findall(r"^\s*-.*$", text, flags=re.MULTILINE))
    assert CONSTRAINTS["detectable_format:number_bullet_lists"](text, num_bullets=ifeval)
    assert not CONSTRAINTS["detectable_format:number_bullet_lists"](text, num_bullets=ifeval + 1)


def test_a_megabyte_of_english_is_still_english():
    text = ENGLISH + " " + "The farmer counts the sheep in the field before the evening rain. " * 15_000
    started = time.monotonic()
    assert CONSTRAINTS["language:response_language"](text, language="en")
    assert CONSTRAINTS["change_case:english_lowercase"](text.lower())
    assert time.monotonic() - started < 1.0


def case_kwargs(instruction: str) -> dict:
    return next(kwargs for name, kwargs, _, _ in CASES if name == instruction)


@pytest.mark.parametrize("ids, kwargs, message", [
    (["keywords:telepathy"], [{}], "keywords:telepathy"),
    (["keywords:frequency"], [{"keyword": "a"}], "keywords:frequency"),
    (["punctuation:no_comma"], [{"stray": 1}], "punctuation:no_comma"),
    ([], [], "non-empty list"),
    (["punctuation:no_comma"], [{}, {}], "one object per instruction"),
])
def test_unknown_ids_and_misfitting_kwargs_are_data_errors(verifier, ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        verifier.verify("Anything.", request(ids, kwargs))


def test_an_unknown_relation_is_a_data_error(verifier):
    example = request(["length_constraints:number_words"], [{"num_words": 3, "relation": "about"}])
    with pytest.raises(ValueError, match="relation"):
        verifier.verify("A few words.", example)
