"""How the IFEval checks read text: words, sentences and the language, each linear in the text's length.

IFEval (and lm-eval's copy of it) counts words with NLTK's `\\w+` tokenizer, as `words` does; counts
capitalised words with NLTK's `word_tokenize`, which `hyphenated_words` follows for hyphens; and
counts sentences with NLTK's Punkt model, which is not linear-time (several seconds on a megabyte
of "Mr. "), so `sentence_count` applies Punkt's commonest decisions instead: a sentence ends at a
whitespace-separated token ending in `.`, `!` or `?` (closing quotes, brackets and `*` may follow),
except after the titles Mr., Mrs., Ms., Dr. and Prof. README.md beside this file lists where the two
still differ. The language detector is seeded, so every answer is deterministic.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langdetect.detector_factory import DetectorFactory

SENTENCE_CLOSERS = "\"'”’)]*"  # may follow a sentence's final `.`, `!` or `?`
SENTENCE_OPENERS = "\"'“‘([*"
TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof"})  # a period after these ends no sentence (as in Punkt)


def words(text: str) -> list[str]:
    """Runs of letters, digits and `_`, as NLTK's `RegexpTokenizer(r"\\w+")` finds them for IFEval."""
    return re.findall(r"\w+", text)


def hyphenated_words(text: str) -> list[str]:
    """Words, a hyphenated word counting once ("WELL-KNOWN"), as IFEval's NLTK tokenizer counts them."""
    return re.findall(r"\w+(?:-\w+)*", text)


def sentence_count(text: str) -> int:
    """Sentences in `text`: runs of tokens up to one that ends a sentence (see `_ends_sentence`)."""
    count, open_sentence = 0, False
    for token in text.split():
        ends = _ends_sentence(token)
        count, open_sentence = count + ends, not ends
    return count + open_sentence


def _ends_sentence(token: str) -> bool:
    """`token` ends in `.`, `!` or `?` (closers after it allowed) and is not a title like "Dr."."""
    core = token.rstrip(SENTENCE_CLOSERS)
    if not core or core[-1] not in ".!?":
        return False
    return core[-1] != "." or core[:-1].lstrip(SENTENCE_OPENERS).lower() not in TITLES


_LANGUAGE_LOCK = threading.Lock()


@functools.cache
def _language_factory() -> DetectorFactory:
    """langdetect's profiles, loaded once, with a fixed seed (langdetect is random otherwise)."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text`'s language, or None when langdetect finds no features."""
    from langdetect.lang_detect_exception import LangDetectException

    with _LANGUAGE_LOCK:  # the first call loads the profiles; the cache is not a lock
        factory = _language_factory()
    detector = factory.create()
    # langdetect reads only its first `max_text_length` (10,000) characters, but runs its URL and
    # e-mail patterns over all of the text first: cut it here so 1 MB costs what 10 kB does.
    detector.append(text[: detector.max_text_length])
    try:
        return detector.detect()
    except LangDetectException:
        return None
