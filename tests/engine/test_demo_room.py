"""The demo's data leaves each claim room to show: worked solutions padded with redundant steps
(length a penalty can remove at no cost in accuracy) and an out-of-distribution family the
committed base never solves at k = 16 (room for RL to widen the reasoning boundary)."""

from __future__ import annotations

import json
import re

import pytest

from prorl_engine.config import RunConfig
from prorl_engine.demo import problems as demo
from prorl_engine.demo.build import DEMO_BUILD, DEMO_MODEL_DIR, KNOBS, finished_build, sft_problems
from prorl_engine.evaluation import evaluate_model_folders, held_out_examples

STEP = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$")


def steps_of(response: str) -> list[str]:
    work = response.split("<answer>", 1)[0].removeprefix(demo.PREAMBLE).strip()
    return work.split(", ") if work else []


def is_subsequence(short: list[str], long: list[str]) -> bool:
    items = iter(long)
    return all(any(step == item for item in items) for step in short)


@pytest.fixture(scope="module")
def padded() -> list[demo.Problem]:
    return demo.generate_problems(300, seed=0, direct_fraction=0.4, padded_fraction=0.5, padding=(1, 3))


def test_without_padding_the_data_is_drawn_as_before_whatever_the_padding_range():
    assert demo.generate_problems(200, seed=0, direct_fraction=0.4) == demo.generate_problems(
        200, seed=0, direct_fraction=0.4, padded_fraction=0.0, padding=(5, 9)
    )


def test_a_padded_solution_is_the_worked_one_with_one_to_three_true_identities_inserted(padded):
    extras = []
    for problem in padded:
        if not demo.shows_work(problem.response):
            continue
        plain = steps_of(demo.worked_solution(problem.task, problem.entry))
        steps = steps_of(problem.response)
        assert is_subsequence(plain, steps) and problem.response.endswith(f"<answer>{problem.entry['answer']}</answer>")
        added = list(steps)
        for step in plain:  # remove the worked steps in order: what is left was inserted
            added.remove(step)
        for step in added:
            left, op, right, result = STEP.match(step).groups()
            assert left == result and (op, right) in {("+", "0"), ("-", "0"), ("*", "1")}
        extras.append(len(added))
    assert set(extras) == {0, 1, 2, 3}
    share = sum(count > 0 for count in extras) / len(extras)
    assert 0.4 < share < 0.6  # padded_fraction 0.5 of the worked solutions


def test_padding_lengthens_the_worked_solutions_it_touches(padded):
    worked = [p for p in padded if demo.shows_work(p.response)]
    lengths = [len(p.response) - len(demo.worked_solution(p.task, p.entry)) for p in worked]
    preamble = len(demo.PREAMBLE)
    # a response is longer than its plain solution by the preamble (or not) plus its padding
    padded_ones = [extra for extra in lengths if extra not in (0, preamble)]
    assert padded_ones and min(padded_ones) >= len("1 + 0 = 1, ")


def test_a_padded_build_is_a_different_recipe(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    recipe = {"seed": 0, **DEMO_BUILD, "guess_offset": list(DEMO_BUILD["guess_offset"]), "padding": [1, 3]}
    old = {key: value for key, value in recipe.items() if key not in ("padded_fraction", "padding")}
    (tmp_path / "build_info.json").write_text(json.dumps(old))  # a build from before padding existed
    assert finished_build(tmp_path, recipe)
    assert not finished_build(tmp_path, {**recipe, "padded_fraction": 0.3})
    (tmp_path / "build_info.json").write_text(json.dumps({**recipe, "padded_fraction": 0.3, "padding": [2, 4]}))
    assert finished_build(tmp_path, {**recipe, "padded_fraction": 0.3, "padding": [2, 4]})
    assert not finished_build(tmp_path, {**recipe, "padded_fraction": 0.3})


@pytest.fixture(scope="module")
def committed_sft_data() -> list[demo.Problem]:
    """The committed build's SFT data, regenerated from its recipe."""
    return sft_problems(9000, 0, **{key: DEMO_BUILD[key] for key in KNOBS})


@pytest.fixture(scope="module")
def ood() -> list:
    return demo.ood_held_out_examples()


def test_the_ood_family_is_32_held_out_two_digit_products(ood):
    assert len(ood) == 32 and {e.task for e in ood} == {"products"}
    for example in ood:
        left, right = example.metadata["entry"]["metadata"]["expression"].split(" * ")
        assert len(left) == len(right) == 2 and int(example.answer) == int(left) * int(right)


def test_the_committed_sft_data_never_asks_a_product_nor_multiplies_two_two_digit_numbers(committed_sft_data, ood):
    assert len(committed_sft_data) == 27_000 and {p.task for p in committed_sft_data} == set(demo.TASKS)
    assert not {p.prompt for p in committed_sft_data} & {e.prompt for e in ood}
    assert not any("multiplication" in p.prompt for p in committed_sft_data)
    products = [
        (int(m[1]), int(m[3]))
        for p in committed_sft_data
        for m in map(STEP.match, steps_of(p.response))
        if m and m[2] == "*"
    ]
    assert products and not any(abs(a) >= 10 and abs(b) >= 10 for a, b in products)


def test_adding_the_ood_family_to_the_demo_mix_keeps_the_demos_own_held_out_split(ood):
    config = RunConfig.from_dict(
        {"model_path": "base:var/models/demo-base", "data": [*demo.demo_sources(), *demo.ood_sources()]},
        check_paths=False,
    )
    assert [s.task for s in config.data][-1] == "products" and config.data[-1].weight == 1e-6
    mixed = held_out_examples(config.data, demo.RL_SEED)
    assert [e for e in mixed if e.task in demo.TASKS] == demo.held_out_examples()
    assert [e for e in mixed if e.task == "products"] == ood


@pytest.mark.slow
def test_the_committed_base_never_solves_the_ood_family_at_k_16(ood):
    report = evaluate_model_folders(
        {"base": DEMO_MODEL_DIR}, ood, n=16, ks=[1, 16], max_new_tokens=64, device="cpu", batch_size=128
    )["base"]
    assert report.metrics["eval/products/pass@16"] == 0.0
    assert len(report.samples) == 512 and not any(s.correct for s in report.samples)


def test_the_claims_demo_novelty_corpus_is_its_padded_base_models_sft_data():
    """`novelty_corpus: demo_padded_sft` is the committed padded build's SFT data, made again from its
    build_info.json: as many texts as it trained on, about half the worked solutions padded with
    identity steps (none in the unpadded demo's corpus), no held-out question of RL seeds 0-2."""
    from prorl_engine.demo.build import PADDED_MODEL_DIR, padded_sft_corpus, sft_corpus
    from prorl_engine.novelty import CORPUS_BUILDERS

    assert "demo_padded_sft" in CORPUS_BUILDERS
    assert RunConfig(model_path=str(PADDED_MODEL_DIR), novelty_corpus="demo_padded_sft").novelty_corpus
    info = json.loads((PADDED_MODEL_DIR / "build_info.json").read_text())
    texts = padded_sft_corpus()
    assert len(texts) == info["examples"] == 27000

    def identity_padded(text: str) -> bool:  # a step like "14 + 0 = 14" or "19 * 1 = 19"
        steps = [STEP.match(s) for s in steps_of(text.split("\n", 2)[-1])]
        return any(m and m[1] == m[4] and m[3] in ("0", "1") and m[2] in "+-*" for m in steps)

    worked = [t for t in texts if demo.shows_work(t.split("\n", 2)[-1])]
    share = sum(map(identity_padded, worked)) / len(worked)
    assert 0.4 < share < 0.6, share
    plain = sft_corpus()
    assert sum(map(identity_padded, plain)) / len(plain) < 0.05
    held_out = {e.metadata["entry"]["question"] for seed in (0, 1, 2) for e in demo.held_out_examples(seed)}
    assert not any(text.split("\n", 1)[0] in held_out for text in texts)
