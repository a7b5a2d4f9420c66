"""n-gram novelty: how much of what a model writes never occurs in a reference corpus.

ProRL v1 measures the novelty of its answers against the text its base model was trained on (the
Creativity Index of Lu et al. 2024, arXiv:2410.04265, computed on word n-grams). Here: for each n in
`NGRAM_SIZES`, the share of a response's n-grams (every position, repeats counted) that never occur
anywhere in the corpus; an evaluation reports it over all its responses (`novelty_shares`).

Words, not the tokenizer's tokens: one index then serves every model of a comparison whatever its
tokenizer (a base model and a checkpoint of another run may tokenise differently), a registered
data set needs no model to be indexed, and the figures read like the paper's. A word is a run of
letters and digits or a single other visible character, after case folding, so "98+93=191" is the
five words 98 + 93 = 191 and the answer tags are words too.

The index (`NgramIndex`) is built once per corpus: its vocabulary gives each word an id, and each n
keeps the sorted, distinct 64-bit hashes of the corpus's n-grams of ids. A response's n-gram with a
word outside the vocabulary is novel without a lookup; two different n-grams share a hash with a
chance of about one in 2^64 / (corpus n-grams), which counts a novel n-gram as seen.
"""

from __future__ import annotations

import functools
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from prorl_engine.config_fields import NOVELTY_CORPORA
from prorl_engine.data.example import Example
from prorl_engine.data.sources import load_source
from prorl_engine.data.spec import DataSource

NGRAM_SIZES = (4, 5, 6, 7, 8)
WORD = re.compile(r"\w+|[^\w\s]")
UNKNOWN = -1  # the id of a word the corpus never uses
# A corpus named by the `novelty_corpus` field: "none" (no novelty metrics), "training_data" (the
# run's own training split: prompts and reference answers), or a builder of its texts, named by
# "module:function" and imported only when asked for (the core imports nothing of the demo).
CORPUS_BUILDERS: dict[str, str] = {
    "demo_sft": "prorl_engine.demo.build:sft_corpus",  # the demo base model's SFT prompts and targets
    "demo_padded_sft": "prorl_engine.demo.build:padded_sft_corpus",  # the claims demo's base (padded steps)
}


def words(text: str) -> list[str]:
    """The words n-grams are made of: "Let 98+93" -> ["let", "98", "+", "93"]."""
    return WORD.findall(text.casefold())


def _hashes(ids: Sequence[int], n: int) -> list[int]:
    """The hash of each n-gram of `ids` (len(ids) - n + 1 of them; none when shorter than n). A
    tuple of ints hashes the same in every process (only str hashes are salted)."""
    return [hash(tuple(ids[i : i + n])) for i in range(len(ids) - n + 1)]


@dataclass(frozen=True)
class NgramIndex:
    """Every n-gram of a corpus, for n in `sizes`, as sorted distinct hashes of word-id tuples."""

    vocabulary: dict[str, int]
    seen: dict[int, np.ndarray]  # n -> (distinct n-grams,) int64, sorted

    @classmethod
    def build(cls, texts: Iterable[str], sizes: Sequence[int] = NGRAM_SIZES) -> NgramIndex:
        if not sizes or min(sizes) < 1:
            raise ValueError(f"n-gram sizes must be whole numbers of at least 1, got {list(sizes)}")
        vocabulary: dict[str, int] = {}
        found: dict[int, set[int]] = {n: set() for n in sizes}
        for text in texts:
            ids = [vocabulary.setdefault(word, len(vocabulary)) for word in words(text)]
            for n in sizes:
                found[n].update(_hashes(ids, n))
        return cls(vocabulary, {n: np.sort(np.fromiter(hashes, np.int64, len(hashes))) for n, hashes in found.items()})

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(self.seen)

    def counts(self, text: str) -> dict[int, tuple[int, int]]:
        """n -> (novel n-grams, all n-grams) of `text`, every position counted."""
        ids = [self.vocabulary.get(word, UNKNOWN) for word in words(text)]
        result = {}
        for n, seen in self.seen.items():
            grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
            hashes = np.array([hash(gram) for gram in grams if UNKNOWN not in gram], dtype=np.int64)
            result[n] = (len(grams) - _found(seen, hashes), len(grams))
        return result


def _found(seen: np.ndarray, hashes: np.ndarray) -> int:
    """How many of `hashes` the sorted array `seen` holds: a binary search each (np.isin would sort
    the whole index again on every call)."""
    at = np.searchsorted(seen, hashes).clip(max=len(seen) - 1)
    return int((seen[at] == hashes).sum()) if len(seen) else 0


def pooled_shares(counts: Iterable[dict[int, tuple[int, int]]]) -> dict[int, float]:
    """n -> novel / all n-grams, summed over several texts' `NgramIndex.counts`; an n none of them
    is long enough for is left out."""
    novel: dict[int, int] = {}
    total: dict[int, int] = {}
    for text_counts in counts:
        for n, (new, count) in text_counts.items():
            novel[n] = novel.get(n, 0) + new
            total[n] = total.get(n, 0) + count
    return {n: novel[n] / total[n] for n in sorted(total) if total[n]}


def novelty_shares(index: NgramIndex, responses: Iterable[str]) -> dict[int, float]:
    """n -> the share of the responses' n-grams never seen in the corpus (all responses pooled)."""
    return pooled_shares(index.counts(response) for response in responses)


def example_text(example: Example) -> str:
    """What a model trained on `example` read: its prompt and, when it has one, its reference answer."""
    answer = example.answer if isinstance(example.answer, (str, int, float)) else None
    return example.prompt if answer is None else f"{example.prompt}\n{answer}"


def training_examples(sources: Sequence[DataSource], seed: int) -> list[Example]:
    """The training split of a data mix, as a run with this `seed` splits it (source i seeded seed + i)."""
    return [example for index, source in enumerate(sources) for example in load_source(source, seed + index)[0]]


def reference_index(name: str, training: Iterable[Example] = ()) -> NgramIndex | None:
    """The index of the corpus `name` (one of NOVELTY_CORPORA): None for "none"; for
    "training_data", the `training` examples; else its builder's texts, indexed once per process."""
    if name == "none":
        return None
    if name == "training_data":
        return NgramIndex.build(example_text(example) for example in training)
    if name not in CORPUS_BUILDERS:
        raise ValueError(f"novelty_corpus: unknown corpus {name!r} (known: {', '.join(NOVELTY_CORPORA)})")
    return _built_index(name)


@functools.lru_cache(maxsize=len(CORPUS_BUILDERS))
def _built_index(name: str) -> NgramIndex:
    return NgramIndex.build(pkgutil.resolve_name(CORPUS_BUILDERS[name])())
