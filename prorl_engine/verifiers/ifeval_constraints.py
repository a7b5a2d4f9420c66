"""The IFEval families of verifiable instructions, one small check per instruction id.

Ids and keyword-argument names are IFEval's (Zhou et al. 2023, "Instruction-Following Evaluation
for Large Language Models"), so its data files and their `kwargs` work unchanged: `CONSTRAINTS` maps
each id to a function `(response, **kwargs) -> bool`. This is the project's own implementation of
the published definitions ("strict" variant: the response is checked as written), tested against
the reference that lm-eval ships (tests/engine/test_verifiers_ifeval.py; README.md beside this file
lists where and why the two differ). Every check is linear in the response's length and deterministic;
words, sentences and the language are read by ifeval_text.py.

Counts come with a `relation`: "less than" (count < N) or "at least" (count >= N), as in IFEval.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from prorl_engine.verifiers.ifeval_text import detect_language, hyphenated_words, sentence_count, words

RELATIONS = ("less than", "at least")
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
RESPONSE_SEPARATOR = "******"  # combination:two_responses
FIRST_WORD_END = frozenset(".,?!'\"")  # length_constraints:nth_paragraph_first_word, as IFEval cuts the word
PARAGRAPH_DIVIDER = re.compile(r"\s?\*\*\*\s?")  # length_constraints:number_paragraphs: markdown `***`


def _compare(count: int, relation: str, target: int) -> bool:
    if relation == "less than":
        return count < int(target)
    if relation == "at least":
        return count >= int(target)
    raise ValueError(f"ifeval: relation must be one of {RELATIONS}, got {relation!r}")


# keywords ---------------------------------------------------------------------------------------


def keywords_existence(response: str, keywords: list[str]) -> bool:
    """Every keyword appears (case-insensitive)."""
    return all(re.search(re.escape(keyword), response, re.IGNORECASE) for keyword in keywords)


def keywords_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    """The keyword (surrounding spaces ignored) appears `relation` `frequency` times (case-insensitive)."""
    count = len(re.findall(re.escape(keyword.strip()), response, re.IGNORECASE))
    return _compare(count, relation, frequency)


def keywords_forbidden_words(response: str, forbidden_words: list[str]) -> bool:
    """None of the words appears as a whole word (case-insensitive)."""
    return not any(re.search(rf"\b{re.escape(word)}\b", response, re.IGNORECASE) for word in forbidden_words)


def keywords_letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    """The letter a-z appears `let_relation` `let_frequency` times (case-insensitive). Any other `letter`
    is a data error (IFEval would silently pick a random letter instead)."""
    if len(letter) != 1 or not (letter.isascii() and letter.isalpha()):
        raise ValueError(f"ifeval: keywords:letter_frequency needs one letter a-z, got {letter!r}")
    return _compare(response.lower().count(letter.lower()), let_relation, let_frequency)


# language ---------------------------------------------------------------------------------------


def language_response_language(response: str, language: str) -> bool:
    """The whole response is in `language` (ISO 639-1 code, by langdetect)."""
    return detect_language(response) == language


# length_constraints -----------------------------------------------------------------------------


def length_number_sentences(response: str, num_sentences: int, relation: str) -> bool:
    """The response has `relation` `num_sentences` sentences."""
    return _compare(sentence_count(response), relation, num_sentences)


def length_number_paragraphs(response: str, num_paragraphs: int) -> bool:
    """Exactly `num_paragraphs` paragraphs separated by the markdown divider `***`, none empty."""
    paragraphs = PARAGRAPH_DIVIDER.split(response)
    if paragraphs and not paragraphs[0].strip():
        paragraphs = paragraphs[1:]
    if paragraphs and not paragraphs[-1].strip():
        paragraphs = paragraphs[:-1]
    return all(part.strip() for part in paragraphs) and len(paragraphs) == int(num_paragraphs)


def length_number_words(response: str, num_words: int, relation: str) -> bool:
    """The response has `relation` `num_words` words."""
    return _compare(len(words(response)), relation, num_words)


def length_nth_paragraph_first_word(response: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """`num_paragraphs` non-empty paragraphs separated by "\\n\\n"; the `nth_paragraph`-th part of that
    split (from 1; an empty one fails) starts with `first_word`, case ignored. As in IFEval, leading
    `'` then `"` are dropped and the word ends at its first `.,?!'"`."""
    parts = response.split("\n\n")
    count, nth = sum(1 for part in parts if part.strip()), int(nth_paragraph)
    if count != int(num_paragraphs) or not 1 <= nth <= count or not parts[nth - 1].strip():
        return False
    word = parts[nth - 1].split()[0].lstrip("'").lstrip('"')
    cut = next((i for i, char in enumerate(word) if char in FIRST_WORD_END), len(word))
    return word[:cut].lower() == first_word.lower()


# detectable_content -----------------------------------------------------------------------------


def content_number_placeholders(response: str, num_placeholders: int) -> bool:
    """At least `num_placeholders` placeholders in square brackets, like [address], each on one line."""
    return sum(_bracketed_count(line) for line in response.split("\n")) >= int(num_placeholders)


def _bracketed_count(line: str) -> int:
    """How many `[...]` follow one another in `line` (a linear scan; the regex was quadratic)."""
    count = position = 0
    while (start := line.find("[", position)) >= 0 and (end := line.find("]", start + 1)) >= 0:
        count, position = count + 1, end + 1
    return count


def content_postscript(response: str, postscript_marker: str) -> bool:
    """A postscript starting with `postscript_marker` ("P.S." or "P.P.S"; "P. S." also counts)."""
    marker = postscript_marker.strip().lower()
    if marker == "p.p.s":
        pattern = r"p\.\s?p\.\s?s"
    elif marker == "p.s.":
        pattern = r"p\.\s?s\."
    else:
        pattern = re.escape(marker)
    return re.search(pattern, response.lower()) is not None


# detectable_format ------------------------------------------------------------------------------


def format_number_bullet_lists(response: str, num_bullets: int) -> bool:
    """Exactly `num_bullets` markdown bullet points: lines whose first non-space character is `-`,
    or `*` followed by another character than `*` (so `**bold**` opens no bullet).

    IFEval's MULTILINE patterns `^\\s*\\*[^\\*].*$` and `^\\s*-.*$` let `\\s*` run across newlines,
    which makes them quadratic (64k newlines took 15 s); one pass over the lines counts the same
    bullets in linear time.
    """
    return sum(_is_bullet(line.lstrip()) for line in response.split("\n")) == int(num_bullets)


def _is_bullet(line: str) -> bool:
    return line.startswith("-") or (line.startswith("*") and len(line) > 1 and line[1] != "*")


def format_constrained_response(response: str) -> bool:
    """Contains one of "My answer is yes.", "My answer is no.", "My answer is maybe."."""
    return any(option in response.strip() for option in CONSTRAINED_RESPONSES)


def format_number_highlighted_sections(response: str, num_highlights: int) -> bool:
    """At least `num_highlights` non-empty markdown highlights, *like this* or **like this**."""
    single = [text for text in re.findall(r"\*[^\n\*]*\*", response) if text.strip("*").strip()]
    double = [text for text in re.findall(r"\*\*[^\n\*]*\*\*", response) if text[2:-2].strip()]
    return len(single) + len(double) >= int(num_highlights)


def format_multiple_sections(response: str, section_spliter: str, num_sections: int) -> bool:
    """At least `num_sections` sections, each opened by `section_spliter` and a number ("SECTION 1")."""
    sections = re.split(r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?", response)
    return len(sections) - 1 >= int(num_sections)


def format_json_format(response: str) -> bool:
    """The whole response is JSON (a ```json fence around it is allowed)."""
    text = response.strip()
    text = re.sub(r"^```(?:json)?", "", text, flags=re.IGNORECASE).removesuffix("```").strip()
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def format_title(response: str) -> bool:
    """A title in double angular brackets, like <<poem of joy>>, on one line and not blank."""
    return any(_has_title(line) for line in response.split("\n"))


def _has_title(line: str) -> bool:
    """IFEval's `<<[^\\n]+>>` on one line (from the first `<<` to the last `>>`), without its regex."""
    start, end = line.find("<<"), line.rfind(">>")
    return start >= 0 and end >= start + 3 and bool(line[start : end + 2].lstrip("<").rstrip(">").strip())


# combination ------------------------------------------------------------------------------------


def combination_two_responses(response: str) -> bool:
    """Two different responses separated by six asterisks `******`."""
    parts = response.split(RESPONSE_SEPARATOR)
    if parts and not parts[0].strip():
        parts = parts[1:]
    if parts and not parts[-1].strip():
        parts = parts[:-1]
    return len(parts) == 2 and all(p.strip() for p in parts) and parts[0].strip() != parts[1].strip()


def combination_repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    """The response starts by repeating the request word for word (case-insensitive)."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# startend ---------------------------------------------------------------------------------------


def startend_end_checker(response: str, end_phrase: str) -> bool:
    """The response ends with `end_phrase` (case-insensitive; a closing quote is allowed)."""
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def startend_quotation(response: str) -> bool:
    """The whole response is wrapped in double quotation marks."""
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


# change_case ------------------------------------------------------------------------------------


def case_capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    """Words in all capital letters appear `capital_relation` `capital_frequency` times."""
    tokens = hyphenated_words(response)
    return _compare(sum(token.isupper() for token in tokens), capital_relation, capital_frequency)


def case_english_capital(response: str) -> bool:
    """English, in capital letters only."""
    return response.isupper() and detect_language(response) == "en"


def case_english_lowercase(response: str) -> bool:
    """English, in lowercase letters only."""
    return response.islower() and detect_language(response) == "en"


# punctuation ------------------------------------------------------------------------------------


def punctuation_no_comma(response: str) -> bool:
    """No commas at all."""
    return "," not in response


CONSTRAINTS: dict[str, Callable[..., bool]] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": keywords_forbidden_words,
    "keywords:letter_frequency": keywords_letter_frequency,
    "language:response_language": language_response_language,
    "length_constraints:number_sentences": length_number_sentences,
    "length_constraints:number_paragraphs": length_number_paragraphs,
    "length_constraints:number_words": length_number_words,
    "length_constraints:nth_paragraph_first_word": length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": content_number_placeholders,
    "detectable_content:postscript": content_postscript,
    "detectable_format:number_bullet_lists": format_number_bullet_lists,
    "detectable_format:constrained_response": format_constrained_response,
    "detectable_format:number_highlighted_sections": format_number_highlighted_sections,
    "detectable_format:multiple_sections": format_multiple_sections,
    "detectable_format:json_format": format_json_format,
    "detectable_format:title": format_title,
    "combination:two_responses": combination_two_responses,
    "combination:repeat_prompt": combination_repeat_prompt,
    "startend:end_checker": startend_end_checker,
    "startend:quotation": startend_quotation,
    "change_case:capital_word_frequency": case_capital_word_frequency,
    "change_case:english_capital": case_english_capital,
    "change_case:english_lowercase": case_english_lowercase,
    "punctuation:no_comma": punctuation_no_comma,
}
