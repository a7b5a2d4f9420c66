"""A verdict on each claim of PRORL_SPEC.md section 13, from the measured numbers.

The recipe's held-out pass@1 is a range: the full run's, or, when the `rerun` variant ran, from
the lower to the higher of the two (run-to-run noise). A variant differs from the recipe only
when it lies outside that range by more than two standard errors of the difference (sampling
noise on the fixed held-out set, see `runs.evaluate_now`). An entropy difference under 10% counts
as direction only. One function per claim; each needs its variant's run, and the pass@k claim
needs only the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from prorl_engine.ablations.runs import RunResult, is_number


@dataclass
class Verdict:
    claim: str
    verdict: str  # "reproduced", "not reproduced", "inconclusive", or a qualified form of them
    evidence: str


def margin(a: dict[str, float], b: dict[str, float]) -> float:
    """Two standard errors of the difference between two held-out pass@1 estimates."""
    return 2 * math.hypot(a["eval/all/pass@1_se"], b["eval/all/pass@1_se"])


def same_run(a: RunResult, b: RunResult) -> bool:
    """True when two variants produced the very same trajectory (same rewards and lengths every step)."""
    keys = ("reward/verifier_mean", "length/mean")
    return [[row.get(k) for k in keys] for row in a.metrics] == [[row.get(k) for k in keys] for row in b.metrics]


def pass_ks(metrics: dict[str, float]) -> list[int]:
    """The k of every `eval/all/pass@k` in `metrics`, ascending."""
    return sorted(
        int(key.rsplit("@", 1)[1]) for key in metrics if key.startswith("eval/all/pass@") and key[-1].isdigit()
    )


def fmt(metrics: dict[str, float], key: str, digits: int = 3) -> str:
    """`metrics[key]` with `digits` decimals, or "-" where it is missing or not a finite number."""
    value = metrics.get(key)
    return f"{value:.{digits}f}" if is_number(value) else "-"


@dataclass(frozen=True)
class Evidence:
    """What every verdict reads: the runs by variant name, the base model's held-out metrics, the largest k."""

    results: dict[str, RunResult]
    base_eval: dict[str, float]
    k: int

    @property
    def full(self) -> RunResult:
        return self.results["full"]

    @property
    def recipe(self) -> list[RunResult]:
        """The runs of the recipe itself: `full`, and `rerun` when it ran."""
        return [self.full] + ([self.results["rerun"]] if "rerun" in self.results else [])

    def pass1(self, name: str) -> float:
        return self.results[name].final_eval.get("eval/all/pass@1", math.nan)

    def recipe_pass1(self) -> str:
        """The recipe's held-out pass@1 as text: "0.222", or "0.222/0.260 (full/rerun)"."""
        text = "/".join(f"{self.pass1(r.name):.3f}" for r in self.recipe)
        return text + (" (full/rerun)" if len(self.recipe) > 1 else "")

    def compare(self, name: str) -> tuple[str, float]:
        """Where the recipe's pass@1 lies against variant `name`'s: "above", "below" or "within",
        and the sampling band used."""
        band = max(margin(r.final_eval, self.results[name].final_eval) for r in self.recipe)
        values = [self.pass1(r.name) for r in self.recipe]
        if min(values) - self.pass1(name) > band:
            return "above", band
        if self.pass1(name) - max(values) > band:
            return "below", band
        return "within", band


def verdict_from(position: str) -> str:
    """The verdict on a claim that the recipe beats a variant, from `Evidence.compare`'s position."""
    return {"above": "reproduced", "within": "inconclusive", "below": "not reproduced"}[position]


def clip_higher(ev: Evidence) -> Verdict:
    full, sym = ev.full, ev.results["symmetric_clip"]
    ent_full, ent_sym = full.last_third_mean("policy/entropy"), sym.last_third_mean("policy/entropy")
    pk = f"eval/all/pass@{ev.k}"
    return Verdict(
        "Clip-higher keeps the policy's entropy from collapsing",
        "reproduced"
        if ent_full > ent_sym * 1.1
        else "direction only (under 10%)"
        if ent_full > ent_sym
        else "not reproduced",
        f"entropy over the last third of training: {ent_full:.3f} with eps_high > eps_low vs {ent_sym:.3f} "
        f"symmetric; held-out pass@1 {ev.recipe_pass1()} vs {ev.pass1('symmetric_clip'):.3f}, pass@{ev.k} "
        f"{fmt(full.final_eval, pk)} vs {fmt(sym.final_eval, pk)}.",
    )


def dynamic_sampling(ev: Evidence) -> Verdict:
    position, band = ev.compare("no_dynamic_sampling")
    filtered = ev.full.last_third_mean("sampling/filtered_frac")
    return Verdict(
        "Dynamic sampling makes each generated token carry more learning signal",
        verdict_from(position),
        f"at the same generation budget ({ev.full.tokens:,.0f} tokens) held-out pass@1 is {ev.recipe_pass1()} with "
        f"dynamic sampling vs {ev.pass1('no_dynamic_sampling'):.3f} without (sampling band: {band:.3f}); the filter "
        f"dropped {filtered:.0%} of groups late in the run, groups whose advantages are all zero.",
    )


def length_penalty(ev: Evidence) -> Verdict:
    lengths = [r.final_eval.get("eval/all/mean_length", math.nan) for r in ev.recipe]
    len_off = ev.results["no_length_penalty"].final_eval.get("eval/all/mean_length", math.nan)
    shorter = max(lengths) < len_off * 0.95
    position, band = ev.compare("no_length_penalty")
    return Verdict(
        "The cycled cosine length penalty makes answers shorter without costing accuracy",
        "not reproduced"
        if not shorter
        else "partly: shorter, but less accurate"
        if position == "below"
        else "reproduced",
        f"held-out mean length {'/'.join(f'{x:.1f}' for x in lengths)} tokens with the penalty vs {len_off:.1f} "
        f"without ({(lengths[0] / len_off - 1) * 100:+.1f}% for the full run); pass@1 {ev.recipe_pass1()} vs "
        f"{ev.pass1('no_length_penalty'):.3f} (sampling band: {band:.3f}).",
    )


def resets(ev: Evidence) -> Verdict:
    full, fixed = ev.full, ev.results["no_resets"]
    position, band = ev.compare("no_resets")
    identical = same_run(full, fixed)
    kl_full, kl_fixed = full.last_third_mean("kl/ref"), fixed.last_third_mean("kl/ref")
    return Verdict(
        "Reference resets let improvement continue where a fixed reference would hold it back",
        "not testable here" if identical else verdict_from(position),
        (
            "the two runs had the same rewards and response lengths at every step: with beta = "
            f"{full.info['config'].beta} the KL term is too weak to change what the policy samples, so resetting the "
            "reference changes nothing here. "
            if identical
            else ""
        )
        + f"held-out pass@1 {ev.recipe_pass1()} with {len(full.resets())} reset(s) vs {ev.pass1('no_resets'):.3f} "
        f"with a fixed reference (sampling band: {band:.3f}); KL to the reference late in the run {kl_full:.2e} vs "
        f"{kl_fixed:.2e}.",
    )


def pass_at_k(ev: Evidence) -> Verdict:
    """pass@1 must rise past the sampling band; then the verdict says at which k, if any, pass@k falls."""
    base_eval, recipe = ev.base_eval, ev.recipe
    b1 = base_eval.get("eval/all/pass@1", math.nan)
    band = max(margin(base_eval, r.final_eval) for r in recipe)
    ks = [j for j in pass_ks(base_eval) if all(is_number(r.final_eval.get(f"eval/all/pass@{j}")) for r in recipe)]
    rises = {j: all(r.final_eval[f"eval/all/pass@{j}"] > base_eval[f"eval/all/pass@{j}"] for r in recipe) for j in ks}
    curve = ", ".join(
        f"pass@{j} {base_eval[f'eval/all/pass@{j}']:.3f} -> "
        + "/".join(f"{r.final_eval[f'eval/all/pass@{j}']:.3f}" for r in recipe)
        for j in ks
    )
    recipe_p1 = [ev.pass1(r.name) for r in recipe]
    if not min(recipe_p1) > b1 + band:
        verdict = "not reproduced" if max(recipe_p1) < b1 - band else "inconclusive"
    elif all(rises.values()):
        verdict = "reproduced"
    elif rises[max(ks)]:
        verdict = "inconclusive"
    else:
        first_fall = min(j for j in ks if not rises[j])
        verdict = f"partly: pass@k rises for k < {first_fall} and falls from k = {first_fall} on"
    return Verdict(
        f"Prolonged training raises pass@k as well as pass@1 (k up to {ev.k})",
        verdict,
        f"over {ev.full.steps} steps, {curve}{' (full/rerun)' if len(recipe) > 1 else ''} (sampling band of pass@1: "
        f"{band:.3f}). "
        + (
            "Where pass@k falls, RL concentrated the samples on what the model answers best instead of widening what "
            "it can answer at all. "
            if not all(rises.values())
            else ""
        )
        + style_shift(ev)
        + "A short run on a small model: this tests direction, not the paper's scale.",
    )


def style_shift(ev: Evidence) -> str:
    """What the share of responses that show their work did, where it was measured: with the demo
    model, pass@k at large k moves with it (samples spent on guesses are wasted tries)."""
    key = "eval/all/shows_work_frac"
    if not (is_number(ev.base_eval.get(key)) and all(is_number(r.final_eval.get(key)) for r in ev.recipe)):
        return ""
    after = "/".join(f"{r.final_eval[key]:.0%}" for r in ev.recipe)
    return (
        f"Responses that show their work went from {ev.base_eval[key]:.0%} to {after}: at this scale pass@k moves "
        "with how often the model works a problem out instead of guessing, which is not the same as solving "
        "problems it could not solve before (the paper's reading of pass@k at large k). "
    )


# The claims judged against one variant each, in the report's order: (variant, verdict).
VARIANT_CLAIMS: tuple[tuple[str, Callable[[Evidence], Verdict]], ...] = (
    ("symmetric_clip", clip_higher),
    ("no_dynamic_sampling", dynamic_sampling),
    ("no_length_penalty", length_penalty),
    ("no_resets", resets),
)


def judge_claims(results: dict[str, RunResult], base_eval: dict[str, float], k: int) -> list[Verdict]:
    """One verdict per claim whose variant ran, then the pass@k claim (see the module docstring)."""
    ev = Evidence(results, base_eval, k)
    return [judge(ev) for variant, judge in VARIANT_CLAIMS if variant in results] + [pass_at_k(ev)]


# --- several seeds -------------------------------------------------------------------------------
#
# With a run of every variant for each of several seeds, a claim is judged by its effect size, the
# mean over the seeds of (variant - full) on the claim's metric (each seed's variant against the
# same seed's full run: same held-out split), against the noise band, the range (highest - lowest)
# of that metric over the full recipe's own seeds. An effect outside the band is taken as real;
# inside it, the seeds cannot tell it from run-to-run noise. With 3 seeds the range of the full runs
# is about 1.7 standard deviations of one run, and the mean of 3 differences of two runs has a
# standard deviation of about 0.8 of one: outside the band is then about two standard deviations
# of the effect (a band from seeds whose held-out splits differ is wider, so the test is cautious).
# With 2 seeds the range is a rough estimate and may come out near 0 by chance, so a pass@1 band is
# never narrower than two sampling standard errors of the difference (`margin`), as with one seed.


@dataclass(frozen=True)
class SeededEffect:
    """One metric of the full recipe and of a variant, one value per seed (the same seeds in order)."""

    metric: str
    full: list[float]
    variant: list[float]
    floor: float = 0.0  # the smallest band: the sampling noise of one comparison, where it is known

    def __post_init__(self) -> None:
        if len(self.full) != len(self.variant) or len(self.full) < 2:
            raise ValueError(
                f"{self.metric}: an effect over seeds needs the full recipe and the variant on the same 2 or more "
                f"seeds, got {len(self.full)} and {len(self.variant)} values"
            )

    @property
    def effect(self) -> float:
        """Mean over the seeds of variant - full."""
        return sum(v - f for v, f in zip(self.variant, self.full)) / len(self.full)

    @property
    def band(self) -> float:
        """The full recipe's spread over its seeds (highest minus lowest), at least `floor`: a few
        seeds may agree by chance more closely than sampling lets two evaluations agree."""
        return max(max(self.full) - min(self.full), self.floor)

    @property
    def position(self) -> str:
        """ "higher" or "lower" when the variant lies above or below the full recipe by more than the
        band, else "within". An effect exactly at the band is within."""
        if self.effect > self.band:
            return "higher"
        if self.effect < -self.band:
            return "lower"
        return "within"

    def describe(self, digits: int = 3) -> str:
        """ "pass@1 0.200/0.240 (full) vs 0.150/0.170: effect -0.060, noise band 0.040"."""
        full = "/".join(f"{x:.{digits}f}" for x in self.full)
        variant = "/".join(f"{x:.{digits}f}" for x in self.variant)
        return (
            f"{self.metric} {full} (full) vs {variant}: effect {self.effect:+.{digits}f}, "
            f"noise band {self.band:.{digits}f}"
        )


@dataclass
class SeededVerdict(Verdict):
    """A verdict over seeds, with the effect it rests on (None for the pass@k and boundary claims)."""

    variant: str = ""
    effect: SeededEffect | None = None


WITHIN_NOISE = "inconclusive (within run-to-run noise)"


def _seeded(results: dict[int, dict[str, RunResult]], variant: str, metric: str, read) -> SeededEffect:
    seeds = sorted(results)
    return SeededEffect(metric, [read(results[s]["full"]) for s in seeds], [read(results[s][variant]) for s in seeds])


def _final(key: str):
    return lambda run: run.final_eval.get(key, math.nan)


def _seeded_pass1(results: dict[int, dict[str, RunResult]], variant: str) -> SeededEffect:
    """Held-out pass@1 of the full recipe and `variant`, its band at least the largest sampling
    band (`margin`: two standard errors of the difference) of any seed's pair."""
    effect = _seeded(results, variant, "pass@1", _final("eval/all/pass@1"))
    pairs = [(by_name["full"].final_eval, by_name[variant].final_eval) for by_name in results.values()]
    floors = [margin(a, b) for a, b in pairs if is_number(a.get("eval/all/pass@1_se"))]
    return SeededEffect(effect.metric, effect.full, effect.variant, max(floors, default=0.0))


def seeded_clip_higher(results: dict[int, dict[str, RunResult]]) -> SeededVerdict:
    ent = _seeded(results, "symmetric_clip", "entropy (last third)", lambda r: r.last_third_mean("policy/entropy"))
    verdict = {"lower": "reproduced", "higher": "not reproduced", "within": WITHIN_NOISE}[ent.position]
    return SeededVerdict(
        "Clip-higher keeps the policy's entropy from collapsing", verdict, ent.describe() + ".", "symmetric_clip", ent
    )


def seeded_dynamic_sampling(results: dict[int, dict[str, RunResult]]) -> SeededVerdict:
    p1 = _seeded_pass1(results, "no_dynamic_sampling")
    verdict = {"lower": "reproduced", "higher": "not reproduced", "within": WITHIN_NOISE}[p1.position]
    return SeededVerdict(
        "Dynamic sampling makes each generated token carry more learning signal",
        verdict,
        f"at the same generation budget per seed, {p1.describe()}.",
        "no_dynamic_sampling",
        p1,
    )


def seeded_length_penalty(results: dict[int, dict[str, RunResult]]) -> SeededVerdict:
    """Shorter: the variant without the penalty is longer by more than the band. Without costing
    accuracy: its pass@1 is not higher than the recipe's by more than pass@1's band."""
    length = _seeded(results, "no_length_penalty", "mean length (eval, tokens)", _final("eval/all/mean_length"))
    p1 = _seeded_pass1(results, "no_length_penalty")
    if length.position == "higher":
        verdict = "partly: shorter, but less accurate" if p1.position == "higher" else "reproduced"
    else:
        verdict = WITHIN_NOISE if length.position == "within" else "not reproduced"
    relative = length.effect / (sum(length.variant) / len(length.variant))
    return SeededVerdict(
        "The cycled cosine length penalty makes answers shorter without costing accuracy",
        verdict,
        f"{length.describe(1)} (with the penalty answers are {relative:.1%} shorter); {p1.describe()}.",
        "no_length_penalty",
        length,
    )


def seeded_resets(results: dict[int, dict[str, RunResult]]) -> SeededVerdict:
    p1 = _seeded_pass1(results, "no_resets")
    kl = _seeded(results, "no_resets", "KL to the reference (last third)", lambda r: r.last_third_mean("kl/ref"))
    verdict = {"lower": "reproduced", "higher": "not reproduced", "within": WITHIN_NOISE}[p1.position]
    kl_text = "/".join(f"{x:.2e}" for x in kl.full) + " with resets vs " + "/".join(f"{x:.2e}" for x in kl.variant)
    resets = "/".join(str(len(results[s]["full"].resets())) for s in sorted(results))
    return SeededVerdict(
        "Reference resets let improvement continue where a fixed reference would hold it back",
        verdict,
        f"{p1.describe()}; {resets} resets per full run; KL to the reference late in the run {kl_text} fixed.",
        "no_resets",
        p1,
    )


def seeded_pass_at_k(
    results: dict[int, dict[str, RunResult]], base_evals: dict[int, dict[str, float]]
) -> SeededVerdict:
    """Per k, the gain is the mean over seeds of full - base (the same seed's held-out split) and
    the band the range of the full runs' pass@k over the seeds: a rise is a gain above the band."""
    seeds = sorted(results)
    ks = [
        k
        for k in pass_ks(base_evals[seeds[0]])
        if all(is_number(results[s]["full"].final_eval.get(f"eval/all/pass@{k}")) for s in seeds)
    ]
    gains, bands = {}, {}
    for k in ks:
        key = f"eval/all/pass@{k}"
        full = [results[s]["full"].final_eval[key] for s in seeds]
        gains[k] = sum(f - base_evals[s][key] for f, s in zip(full, seeds)) / len(seeds)
        bands[k] = max(full) - min(full)
    rises = {k: gains[k] > bands[k] for k in ks}
    falls = {k: gains[k] < -bands[k] for k in ks}
    if not rises[1]:
        verdict = "not reproduced" if falls[1] else WITHIN_NOISE
    elif all(rises.values()):
        verdict = "reproduced"
    elif not any(falls.values()):
        flat = ", ".join(str(k) for k in ks if not rises[k])
        verdict = f"partly: pass@1 rises, pass@k at larger k within noise (k = {flat})"
    else:
        first = min(k for k in ks if falls[k])
        verdict = f"partly: pass@1 rises, pass@k falls from k = {first} on"
    curve = ", ".join(f"pass@{k} {gains[k]:+.3f} (band {bands[k]:.3f})" for k in ks)
    return SeededVerdict(
        f"Prolonged training raises pass@k as well as pass@1 (k up to {max(ks)})",
        verdict,
        f"gain over the base model, mean over seeds {', '.join(map(str, seeds))}: {curve}.",
    )


def seeded_boundary(
    results: dict[int, dict[str, RunResult]], base_counts: dict[int, dict[str, list[tuple[int, int]]]]
) -> tuple[SeededVerdict, dict[int, list]]:
    """The reasoning-boundary categories (prorl_engine/boundary.py) of the full run against the base
    model, per seed and task, and the verdict on the claim that RL solves tasks the base never
    solves: reproduced when the full run widens some task of that category in every seed."""
    from prorl_engine.boundary import BASE_NEVER_SOLVES, classify

    seeds = sorted(results)
    tables = {}
    for seed in seeds:
        full, base = results[seed]["full"].counts, base_counts.get(seed, {})
        tables[seed] = [classify(task, base[task], full[task]) for task in sorted(base) if task in full]
    never = {seed: [t for t in tables[seed] if t.category == BASE_NEVER_SOLVES] for seed in seeds}
    if not all(never.values()):
        verdict, evidence = (
            "not testable here",
            "no task that the base model never solves in every seed's held-out set.",
        )
    else:
        solved = {seed: [t for t in never[seed] if t.rl[-1] > t.margin] for seed in seeds}
        verdict = "reproduced" if all(solved.values()) else "not reproduced"
        evidence = (
            "; ".join(
                f"seed {seed}: " + ", ".join(f"{t.task} pass@{t.k_large} {t.rl[-1]:.3f} after RL" for t in never[seed])
                for seed in seeds
            )
            + " (the base: 0 on every prompt)."
        )
    return (
        SeededVerdict("RL solves tasks the base model never solves (the reasoning boundary widens)", verdict, evidence),
        tables,
    )


SEEDED_CLAIMS: tuple[tuple[str, Callable[[dict[int, dict[str, RunResult]]], SeededVerdict]], ...] = (
    ("symmetric_clip", seeded_clip_higher),
    ("no_dynamic_sampling", seeded_dynamic_sampling),
    ("no_length_penalty", seeded_length_penalty),
    ("no_resets", seeded_resets),
)


def judge_seeded(
    results: dict[int, dict[str, RunResult]], base_evals: dict[int, dict[str, float]]
) -> list[SeededVerdict]:
    """One verdict per claim whose variant ran in every seed, then the pass@k claim. `results`:
    seed -> variant name -> its run (2 or more seeds, each with `full`)."""
    if len(results) < 2:
        raise ValueError(f"judging over seeds needs 2 or more seeds, got {len(results)}")
    ran = set.intersection(*(set(by_name) for by_name in results.values()))
    return [judge(results) for variant, judge in SEEDED_CLAIMS if variant in ran] + [
        seeded_pass_at_k(results, base_evals)
    ]
