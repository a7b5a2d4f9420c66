"""The ablation report's verdict on ProRL's pass@k claim, from given numbers."""

from __future__ import annotations

from prorl_engine.ablations import RunResult, judge_claims, pass_ks

BASE = {"eval/all/pass@1": 0.10, "eval/all/pass@1_se": 0.01, "eval/all/pass@2": 0.20, "eval/all/pass@4": 0.30,
        "eval/all/pass@8": 0.45}


def verdict_for(final: dict[str, float]) -> str:
    run = RunResult("full", {}, [{"step": 150, "tokens": 1000.0}], [], {"eval/all/pass@1_se": 0.01, **final}, 1.0)
    claim, = judge_claims({"full": run}, BASE, k=8)
    return claim.verdict


def test_pass_k_keys_are_read_in_ascending_order():
    assert pass_ks(BASE) == [1, 2, 4, 8]  # pass@1_se is not a k


def test_pass_at_1_up_and_every_k_up_is_reproduced():
    assert verdict_for({"eval/all/pass@1": 0.2, "eval/all/pass@2": 0.3, "eval/all/pass@4": 0.4, "eval/all/pass@8": 0.5}) == "reproduced"


def test_a_crossover_names_the_first_k_that_falls():
    final = {"eval/all/pass@1": 0.2, "eval/all/pass@2": 0.28, "eval/all/pass@4": 0.33, "eval/all/pass@8": 0.40}
    assert verdict_for(final) == "partly: pass@k rises for k < 8 and falls from k = 8 on"


def test_pass_at_1_within_two_standard_errors_is_inconclusive():
    # 2 * hypot(0.01, 0.01) = 0.028: a gain of 0.02 is noise
    assert verdict_for({"eval/all/pass@1": 0.12, "eval/all/pass@2": 0.3, "eval/all/pass@4": 0.4, "eval/all/pass@8": 0.5}) == "inconclusive"
    assert verdict_for({"eval/all/pass@1": 0.05, "eval/all/pass@2": 0.1, "eval/all/pass@4": 0.2, "eval/all/pass@8": 0.3}) == "not reproduced"


def test_a_variant_inside_the_range_of_the_recipe_and_its_rerun_is_inconclusive():
    """full 0.30 vs no_dynamic_sampling 0.25 is ten sampling standard errors apart, but the full
    recipe's own rerun ended at 0.22: the variant lies within the recipe's range."""
    def run(name: str, pass1: float) -> RunResult:
        return RunResult(name, {}, [{"step": 150, "tokens": 1000.0}], [],
                         {"eval/all/pass@1": pass1, "eval/all/pass@1_se": 0.0025}, 1.0)

    results = {"full": run("full", 0.30), "no_dynamic_sampling": run("no_dynamic_sampling", 0.25)}
    without_rerun = judge_claims(results, BASE, k=1)[0]
    with_rerun = judge_claims({**results, "rerun": run("rerun", 0.22)}, BASE, k=1)[0]
    assert without_rerun.verdict == "reproduced"
    assert with_rerun.verdict == "inconclusive" and "0.300/0.220 (full/rerun)" in with_rerun.evidence
    below_both = judge_claims({**results, "rerun": run("rerun", 0.28)}, BASE, k=1)[0]
    assert below_both.verdict == "reproduced"  # 0.25 < min(0.30, 0.28) - 2 * hypot(0.0025, 0.0025)


def test_the_pass_k_evidence_names_the_shift_from_guessing_to_working():
    final = {"eval/all/pass@1_se": 0.01, "eval/all/pass@1": 0.2, "eval/all/pass@2": 0.3, "eval/all/pass@4": 0.4,
             "eval/all/pass@8": 0.5, "eval/all/shows_work_frac": 0.99}
    run = RunResult("full", {}, [{"step": 150, "tokens": 1000.0}], [], final, 1.0)
    claim, = judge_claims({"full": run}, {**BASE, "eval/all/shows_work_frac": 0.45}, k=8)
    assert "Responses that show their work went from 45% to 99%" in claim.evidence
    without, = judge_claims({"full": run}, BASE, k=8)  # not measured for the base model: nothing said
    assert "show their work" not in without.evidence
