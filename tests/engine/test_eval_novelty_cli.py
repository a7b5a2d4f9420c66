"""`prorl eval --novelty-corpus`: novelty@n of the responses against a corpus, checked against an
independent count (sets of word tuples, no hashing) on a hand-made corpus built from the model's own
responses, and the corpora the command refuses."""

from __future__ import annotations

import json
import re

from prorl_engine.cli import main

EVAL = ["--data", "rg:chain_sum", "--size", "4", "--n", "3", "--k", "1", "--max-new-tokens", "24", "--seed", "3"]


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = re.findall(r"\w+|[^\w\s]", text.casefold())
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def test_novelty_is_the_share_of_response_ngrams_the_corpus_file_never_holds(tiny_model, tmp_path):
    first = tmp_path / "first"
    assert main(["eval", str(tiny_model), *EVAL, "--out", str(first)]) == 0
    assert not [key for key in json.loads((first / "eval.json").read_text()) if "novelty" in key]  # none asked
    responses = [json.loads(line)["response"] for line in (first / "eval_samples.jsonl").read_text().splitlines()]

    corpus = tmp_path / "corpus.txt"  # every other response, one per line, and a blank line that counts for nothing
    kept = [r.replace("\n", " ") for r in responses[::2] if r.strip()]
    corpus.write_text("\n".join(kept) + "\n\n", encoding="utf-8")
    kept = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]  # as documented
    second = tmp_path / "second"
    assert main(["eval", str(tiny_model), *EVAL, "--novelty-corpus", str(corpus), "--out", str(second)]) == 0
    metrics = json.loads((second / "eval.json").read_text())
    again = [json.loads(line)["response"] for line in (second / "eval_samples.jsonl").read_text().splitlines()]
    assert again == responses  # same seed, same samples: the corpus holds some of them verbatim

    measured = []
    for n in (4, 5, 6, 7, 8):
        seen = {gram for text in kept for gram in ngrams(text, n)}
        grams = [gram for response in responses for gram in ngrams(response, n)]
        if grams:
            expected = sum(gram not in seen for gram in grams) / len(grams)
            assert metrics[f"eval/all/novelty@{n}"] == expected
            measured.append(expected)
    assert measured and 0 < min(measured) and max(measured) < 1  # some seen, some not: the count can fail both ways


def test_a_corpus_the_model_cannot_be_measured_against_is_refused_by_name(tiny_model, tmp_path, capsys):
    assert main(["eval", str(tiny_model), *EVAL, "--novelty-corpus", "training_data"]) == 2
    assert "--novelty-corpus training_data: the model is not a run's checkpoint" in capsys.readouterr().err
    assert main(["eval", str(tiny_model), *EVAL, "--novelty-corpus", str(tmp_path / "gone.txt")]) == 2
    corpora = "none, training_data, demo_sft, demo_padded_sft"
    assert f"neither a corpus ({corpora}) nor a text file" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert main(["eval", str(tiny_model), *EVAL, "--novelty-corpus", str(empty)]) == 2
    assert "the file holds no text" in capsys.readouterr().err
