"""n-gram novelty: the share of a response's word n-grams that a reference corpus never holds,
counted by hand on small corpora, and reported by evaluations when a corpus is configured."""

from __future__ import annotations

import pytest

from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.config_fields import NOVELTY_CORPORA
from prorl_engine.data.example import Example
from prorl_engine.evaluation import EvalSample, summarize
from prorl_engine.events import NullSink
from prorl_engine.novelty import CORPUS_BUILDERS, NgramIndex, example_text, novelty_shares, reference_index, words
from prorl_engine.trainer import Trainer

CORPUS = ["a b c d e", "x y z w"]


@pytest.fixture(scope="module")
def index() -> NgramIndex:
    return NgramIndex.build(CORPUS, sizes=(4, 5))


def test_words_are_runs_of_letters_and_digits_or_single_signs_after_case_folding():
    assert words("Let 98+93=191\n<answer>191</answer>") == [
        "let", "98", "+", "93", "=", "191", "<", "answer", ">", "191", "<", "/", "answer", ">",
    ]  # fmt: skip


def test_a_response_copied_from_the_corpus_has_no_novel_ngram(index):
    assert index.counts("a b c d") == {4: (0, 1), 5: (0, 0)}
    assert index.counts("A  B\nC d e") == {4: (0, 2), 5: (0, 1)}  # case and spacing do not matter


def test_an_ngram_with_a_word_the_corpus_never_uses_is_novel(index):
    # 4-grams: "b c d e" seen, "c d e f" new; the one 5-gram "b c d e f" new
    assert index.counts("b c d e f") == {4: (1, 2), 5: (1, 1)}


def test_ngrams_across_two_corpus_texts_were_never_seen(index):
    # a b c d (seen), b c d x, c d x y, d x y z (never: they straddle two texts), x y z w (seen)
    assert index.counts("a b c d x y z w") == {4: (3, 5), 5: (4, 4)}


def test_repeated_ngrams_count_at_every_position(index):
    # a b c d twice (seen), b c d a, c d a b, d a b c (never)
    assert index.counts("a b c d a b c d") == {4: (3, 5), 5: (4, 4)}


def test_a_response_shorter_than_n_has_no_ngrams(index):
    assert index.counts("a b c") == {4: (0, 0), 5: (0, 0)}


def test_a_corpus_too_short_for_n_holds_no_ngram_of_that_size():
    index = NgramIndex.build(["a b c"], sizes=(2, 4))
    assert index.counts("a b a b") == {2: (1, 3), 4: (1, 1)}  # "b a" and "a b a b" are new


def test_novelty_pools_every_responses_ngrams_and_leaves_out_an_n_none_reaches(index):
    # 4: 0 of 1 + 1 of 2 = 1 of 3; 5: only the second response has one, and it is new
    assert novelty_shares(index, ["a b c d", "b c d e f"]) == {4: pytest.approx(1 / 3), 5: 1.0}
    assert novelty_shares(index, ["a b c"]) == {}


def test_the_default_sizes_are_4_to_8():
    index = NgramIndex.build(["one two three four five six seven eight nine"])
    assert index.sizes == (4, 5, 6, 7, 8)
    # 9 words: 6 4-grams ... 2 8-grams, all seen; "ten" makes the last n-gram of each size new
    assert index.counts("one two three four five six seven eight nine ten") == {
        4: (1, 7),
        5: (1, 6),
        6: (1, 5),
        7: (1, 4),
        8: (1, 3),
    }


def test_sizes_below_one_are_refused():
    with pytest.raises(ValueError, match="n-gram sizes"):
        NgramIndex.build(CORPUS, sizes=(0, 4))


def sample(uid: str, task: str, response: str) -> EvalSample:
    return EvalSample(uid, task, "logic", 0, response, 1.0, True, 4, False)


def test_an_evaluation_reports_novelty_per_task_and_overall(index):
    samples = [sample("p1", "t1", "a b c d"), sample("p2", "t2", "b c d e f"), sample("p2", "t2", "q r s t u")]
    metrics = summarize(samples, [1], index)
    assert metrics["eval/t1/novelty@4"] == 0.0 and "eval/t1/novelty@5" not in metrics
    assert metrics["eval/t2/novelty@4"] == pytest.approx(3 / 4)  # 1 of 2 and 2 of 2
    assert metrics["eval/t2/novelty@5"] == 1.0  # both 5-grams are new
    assert metrics["eval/all/novelty@4"] == pytest.approx(3 / 5)
    assert metrics["eval/logic/novelty@4"] == metrics["eval/all/novelty@4"]
    assert not any("novelty" in key for key in summarize(samples, [1]))  # no corpus, no novelty


def test_the_training_data_corpus_holds_prompts_and_answers():
    examples = [Example("u1", "logic", "t", "What is 2 + 3 + 4?", answer="9"), Example("u2", "code", "t", "Write f")]
    assert example_text(examples[0]) == "What is 2 + 3 + 4?\n9"
    assert example_text(examples[1]) == "Write f"
    index = reference_index("training_data", examples)
    assert index.counts("2 + 3 + 4 ?\n9") == {4: (0, 4), 5: (0, 3), 6: (0, 2), 7: (0, 1), 8: (0, 0)}
    assert reference_index("none") is None


def test_every_corpus_the_config_offers_has_a_meaning():
    assert set(NOVELTY_CORPORA) == {"none", "training_data", *CORPUS_BUILDERS}


def test_an_unknown_corpus_is_refused_by_name():
    with pytest.raises(ValueError, match="novelty_corpus: unknown corpus 'wiki'"):
        reference_index("wiki")
    with pytest.raises(ConfigError, match="novelty_corpus"):
        RunConfig.from_dict({"model_path": "tiny:var/models/t", "novelty_corpus": "wiki"}, check_paths=False)


def naive_novelty(corpus: list[str], responses: list[str], n: int) -> float:
    """An independent count: sets of word tuples, no vocabulary, no hashes."""
    seen = {tuple(w[i : i + n]) for w in map(words, corpus) for i in range(len(w) - n + 1)}
    grams = [tuple(w[i : i + n]) for w in map(words, responses) for i in range(len(w) - n + 1)]
    return sum(gram not in seen for gram in grams) / len(grams)


def test_a_runs_evaluation_measures_novelty_against_its_training_split(tiny_model, tmp_path):
    config = RunConfig.from_dict(
        {
            "model_path": str(tiny_model),
            "data": [{"task": "chain_sum", "size": 40, "eval_size": 3, "instruction": ""}],
            "max_prompt_tokens": 64,
            "max_response_tokens": 24,
            "rollout_batch_size": 8,
            "eval_every": 1,
            "eval_samples": 2,
            "eval_k": [1],
            "eval_temperature": 1.0,
            "novelty_corpus": "training_data",
        }
    )
    trainer = Trainer(config, tmp_path, NullSink())
    report = trainer.evaluate()
    corpus = [example_text(e) for stream in trainer.mix.streams for e in stream.examples]
    responses = [s.response for s in report.samples]
    for n in (4, 8):
        assert report.metrics[f"eval/all/novelty@{n}"] == pytest.approx(naive_novelty(corpus, responses, n))
    assert 0 < report.metrics["eval/all/novelty@4"] <= 1  # a random model's text is mostly new


def test_the_demo_corpus_is_the_committed_builds_sft_data():
    import json

    from prorl_engine.demo.build import DEMO_MODEL_DIR, sft_corpus
    from prorl_engine.demo.problems import held_out_examples

    corpus = sft_corpus()
    info = json.loads((DEMO_MODEL_DIR / "build_info.json").read_text())
    assert len(corpus) == info["examples"] == 27_000
    assert all(text.endswith("</answer>") and "Put your final answer inside" in text for text in corpus)
    held_out = {e.prompt for e in held_out_examples()}
    prompts = {text[: text.index(" tags.") + len(" tags.")] for text in corpus}  # the instruction ends " tags."
    assert len(held_out) > 50 and len(prompts) > 20_000
    assert not prompts & held_out  # the demo run's held-out questions stay out
    index = reference_index("demo_sft")
    assert index is reference_index("demo_sft")  # built once per process
    assert novelty_shares(index, corpus[:50]) == dict.fromkeys((4, 5, 6, 7, 8), 0.0)
