"""The ablations from given numbers: the verdicts on ProRL's claims, the runs read back from their
folders, and the report written where the caller says."""

from __future__ import annotations

import json
import re

import pytest

from prorl_engine.ablations.report import plotly_source, write_report
from prorl_engine.ablations.runs import RunResult, read_run
from prorl_engine.ablations.verdicts import judge_claims, pass_ks
from prorl_engine.config import RunConfig
from prorl_engine.demo.build import PACKAGE_DIR

DEMO = PACKAGE_DIR / "configs" / "demo.yaml"

BASE = {
    "eval/all/pass@1": 0.10,
    "eval/all/pass@1_se": 0.01,
    "eval/all/pass@2": 0.20,
    "eval/all/pass@4": 0.30,
    "eval/all/pass@8": 0.45,
}


def verdict_for(final: dict[str, float]) -> str:
    run = RunResult("full", {}, [{"step": 150, "tokens": 1000.0}], [], {"eval/all/pass@1_se": 0.01, **final}, 1.0)
    (claim,) = judge_claims({"full": run}, BASE, k=8)
    return claim.verdict


def test_pass_k_keys_are_read_in_ascending_order():
    assert pass_ks(BASE) == [1, 2, 4, 8]  # pass@1_se is not a k


def test_pass_at_1_up_and_every_k_up_is_reproduced():
    assert (
        verdict_for({"eval/all/pass@1": 0.2, "eval/all/pass@2": 0.3, "eval/all/pass@4": 0.4, "eval/all/pass@8": 0.5})
        == "reproduced"
    )


def test_a_crossover_names_the_first_k_that_falls():
    final = {"eval/all/pass@1": 0.2, "eval/all/pass@2": 0.28, "eval/all/pass@4": 0.33, "eval/all/pass@8": 0.40}
    assert verdict_for(final) == "partly: pass@k rises for k < 8 and falls from k = 8 on"


def test_pass_at_1_within_two_standard_errors_is_inconclusive():
    # 2 * hypot(0.01, 0.01) = 0.028: a gain of 0.02 is noise
    assert (
        verdict_for({"eval/all/pass@1": 0.12, "eval/all/pass@2": 0.3, "eval/all/pass@4": 0.4, "eval/all/pass@8": 0.5})
        == "inconclusive"
    )
    assert (
        verdict_for({"eval/all/pass@1": 0.05, "eval/all/pass@2": 0.1, "eval/all/pass@4": 0.2, "eval/all/pass@8": 0.3})
        == "not reproduced"
    )


def test_a_variant_inside_the_range_of_the_recipe_and_its_rerun_is_inconclusive():
    """full 0.30 vs no_dynamic_sampling 0.25 is ten sampling standard errors apart, but the full
    recipe's own rerun ended at 0.22: the variant lies within the recipe's range."""

    def run(name: str, pass1: float) -> RunResult:
        return RunResult(
            name,
            {},
            [{"step": 150, "tokens": 1000.0}],
            [],
            {"eval/all/pass@1": pass1, "eval/all/pass@1_se": 0.0025},
            1.0,
        )

    results = {"full": run("full", 0.30), "no_dynamic_sampling": run("no_dynamic_sampling", 0.25)}
    without_rerun = judge_claims(results, BASE, k=1)[0]
    with_rerun = judge_claims({**results, "rerun": run("rerun", 0.22)}, BASE, k=1)[0]
    assert without_rerun.verdict == "reproduced"
    assert with_rerun.verdict == "inconclusive" and "0.300/0.220 (full/rerun)" in with_rerun.evidence
    below_both = judge_claims({**results, "rerun": run("rerun", 0.28)}, BASE, k=1)[0]
    assert below_both.verdict == "reproduced"  # 0.25 < min(0.30, 0.28) - 2 * hypot(0.0025, 0.0025)


def test_the_pass_k_evidence_names_the_shift_from_guessing_to_working():
    final = {
        "eval/all/pass@1_se": 0.01,
        "eval/all/pass@1": 0.2,
        "eval/all/pass@2": 0.3,
        "eval/all/pass@4": 0.4,
        "eval/all/pass@8": 0.5,
        "eval/all/shows_work_frac": 0.99,
    }
    run = RunResult("full", {}, [{"step": 150, "tokens": 1000.0}], [], final, 1.0)
    (claim,) = judge_claims({"full": run}, {**BASE, "eval/all/shows_work_frac": 0.45}, k=8)
    assert "Responses that show their work went from 45% to 99%" in claim.evidence
    (without,) = judge_claims({"full": run}, BASE, k=8)  # not measured for the base model: nothing said
    assert "show their work" not in without.evidence


def finished_run(folder, rows: list[dict], pass1: float = 0.2) -> None:
    """A variant's folder as run_variant leaves it: metrics, events and the final evaluation."""
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "events.jsonl").write_text(json.dumps({"kind": "reset", "step": 2, "data": {}}) + "\n")
    final = {"eval/all/pass@1": pass1, "eval/all/pass@1_se": 0.01, "eval/all/pass@2": 0.3, "eval/all/mean_length": 20.0}
    (folder / "final_eval.json").write_text(json.dumps({"status": "finished", "minutes": 1.5, "metrics": final}))


def step_row(step: int, tokens: int) -> dict:
    return {
        "step": step,
        "sampling/generated_tokens": tokens,
        "reward/verifier_mean": 0.1 * step,
        "length/mean": 20.0,
        "policy/entropy": 1.0,
        "kl/ref": 1e-3,
        "sampling/filtered_frac": 0.5,
        "schedule/length_penalty_on": float(step == 2),
    }


def test_a_run_is_read_back_with_its_cumulative_generated_tokens(tmp_path):
    config = RunConfig.load(DEMO, check_paths=False)
    finished_run(tmp_path / "rerun", [step_row(1, 640), step_row(2, 1000), step_row(3, 512)])
    run = read_run("rerun", config, tmp_path / "rerun")
    assert [row["tokens"] for row in run.metrics] == [640, 1640, 2152]
    assert (run.tokens, run.steps, run.tokens_at(2), run.tokens_at(0)) == (2152, 3, 1640, 0.0)
    assert run.overrides == {"learning_rate": config.learning_rate * 1.001}
    assert [reset["step"] for reset in run.resets()] == [2]


def test_a_run_logged_without_the_generated_token_count_is_refused_by_name(tmp_path):
    rows = [step_row(1, 640), {k: v for k, v in step_row(2, 0).items() if k != "sampling/generated_tokens"}]
    finished_run(tmp_path / "full", rows)
    with pytest.raises(SystemExit, match="step 2 has no sampling/generated_tokens"):
        read_run("full", RunConfig.load(DEMO, check_paths=False), tmp_path / "full")


def test_the_report_goes_where_the_caller_says_and_links_the_plotly_file_it_was_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = RunConfig.load(DEMO, check_paths=False)
    for name, pass1 in (("full", 0.2), ("rerun", 0.25)):
        finished_run(tmp_path / "runs" / name, [step_row(1, 640), step_row(2, 1000)], pass1)
    results = [read_run(name, config, tmp_path / "runs" / name) for name in ("full", "rerun")]
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "plotly.min.js").write_text("/* plotly */")
    base_eval = {"eval/all/pass@1": 0.1, "eval/all/pass@1_se": 0.01, "eval/all/pass@2": 0.2}

    readme = write_report(
        results,
        config,
        DEMO,
        base_eval,
        tmp_path / "out" / "report",
        {"machine": "test"},
        runs_dir=tmp_path / "runs",
        plotly_js="js/plotly.min.js",
    )

    assert sorted(path.name for path in tmp_path.iterdir()) == ["js", "out", "runs"]  # nothing written elsewhere
    written = sorted(path.name for path in (tmp_path / "out" / "report").iterdir())
    assert written == [
        "README.md",
        "eval_all_passat1.png",
        "kl_ref.png",
        "length_mean.png",
        "policy_entropy.png",
        "report.html",
        "reward_verifier_mean.png",
        "sampling_filtered_frac.png",
        "summary.json",
    ]
    html = (tmp_path / "out" / "report" / "report.html").read_text()
    assert re.findall(r'<script[^>]* src="([^"]+)"', html) == ["../../js/plotly.min.js"]
    text = readme.read_text()
    assert (
        f"Regenerate: `prorl ablate --config {DEMO} --out out/report --steps 2 --plotly-js js/plotly.min.js` "
        "(the runs go to runs)."
    ) in text
    assert "It ends at pass@1 0.250 against the full recipe's 0.200" in text  # the rerun's noise paragraph


def test_plotly_comes_from_the_cdn_embedded_or_a_file_that_exists(tmp_path):
    assert plotly_source("cdn", tmp_path) == "cdn"
    assert plotly_source("embed", tmp_path) is True
    with pytest.raises(ValueError, match="plotly_js: no file at"):
        plotly_source(str(tmp_path / "missing.js"), tmp_path)
