"""The demo's base model (prorl_engine.demo): worked solutions, the prompt format, held-out hygiene,
the SFT schedule, a reduced build, and where a build may write."""

from __future__ import annotations

import json

import pytest
import torch

from prorl_engine import cli
from prorl_engine.demo import build, sft
from prorl_engine.demo import problems as demo
from prorl_engine.prompts import decode_response, encode_prompt


def test_arithmetic_steps_write_one_operation_per_step():
    assert demo.arithmetic_steps("98 + 93 - 77") == (["98 + 93 = 191", "191 - 77 = 114"], 114)
    assert demo.arithmetic_steps("-( 3 + -4 ) * 5") == (["3 + -4 = -1", "1 * 5 = 5"], 5)
    assert demo.arithmetic_steps("2 + 3 * 4") == (["3 * 4 = 12", "2 + 12 = 14"], 14)


def test_equation_steps_isolate_the_term_then_divide():
    assert demo.equation_steps("8*t - 9 = 23", "t") == (["8*t = 23 + 9 = 32", "t = 32 / 8 = 4"], 4)
    assert demo.equation_steps("5 - 3*x = -16", "x") == (["-3*x = -16 - 5 = -21", "x = -21 / -3 = 7"], 7)
    assert demo.equation_steps("e + 5 = 13", "e") == (["e = 13 - 5 = 8"], 8)


def test_every_generated_solution_agrees_with_reasoning_gym():
    """worked_solution raises if its result differs from the reasoning-gym answer."""
    problems = demo.generate_problems(300, seed=3)
    assert {p.task for p in problems} == set(demo.TASKS)
    for problem in problems:
        assert problem.response.endswith(f"<answer>{problem.entry['answer']}</answer>")


def test_the_direct_fraction_of_solutions_is_the_bare_answer_tag():
    problems = demo.generate_problems(300, seed=0, direct_fraction=0.5)
    direct = [p for p in problems if p.response == f"<answer>{p.entry['answer']}</answer>"]
    assert 0.43 < len(direct) / len(problems) < 0.57  # 900 draws: 0.5 +- 4 standard errors
    assert all("=" in p.response for p in problems if p not in direct)  # the others show their work
    assert not any(p.response.startswith("<answer>") for p in demo.generate_problems(100, seed=0, direct_fraction=0.0))


def test_wrong_guesses_are_off_by_one_to_ten_by_default_and_worked_solutions_stay_right():
    problems = demo.generate_problems(300, seed=0, direct_fraction=0.5, guess_error_rate=0.5)
    guesses = [p for p in problems if p.response.startswith("<answer>")]
    offsets = [int(p.response[len("<answer>") : -len("</answer>")]) - int(p.entry["answer"]) for p in guesses]
    assert 0.4 < sum(d != 0 for d in offsets) / len(offsets) < 0.6  # ~450 guesses: 0.5 +- 4 standard errors
    assert all(abs(d) <= 10 for d in offsets)
    worked = [p for p in problems if p not in guesses]
    assert all(p.response.endswith(f"<answer>{p.entry['answer']}</answer>") for p in worked)


def test_guess_offset_sets_how_far_a_wrong_guess_is_off():
    problems = demo.generate_problems(200, seed=0, direct_fraction=0.5, guess_error_rate=1.0, guess_offset=(11, 40))
    guesses = [p for p in problems if p.response.startswith("<answer>")]
    offsets = [int(p.response[len("<answer>") : -len("</answer>")]) - int(p.entry["answer"]) for p in guesses]
    assert offsets and all(11 <= abs(d) <= 40 for d in offsets)  # every guess wrong, by 11 to 40
    assert min(offsets) < -30 and max(offsets) > 30  # both signs, the whole range
    assert demo.guess_offsets(2, 3) == (-3, -2, 2, 3)
    with pytest.raises(ValueError, match="1 <= low <= high"):
        demo.guess_offsets(5, 4)


def test_generated_problems_are_reproducible_from_the_seed():
    first = demo.generate_problems(50, seed=1)
    assert first == demo.generate_problems(50, seed=1)
    assert first != demo.generate_problems(50, seed=2)


def test_the_held_out_split_never_appears_in_the_sft_data():
    examples = demo.held_out_examples()
    assert {e.task for e in examples} == set(demo.TASKS)  # the engine drops held-out repeats of training prompts
    held_out = {e.metadata["entry"]["question"] for e in examples}
    problems = demo.generate_problems(2000, seed=0, exclude=frozenset(held_out))
    assert not held_out & {p.entry["question"] for p in problems}


def test_sft_prompts_are_tokenised_exactly_as_the_engine_encodes_them():
    problems = demo.generate_problems(20, seed=0)
    tokenizer = sft.make_tokenizer(problems, vocab_size=300)
    for problem in problems:
        prompt_ids, response_ids = sft.encode_pair(tokenizer, problem)
        assert prompt_ids == encode_prompt(tokenizer, problem.prompt)
        assert response_ids[-1] == tokenizer.eos_token_id


def test_answer_tags_survive_the_engines_decoding():
    """The tags stay single tokens and come back from the engine's decoding (and from the
    skip_special_tokens=True decoding of other tools: they are ordinary tokens here)."""
    problems = demo.generate_problems(20, seed=0)
    tokenizer = sft.make_tokenizer(problems, vocab_size=300)
    _, response_ids = sft.encode_pair(tokenizer, problems[0])
    assert decode_response(tokenizer, response_ids) == problems[0].response
    assert tokenizer.decode(response_ids, skip_special_tokens=True) == problems[0].response
    assert len(tokenizer("<answer>", add_special_tokens=False)["input_ids"]) == 1


def test_the_loss_is_on_response_tokens_only():
    _, _, labels = sft.collate([([5, 6, 7], [8, 9]), ([5], [8, 9, 10])], pad_id=0)
    assert labels.tolist() == [[-100, -100, -100, 8, 9], [-100, 8, 9, 10, -100]]


@pytest.mark.slow
def test_a_reduced_build_is_a_loadable_save_pretrained_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shape = sft.ModelShape(hidden_size=32, num_layers=1, num_heads=2, vocab_size=300)
    kwargs = {
        "seed": 0,
        "sft_steps": 4,
        "batch_size": 8,
        "examples_per_task": 40,
        "shape": shape,
        "eval_samples": 1,
        "log": lambda _: None,
    }
    folder = build.build_base_model(tmp_path / "base", **kwargs)

    info = json.loads((folder / "build_info.json").read_text())
    assert info["seed"] == 0 and info["sft_steps"] == 4
    assert 0.0 <= info["held_out"]["all/pass@1"] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = torch.tensor([encode_prompt(tokenizer, "Calculate 2 + 3." + demo.INSTRUCTION)])
    output = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > prompt.shape[1]

    # Same seed, same bytes: the build is reproducible (and a finished build is reused as a cache).
    again = build.build_base_model(tmp_path / "again", **kwargs)
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    stamp = (folder / "build_info.json").stat().st_mtime_ns
    build.build_base_model(folder, **kwargs)
    assert (folder / "build_info.json").stat().st_mtime_ns == stamp


def test_a_cached_build_is_reused_only_for_the_same_recipe(tmp_path):
    recipe = {"seed": 0, "sft_steps": 1600, "direct_fraction": 0.4, "guess_error_rate": 1.0, "guess_offset": [11, 40]}
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "build_info.json").write_text(json.dumps(recipe))
    assert build.finished_build(tmp_path, recipe)
    assert not build.finished_build(tmp_path, {**recipe, "guess_offset": [1, 10]})
    assert not build.finished_build(tmp_path, {**recipe, "seed": 1})
    # A build from before the offset knob used offsets 1 to 10 and wrote no guess_offset.
    (tmp_path / "build_info.json").write_text(json.dumps({k: v for k, v in recipe.items() if k != "guess_offset"}))
    assert build.finished_build(tmp_path, {**recipe, "guess_offset": [1, 10]})
    assert not build.finished_build(tmp_path, recipe)


def test_the_committed_demo_model_leaves_rl_room_to_improve():
    """Its held-out pass@1 (at build time) is well above 0 and well below 1."""
    info = json.loads((build.DEMO_MODEL_DIR / "build_info.json").read_text())
    assert info["seed"] == 0
    assert 0.1 <= info["held_out"]["all/pass@1"] <= 0.6
    assert info["held_out"]["all/pass@8"] > info["held_out"]["all/pass@1"]
    assert 1e6 <= info["parameters"] <= 1e7


def test_the_learning_rate_warms_up_linearly_then_decays_on_a_cosine_to_a_tenth():
    # warmup 10 of 110 steps: step 0 is 1/10 of the peak, step 9 the peak; the cosine starts at the
    # peak at step 10, is halfway (0.1 + 0.9 * 0.5) at step 60 and reaches 0.1 at step 110.
    assert [sft.lr_factor(step, 110, 10) for step in (0, 4, 9, 10)] == [0.1, 0.5, 1.0, 1.0]
    assert sft.lr_factor(60, 110, 10) == pytest.approx(0.55)
    assert sft.lr_factor(110, 110, 10) == pytest.approx(0.1)


def test_a_build_inside_the_installed_package_is_refused_before_anything_is_written():
    target = build.PACKAGE_DIR / "configs" / "not-a-build"
    with pytest.raises(build.BuildRefused, match="inside the installed prorl_engine package"):
        build.build_base_model(target, sft_steps=1, log=lambda _: None)
    assert not target.exists()
    weights = build.DEMO_MODEL_DIR / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    with pytest.raises(build.BuildRefused):
        build.build_base_model(build.DEMO_MODEL_DIR, force=True, log=lambda _: None)  # the committed build
    assert weights.stat().st_mtime_ns == stamp


def test_the_base_model_command_needs_an_out_folder_outside_the_package(capsys):
    with pytest.raises(SystemExit) as missing:
        cli.main(["base-model", "--seed", "0"])
    assert missing.value.code == 2 and "--out" in capsys.readouterr().err
    target = build.PACKAGE_DIR / "configs" / "not-a-build"
    with pytest.raises(SystemExit) as refused:
        cli.main(["base-model", "--out", str(target), "--sft-steps", "1"])
    assert refused.value.code == 2 and "inside the installed prorl_engine package" in capsys.readouterr().err
    assert not target.exists()
