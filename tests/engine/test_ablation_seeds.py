"""Ablations over several seeds, from hand-made numbers: the effect size and noise band of each
claim, the verdicts drawn from them, the reasoning-boundary claim, the ablation's cost, the run
folders read back by seed, and the report `prorl ablate --seeds ... --report-only` writes."""

from __future__ import annotations

import json
import math

import pytest

from prorl_engine.ablations import cli
from prorl_engine.ablations.runs import RunResult, prompt_counts, read_seeds, seed_dir
from prorl_engine.ablations.seeded import ablation_cost
from prorl_engine.ablations.verdicts import (
    WITHIN_NOISE,
    SeededEffect,
    judge_seeded,
    seeded_boundary,
    seeded_length_penalty,
)
from prorl_engine.config import RunConfig
from prorl_engine.demo.build import PACKAGE_DIR
from prorl_engine.evaluation import EvalSample

CLAIMS = PACKAGE_DIR / "configs" / "demo-claims.yaml"


def run(name: str, seed: int, **final: float) -> RunResult:
    metrics = {"eval/all/pass@1_se": 0.01, **{f"eval/all/{key.replace('_at_', '@')}": v for key, v in final.items()}}
    rows = [{"step": step, "tokens": 100.0 * step, "policy/entropy": 1.0, "kl/ref": 0.01} for step in (1, 2, 3)]
    return RunResult(name, {}, rows, [], metrics, 1.0, seed=seed)


def test_the_effect_is_the_mean_paired_difference_and_the_band_the_full_runs_range():
    effect = SeededEffect("pass@1", full=[0.25, 0.5, 0.375], variant=[0.125, 0.25, 0.5])
    assert effect.effect == pytest.approx(((0.125 - 0.25) + (0.25 - 0.5) + (0.5 - 0.375)) / 3)  # -0.0833
    assert effect.band == 0.25  # 0.5 - 0.25
    assert effect.position == "within"  # |-0.083| < 0.25
    assert SeededEffect("m", [0.25, 0.5], [0.0, 0.25]).position == "within"  # effect -0.25 exactly at the band
    assert SeededEffect("m", [0.25, 0.5], [0.0, 0.125]).position == "lower"  # -0.3125 past it
    assert SeededEffect("m", [0.25, 0.5], [0.875, 0.5]).position == "higher"  # +0.3125 past the band
    assert SeededEffect("m", [0.25, 0.5], [0.625, 0.5]).position == "within"  # +0.1875 < 0.25
    assert SeededEffect("m", [0.25, 0.25], [0.5, 0.25], floor=0.125).band == 0.125  # the range 0, floored
    assert SeededEffect("m", [0.25, 0.25], [0.5, 0.25], floor=0.125).position == "within"  # +0.125 at the band


def test_an_effect_needs_the_same_two_or_more_seeds_on_both_sides():
    with pytest.raises(ValueError, match="same 2 or more seeds, got 2 and 1"):
        SeededEffect("pass@1", [0.2, 0.3], [0.2])
    with pytest.raises(ValueError, match="got 1 and 1"):
        SeededEffect("pass@1", [0.2], [0.2])
    with pytest.raises(ValueError, match="needs 2 or more seeds, got 1"):
        judge_seeded({0: {"full": run("full", 0, pass_at_1=0.2)}}, {0: {}})


def results(full: list[dict], variants: dict[str, list[dict]]) -> dict[int, dict[str, RunResult]]:
    """seed -> name -> run, from per-seed final metrics."""
    table = {}
    for seed, values in enumerate(full):
        table[seed] = {"full": run("full", seed, **values)}
        for name, per_seed in variants.items():
            table[seed][name] = run(name, seed, **per_seed[seed])
    return table


def test_the_length_penalty_verdict_reads_length_then_accuracy():
    full = [{"mean_length": 20.0, "pass_at_1": 0.30}, {"mean_length": 22.0, "pass_at_1": 0.34}]  # bands 2.0, 0.04
    longer_same = [{"mean_length": 30.0, "pass_at_1": 0.31}, {"mean_length": 28.0, "pass_at_1": 0.33}]
    verdict = seeded_length_penalty(results(full, {"no_length_penalty": longer_same}))
    assert verdict.verdict == "reproduced"  # without the penalty +8.0 tokens (band 2.0), pass@1 +0.000
    assert verdict.effect.effect == pytest.approx(8.0) and verdict.effect.band == pytest.approx(2.0)
    assert "mean length (eval, tokens) 20.0/22.0 (full) vs 30.0/28.0: effect +8.0, noise band 2.0" in verdict.evidence

    longer_better = [{"mean_length": 30.0, "pass_at_1": 0.40}, {"mean_length": 28.0, "pass_at_1": 0.42}]
    verdict = seeded_length_penalty(results(full, {"no_length_penalty": longer_better}))
    assert verdict.verdict == "partly: shorter, but less accurate"  # pass@1 +0.09 > band 0.04

    about_the_same = [{"mean_length": 21.5, "pass_at_1": 0.31}, {"mean_length": 22.0, "pass_at_1": 0.33}]
    assert seeded_length_penalty(results(full, {"no_length_penalty": about_the_same})).verdict == WITHIN_NOISE

    shorter = [{"mean_length": 15.0, "pass_at_1": 0.31}, {"mean_length": 16.0, "pass_at_1": 0.33}]
    assert seeded_length_penalty(results(full, {"no_length_penalty": shorter})).verdict == "not reproduced"


def test_resets_and_pass_at_k_are_judged_against_the_seeds_spread():
    full = [
        {"pass_at_1": 0.30, "pass_at_2": 0.40, "pass_at_4": 0.50},
        {"pass_at_1": 0.32, "pass_at_2": 0.44, "pass_at_4": 0.46},
    ]
    no_resets = [{"pass_at_1": 0.20}, {"pass_at_1": 0.30}]  # effect -0.06, band 0.02: lower
    base = {s: {"eval/all/pass@1": 0.10, "eval/all/pass@2": 0.30, "eval/all/pass@4": 0.47} for s in (0, 1)}
    verdicts = judge_seeded(results(full, {"no_resets": no_resets}), base)
    assert [v.claim.split(" ")[0] for v in verdicts] == ["Reference", "Prolonged"]  # only the variants that ran
    resets, pass_k = verdicts
    assert resets.verdict == "reproduced"
    # the seeds' range 0.02 is narrower than sampling allows: the band is 2 * hypot(0.01, 0.01) = 0.0283
    assert resets.effect.effect == pytest.approx(-0.06) and resets.effect.band == pytest.approx(2 * 0.01 * 2**0.5)
    # gains: pass@1 +0.21 (band 0.02), pass@2 +0.12 (band 0.04), pass@4 +0.01 (band 0.04): within at k = 4
    assert pass_k.verdict == "partly: pass@1 rises, pass@k at larger k within noise (k = 4)"
    assert "pass@1 +0.210 (band 0.020), pass@2 +0.120 (band 0.040), pass@4 +0.010 (band 0.040)" in pass_k.evidence

    falling = [dict(values, pass_at_4=0.30) for values in full]  # gain at k = 4: -0.17 past the band 0
    (_, pass_k) = judge_seeded(results(falling, {"no_resets": no_resets}), base)
    assert pass_k.verdict == "partly: pass@1 rises, pass@k falls from k = 4 on"


def with_counts(result: RunResult, counts: dict) -> RunResult:
    result.counts = counts
    return result


def test_the_boundary_claim_needs_a_task_the_base_never_solves_widened_in_every_seed():
    base = {s: {"products": [(4, 0)] * 3, "chain_sum": [(4, 1), (4, 2), (4, 0)]} for s in (0, 1)}
    solved = {"products": [(4, 4)] * 3, "chain_sum": [(4, 1), (4, 2), (4, 0)]}  # pass@4 1.0, margin 0.02
    table = {s: {"full": with_counts(run("full", s), solved)} for s in (0, 1)}
    verdict, tables = seeded_boundary(table, base)
    assert verdict.verdict == "reproduced"
    assert [(t.task, t.category) for t in tables[0]] == [("chain_sum", "no gain"), ("products", "base never solves")]

    # one prompt of three solved once in four tries: pass@4 0.25 per prompt 1, 0, 0 -> mean 0.333, but the
    # margin is 2 standard errors of the per-prompt differences [1, 0, 0]: 2 * sqrt(1/3 / 3) = 0.667
    barely = {"products": [(4, 1), (4, 0), (4, 0)], "chain_sum": solved["chain_sum"]}
    table = {s: {"full": with_counts(run("full", s), solved if s == 0 else barely)} for s in (0, 1)}
    verdict, tables = seeded_boundary(table, base)
    assert verdict.verdict == "not reproduced"
    assert tables[1][1].margin == pytest.approx(2 * math.sqrt((1 / 3) / 3))
    assert "seed 1: products pass@4 0.333 after RL" in verdict.evidence

    none_unsolved = {s: {"chain_sum": base[s]["chain_sum"]} for s in (0, 1)}
    assert seeded_boundary(table, none_unsolved)[0].verdict == "not testable here"


def sample(uid: str, task: str, correct: bool) -> EvalSample:
    return EvalSample(uid, task, "math", 0, "", float(correct), correct, 3, False)


def test_prompt_counts_are_per_task_in_the_order_of_the_prompt_ids():
    samples = [
        sample("b", "products", False),
        sample("a", "chain_sum", True),
        sample("c", "chain_sum", False),
        sample("a", "chain_sum", True),
        sample("b", "products", False),
        sample("c", "chain_sum", True),
    ]
    assert prompt_counts(samples) == {"chain_sum": [(2, 2), (2, 1)], "products": [(2, 0)]}


def test_the_cost_sums_the_runs_and_the_wall_time_spans_first_start_to_last_end():
    a, b = run("full", 0), run("full", 1)
    a.started, a.finished, a.minutes = "2026-12-02T13:00:00+00:00", "2026-12-02T13:10:00+00:00", 10.0
    b.started, b.finished, b.minutes = "2026-12-02T13:02:00+00:00", "2026-12-02T13:14:30+00:00", 12.5
    cost = ablation_cost({0: [a], 1: [b]})
    assert cost == {"runs": 2.0, "steps": 6.0, "generated_tokens": 600.0, "run_minutes": 22.5, "wall_minutes": 14.5}
    b.started = ""  # a run from before the times were kept: no wall time
    assert math.isnan(ablation_cost({0: [a], 1: [b]})["wall_minutes"])


def write_finished(folder, config: RunConfig, pass1: float, length: float, counts: dict) -> None:
    """A variant's folder as run_variant leaves it."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config.to_yaml())
    rows = [
        {
            "step": step,
            "sampling/generated_tokens": 500,
            "reward/verifier_mean": 0.1 * step,
            "length/mean": length,
            "policy/entropy": 0.5,
            "kl/ref": 0.02,
            "sampling/filtered_frac": 0.4,
        }
        for step in (1, 2)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "events.jsonl").write_text(json.dumps({"kind": "reset", "step": 2, "data": {}}) + "\n")
    final = {
        "status": "finished",
        "minutes": 2.0,
        "started": "2026-12-02T13:00:00+00:00",
        "finished": "2026-12-02T13:02:00+00:00",
        "metrics": {
            "eval/all/pass@1": pass1,
            "eval/all/pass@1_se": 0.01,
            "eval/all/pass@16": pass1 + 0.2,
            "eval/all/mean_length": length,
        },
        "counts": counts,
    }
    (folder / "final_eval.json").write_text(json.dumps(final))


def test_report_only_reads_each_seeds_runs_and_writes_the_seeded_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prorl_engine").symlink_to(PACKAGE_DIR)  # the config names its model relative to a checkout
    config = RunConfig.load(CLAIMS, check_paths=False)
    runs = tmp_path / "runs"
    solved, unsolved = {"products": [[16, 3]] * 2}, {"products": [[16, 0]] * 2}
    finals = {0: {"full": (0.30, 20.0), "no_length_penalty": (0.31, 30.0)}, 1: {"full": (0.34, 21.0)}}
    finals[1]["no_length_penalty"] = (0.33, 29.0)
    for seed, by_name in finals.items():
        seeded = config.replace(seed=seed)
        capped = seeded.replace(steps=seeded.steps * 3)
        write_finished(seed_dir(runs, seed) / "full", seeded, *by_name["full"], solved)
        write_finished(
            seed_dir(runs, seed) / "no_length_penalty",
            capped.replace(length_penalty=False),
            *by_name["no_length_penalty"],
            solved,
        )
        base_eval = {"eval/all/pass@1": 0.1, "eval/all/pass@1_se": 0.01, "eval/all/pass@16": 0.3}
        (seed_dir(runs, seed) / "base_eval.json").write_text(json.dumps(base_eval))
        (seed_dir(runs, seed) / "base_counts.json").write_text(json.dumps(unsolved))

    by_seed = read_seeds(config, ["full", "no_length_penalty"], runs, [0, 1])
    assert [[(r.name, r.seed, r.info["config"].seed) for r in by_seed[s]] for s in (0, 1)] == [
        [("full", 0, 0), ("no_length_penalty", 0, 0)],
        [("full", 1, 1), ("no_length_penalty", 1, 1)],
    ]
    with pytest.raises(SystemExit, match="no finished run of no_resets"):
        read_seeds(config, ["full", "no_resets"], runs, [0])

    argv = ["--config", str(CLAIMS), "--out", "report", "--runs", "runs", "--seeds", "0,1"]
    assert cli.main([*argv, "--variants", "full,no_length_penalty", "--report-only", "--threads", "1"]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert (
        f"Regenerate: `prorl ablate --config {CLAIMS} --seeds 0,1 --variants full,no_length_penalty --runs runs "
        "--out report`. To view and compare the runs in the studio: `python manage.py import_run runs/seed-*/*/ "
        "--owner USERNAME`." in readme
    )
    assert "claims are not judged here: symmetric_clip, no_dynamic_sampling, no_resets." in readme
    # lengths 20/21 with the penalty vs 30/29: effect +9.0, band 1.0; pass@1 effect 0.000, band 0.04
    assert (
        "| The cycled cosine length penalty makes answers shorter without costing accuracy | no_length_penalty | "
        "mean length (eval, tokens) | +9.000 | 1.000 | reproduced |"
    ) in readme
    assert "4 runs, 8 steps, 4,000 generated response tokens, 8.0 minutes of runs, 2.0 minutes of wall-clock" in readme
    assert "| 1 | products | 0.000 | 0.188 | 0.000 | 1.000 | 16 | 0.020 | base never solves |" in readme
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["cost"]["generated_tokens"] == 4000.0
    assert [c["verdict"] for c in summary["claims"]][-1] == "reproduced"  # products 0 -> pass@16 1.0 in both seeds
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == [
        "eval_all_passat1.png",
        "kl_ref.png",
        "length_mean.png",
        "policy_entropy.png",
        "reward_verifier_mean.png",
        "sampling_filtered_frac.png",
    ]


def test_seeds_are_distinct_whole_numbers():
    assert cli.seed_list("0,1,2") == [0, 1, 2]
    for bad in ("0,0", "a,1", "", "-1"):
        with pytest.raises(Exception, match="seeds"):
            cli.seed_list(bad)
