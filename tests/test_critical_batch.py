"""The gradient noise scale and the critical batch: the estimator unbiased on a gradient whose
noise is known, the law B_crit(L) recovered with honest intervals from simulated curves with
errors it does not assume, and a fit on C_min removing a known batch penalty. (On real runs:
test_training's tiny run and test_distributed's two ranks.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.critical_batch_coverage import (
    ALPHA_B,
    LOSSES_AT,
    noise_curves,
    score_adjustment,
    score_law,
)
from moescale.errors import UserError
from moescale.fitting.laws.critical_batch import fit_critical_batch
from moescale.fitting.pipeline import FitReport
from moescale.training.noise_scale import NoiseScale, noise_terms


def test_the_two_batch_estimates_are_unbiased_on_a_gradient_with_known_noise():
    """Per-example gradients G + ξ, ξ heavy-tailed (Student-t, 4 dof) with per-coordinate
    scales: the small batch is the big one's first part, as in training (they are not
    independent). Each estimate's mean is within 4 standard errors of the truth."""
    rng = np.random.default_rng(0)
    dim, small, big, trials = 40, 8, 32, 4000
    signal = rng.normal(0, 0.3, dim)
    scale = rng.uniform(0.5, 2.0, dim)
    true_trace = float(np.sum(scale**2))  # a t(4) draw / sqrt(2) has unit variance
    draws = signal + scale * rng.standard_t(4, (trials, big, dim)) / np.sqrt(2.0)
    small_sq = np.sum(draws[:, :small].mean(axis=1) ** 2, axis=1)
    big_sq = np.sum(draws.mean(axis=1) ** 2, axis=1)
    g_sq, trace = noise_terms(small_sq, big_sq, small, big)
    for estimate, truth in ((g_sq, float(signal @ signal)), (trace, true_trace)):
        error = abs(estimate.mean() - truth)
        assert error < 4 * estimate.std() / np.sqrt(trials), (estimate.mean(), truth)
    # the smoothed ratio is B_noise; a step whose two batches are one is no measurement
    noise = NoiseScale()
    for s, b in zip(small_sq, big_sq, strict=True):
        noise.update(s, b, small, big)
    noise.update(1.0, 1.0, big, big)
    assert noise.steps == trials
    assert noise.value == pytest.approx(true_trace / float(signal @ signal), rel=0.35)
    assert NoiseScale.from_state(noise.state()) == noise


@pytest.fixture(scope="module")
def law_scores() -> pd.DataFrame:
    return pd.DataFrame([score_law(seed, bootstrap=100) for seed in range(20)])


def test_the_critical_batch_law_is_recovered_with_honest_intervals(law_scores):
    """20 seeds of 12 runs each with run offsets, AR(1) t-tailed errors and a noisy loss
    (benchmarks/critical_batch_coverage.py; 100 seeds there)."""
    assert law_scores["alpha_b"].median() == pytest.approx(ALPHA_B, rel=0.1)
    assert law_scores["alpha_covered"].mean() >= 0.8
    for loss in LOSSES_AT:
        assert law_scores[f"b_crit_{loss}"].median() == pytest.approx(1.0, abs=0.15)
        assert law_scores[f"b_crit_{loss}_covered"].mean() >= 0.8


def test_a_fit_on_c_min_removes_the_bias_of_a_batch_above_the_critical_one():
    """A sweep trained at one batch, above B_crit at the small budgets and below it at the
    large: on the counted budget N_opt at 1e21 is off by ~30%; on C_min within 10%."""
    shifts = pd.DataFrame([score_adjustment(seed) for seed in range(8)])
    on_c, on_c_min = shifts["on_c"].median(), shifts["on_c_min"].median()
    assert abs(on_c) > 0.15  # the penalty really biases the counted-budget fit
    assert abs(on_c_min) < 0.1 and abs(on_c_min) < abs(on_c) / 3


def test_too_few_runs_with_a_noise_scale_is_one_line_and_fit_json_keeps_the_law(tmp_path):
    curves = noise_curves(0)
    with pytest.raises(UserError, match="at least 3 runs past step 60; the curves have 2"):
        fit_critical_batch(curves[curves["run_id"].isin(["r0", "r1"])])
    law = fit_critical_batch(curves, bootstrap=20)
    # a sweep's fit takes its completed runs' curves and, for WSD branches, their trunks'
    from moescale.fitting.options import FitOptions
    from moescale.fitting.pipeline import _fit_critical_batch

    runs = pd.DataFrame(
        {
            "run_id": [f"b{i}" for i in range(12)],
            "trunk_id": [f"r{i}" for i in range(6)] + [""] * 6,
            "status": ["completed"] * 11 + ["failed"],
        }
    )
    curves_of = curves.replace({"run_id": {f"r{i}": f"b{i}" for i in range(6, 12)}})
    fitted, why = _fit_critical_batch(runs, curves_of, FitOptions(bootstrap=10))
    assert why == "" and fitted.n_runs == 11  # six trunks, five branches; the failed run out
    report = FitReport(source="sim", target_flops=1e20, critical_batch=law)
    again = FitReport.from_dict(report.to_dict()).critical_batch
    assert again.alpha_b == law.alpha_b and again.interval(3.0) == law.interval(3.0)


def test_a_sweep_takes_each_runs_batch_from_the_critical_batch_at_its_expected_loss(tmp_path):
    """`recipe.batch_rule: critical`: B_crit at the parametric law's loss for the run, as a
    power-of-two number of sequences; larger budgets, lower losses, larger batches."""
    import json

    from test_tuning import BASE

    from moescale.sweeps.plan import plan_sweep
    from moescale.sweeps.spec import SweepSpec

    law = {"E": 1.5, "A": 40.0, "B": 400.0, "alpha": 0.3, "beta": 0.3}
    path = tmp_path / "fit.json"
    path.write_text(
        json.dumps({"parametric": law, "critical_batch": {"b_star": 3e5, "alpha_b": 0.3}})
    )
    recipe = BASE["recipe"] | {"batch_rule": "critical", "batch_law": str(path)}
    plan = plan_sweep(SweepSpec.model_validate(BASE | {"recipe": recipe, "tune": None}))
    batches = {}
    for run in plan.runs:
        r = run.spec.recipe
        assert r.batch_rule == "fixed" and r.batch_tokens == run.tokens // run.steps
        d = run.budget_flops / run.flops_per_token
        loss = 1.5 + 40.0 / run.n_active**0.3 + 400.0 / d**0.3
        sequences = 3e5 * loss ** (-1 / 0.3) / 64
        assert r.batch_tokens / 64 == 2 ** round(np.log2(sequences))
        batches.setdefault(run.budget_flops, []).append(r.batch_tokens)
    low, high = sorted(batches)
    assert max(batches[high]) > min(batches[low])
    path.write_text(json.dumps({"parametric": law}))
    with pytest.raises(UserError, match="has no critical batch"):
        plan_sweep(SweepSpec.model_validate(BASE | {"recipe": recipe, "tune": None}))


def test_the_report_figure_draws_every_runs_noise_scale_and_the_law_with_its_band():
    from moescale.analysis import plots
    from moescale.analysis.words import critical_batch_text
    from moescale.fitting.laws.critical_batch import noise_points

    curves = noise_curves(1)
    law = fit_critical_batch(curves, bootstrap=50)
    runs = pd.DataFrame(
        {"run_id": [f"r{i}" for i in range(12)], "n_active": np.geomspace(1e4, 1e6, 12)}
    ).assign(batch_tokens=2048)
    fig = plots.critical_batch(curves, runs, law)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    points = noise_points(curves)
    from matplotlib.collections import PathCollection

    drawn = np.concatenate(
        [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    )
    assert len(drawn) == len(points)  # every point of every run
    assert sorted(drawn[:, 1]) == pytest.approx(sorted(points["grad_noise_scale"]))
    law_line = next(line for line in ax.get_lines() if "B_{crit}" in line.get_label())
    assert np.allclose(law_line.get_ydata(), law(law_line.get_xdata()))
    assert law_line.get_xdata().min() == pytest.approx(points["loss"].min())
    assert any(line.get_ydata()[0] == 2048 for line in ax.get_lines())  # the runs' batch
    assert any("95%" in text.get_text() for text in ax.get_legend().get_texts())
    text = critical_batch_text(law)
    assert f"{law.alpha_b:.3g}" in text and "12 runs" in text
