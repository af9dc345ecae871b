"""The headline prediction, tested like science: on simulated sweeps whose truth is known
(benchmarks.synthetic: grids not centred on the optimum, Student-t noise plus a positive
mistuning penalty, the Hunyuan-Large compute law so that b·D is up to a third of C), over many
seeds — bias, coverage and width of the interval far past the sweep; and the defaults and
intervals of the per-budget fit on curves that are not parabolas."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import (
    DESIGNS,
    SIMULATED_COMPUTE_LAW,
    SIMULATED_LAW,
    realistic_sweep,
    simulated_design_sweep,
    synthetic_sweep,
)
from moescale.fitting import ComputeLaw, ParametricFit, fit_all, fit_isoflop, load_fit
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import write_fit_json
from moescale.fitting.prediction import (
    IDENTIFIED_WIDTH,
    NOT_IDENTIFIED_WIDTH,
    Prediction,
    agreement,
    allocation_width,
    choose_method,
    identification_weight,
    parametric_share,
)

# one worker of `make test` takes this whole module: the design study's fixture is made once
pytestmark = pytest.mark.xdist_group("headline")

SEEDS = range(8)  # 20 in `python -m benchmarks.headline_coverage`
FACTORS = (100.0, 10_000.0)


def _quiet_fit(table: pd.DataFrame, method: str = "all", **args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_all(
            table,
            None,
            "simulated",
            FitOptions(method=method, bootstrap=200, **args),
            strict=False,
        )


def test_headline_is_right_and_its_interval_honest_far_past_the_sweep():
    """8 seeds; at 100× and 10,000× the largest budget: coverage of the true N_opt by the
    headline's 95% interval >= 80%, median |error| <= 10% and 15%, median hi/lo <= 4, and
    every prediction spends its budget under the fitted compute law within 1%.
    Measured over 20 seeds (benchmarks/headline_coverage.py): coverage 20/20 and 20/20,
    median |error| 2.5% and 4.3%, median hi/lo 1.35 and 1.64 (the old power-law headline:
    0/20, 19% and 41%)."""
    scores = {factor: [] for factor in FACTORS}
    chosen = []
    for seed in SEEDS:
        table = simulated_design_sweep(seed)
        largest = table["budget_flops"].max()
        # no hold-out check: it words the reach alone, nothing asserted here
        fit = _quiet_fit(table, target_flops=FACTORS[0] * largest, holdout_check=False)
        chosen.append(fit.prediction.method)
        for factor in FACTORS:
            flops = factor * largest
            p = fit.prediction if factor == FACTORS[0] else fit.predict_at(flops)["parametric"]
            truth = SIMULATED_LAW.optimal(flops, SIMULATED_COMPUTE_LAW)["n_opt"]
            low, high = p.n_opt_interval
            scores[factor].append((p.n_opt / truth - 1, low <= truth <= high, high / low))
            spent = fit.compute_law.flops_per_token(p.n_opt) * p.d_opt
            assert spent == pytest.approx(flops, rel=0.01)
            d_low, d_high = p.d_opt_interval
            assert d_low <= p.d_opt <= d_high
    # identified on 63 runs and of the right form: Approach 3 leads, or where a heavy-tailed
    # budget optimum pushes a lack-of-fit p below 0.05 (2 seeds of 8), shares the headline
    assert chosen.count("parametric") >= len(SEEDS) - 2, chosen
    assert set(chosen) <= {"parametric", "combined"}, chosen
    for factor, limit in zip(FACTORS, (0.10, 0.15), strict=True):
        errors, covered, widths = (np.array(v, float) for v in zip(*scores[factor], strict=True))
        assert covered.mean() >= 0.8, (factor, covered.mean())
        assert np.median(np.abs(errors)) <= limit, (factor, np.median(np.abs(errors)))
        assert np.median(widths) <= 4.0, (factor, np.median(widths))


def test_the_old_headline_was_biased_on_the_same_design():
    """The estimator the headline replaced — the Hunyuan-Large report's: a parabola per
    budget, N_opt as a power law of C — misses low where b·D is a sizeable share of C
    (measured over 20 seeds: −19% at 100×), while the headline does not."""
    errors = []
    for seed in range(3):
        table = simulated_design_sweep(seed)
        target = 100 * table["budget_flops"].max()
        truth = SIMULATED_LAW.optimal(target, SIMULATED_COMPUTE_LAW)["n_opt"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = fit_isoflop(table, method="parabola")
        errors.append(old.n_law(target) / truth - 1)
    assert np.median(errors) < -0.1
    assert max(errors) < 0


# --- the per-budget fit -----------------------------------------------------------------

# A law with very different exponents: its isoFLOP curves are steep on the small-N side and
# gentle on the large-N side, asymmetric in log N as real curves are.
ASYMMETRIC_LAW = ParametricFit(
    E=1.8, A=3000.0, B=400.0, alpha=0.7, beta=0.25, objective=0.0, n_points=0, huber_delta=0.0
)
DENSE = ComputeLaw(6.0, 0.0, 1.0)
ASYMMETRIC_BUDGETS = list(np.geomspace(1e18, 1e20, 6))


def _asymmetric_sweep(seed: int) -> pd.DataFrame:
    """Nine sizes a factor 2.5 apart (a span of 1,500×) around a guess that starts at half the
    truth and drifts off it with C, 0.1% loss noise."""
    first = ASYMMETRIC_LAW.optimal(ASYMMETRIC_BUDGETS[0], DENSE)["n_opt"]
    exponent = 0.26 + 0.15
    return realistic_sweep(
        ASYMMETRIC_LAW,
        DENSE,
        ASYMMETRIC_BUDGETS,
        guess_coef=0.5 * first / ASYMMETRIC_BUDGETS[0] ** exponent,
        guess_exponent=exponent,
        sizes_per_budget=9,
        step=2.5,
        noise=0.001,
        mistuning=0.0,
        seed=seed,
    )


def test_default_per_budget_fit_recovers_asymmetric_curves_where_a_parabola_does_not():
    """Measured: the default (the slice, chosen by held-out error) misses the per-budget
    optima by about 0.4% (median over budgets and seeds), Akima by about 7%, the all-size
    parabola by about 58%."""
    truth = np.array([ASYMMETRIC_LAW.optimal(c, DENSE)["n_opt"] for c in ASYMMETRIC_BUDGETS])
    errors = {"default": [], "akima": [], "parabola": []}
    for seed in range(5):
        table = _asymmetric_sweep(seed)
        default = fit_isoflop(table)
        assert (default.method, default.shape) == ("auto", "slices")
        assert default.shape_scores["slices"] < default.shape_scores["parabola"] / 10
        for name in errors:
            fit = default if name == "default" else fit_isoflop(table, method=name)
            errors[name].extend(np.abs(np.log(fit.budgets["n_opt"].to_numpy() / truth)))
    assert np.median(errors["default"]) < np.log(1.03)
    assert np.median(errors["default"]) < np.median(errors["akima"])  # no worse than Akima
    assert np.median(errors["parabola"]) > np.log(1.3)


def test_default_per_budget_fit_averages_noise_as_the_parabola_does():
    """Symmetric curves (the parabola's best case) with 0.4% noise, 9 sizes over 2 decades,
    7 budgets 1e15–1e18, the grid off-centre: the spread of the N_opt exponent over 10 seeds
    is within 1.5× of the all-size parabola's, and Akima's (which interpolates the noise) is
    not. Measured over 20 seeds: s.d. 0.0047 (default), 0.0045 (parabola), 0.033 (Akima)."""
    design = replace(
        DESIGNS["symmetric-6"], budgets=tuple(np.geomspace(1e15, 1e18, 7)), noise=0.004
    )
    exponents = {"auto": [], "parabola": [], "akima": []}
    for seed in range(10):
        table = design.sweep(seed)
        for method, found in exponents.items():
            found.append(fit_isoflop(table, method=method).n_exponent)
    spread = {method: np.std(found, ddof=1) for method, found in exponents.items()}
    assert spread["auto"] <= 1.5 * spread["parabola"], spread
    assert spread["akima"] > 1.5 * spread["parabola"], spread


def test_akima_fits_get_akima_bootstrap_intervals():
    """The bootstrap re-runs the method the fit used: on curves where Akima and the parabola
    disagree, each method's bootstrap centres on its own estimate, not on the other's."""
    table = _asymmetric_sweep(0)
    target = 1e22
    fits = {m: fit_isoflop(table, method=m, bootstrap=200) for m in ("akima", "parabola")}
    centres = {
        m: float(np.median(np.exp(f.n_law.samples[:, 0] + f.n_law.samples[:, 1] * np.log(target))))
        for m, f in fits.items()
    }
    points = {m: float(f.n_law(target)) for m, f in fits.items()}
    gap = abs(np.log(points["akima"] / points["parabola"]))
    assert gap > np.log(1.5)  # the two estimators really differ here
    for method in fits:
        assert abs(np.log(centres[method] / points[method])) < gap / 3, (method, centres, points)
        assert "akima" in fits["akima"].interval_note


def test_no_residual_degrees_of_freedom_gives_no_interval_and_says_why():
    """Three sizes per budget fit a parabola exactly, and four budgets are too few to
    resample: there is nothing to draw an interval from, so there is none (not a zero-width
    one), and fit.json says why."""
    table = synthetic_sweep(
        SIMULATED_LAW,
        SIMULATED_COMPUTE_LAW,
        [1e19, 3e19, 1e20, 3e20],
        sizes_per_budget=3,
        noise=0.003,
    )
    assert table.groupby("budget_flops")["n_active"].nunique().eq(3).all()
    for method in ("parabola", "akima"):
        fit = fit_isoflop(table, method=method, bootstrap=200)
        assert fit.n_law.samples is None
        assert fit.interval_note.startswith("no interval")
        assert "residual degrees of freedom" in fit.interval_note
        assert fit.predict(1e22, SIMULATED_COMPUTE_LAW)["n_opt_interval"] is None
    report = _quiet_fit(table, method="isoflop")
    assert report.predictions["isoflop"].n_opt_interval is None
    assert "residual degrees of freedom" in report.predictions["isoflop"].interval_note


# --- the choice of headline, agreement, fit.json ---------------------------------------


def test_headline_method_is_chosen_by_identification():
    both = {"parametric": {}, "isoflop": {}}
    assert choose_method(both, IDENTIFIED_WIDTH / 2) == "parametric"
    assert choose_method(both, None) == "parametric"  # no bootstrap: the default order
    assert choose_method(both, IDENTIFIED_WIDTH * 2) == "isoflop"
    assert choose_method({"parametric": {}}, IDENTIFIED_WIDTH * 2) == "parametric"
    assert choose_method({"isoflop": {}}, None) == "isoflop"


def test_approach3s_share_falls_smoothly_as_its_exponent_is_less_identified():
    """No cliff: all of the headline up to IDENTIFIED_WIDTH, none from NOT_IDENTIFIED_WIDTH,
    continuous between (a width a little past the line keeps most of the share), and times
    the lack-of-fit weight."""
    assert identification_weight(None) == identification_weight(IDENTIFIED_WIDTH) == 1.0
    assert identification_weight(NOT_IDENTIFIED_WIDTH) == identification_weight(1.0) == 0.0
    widths = np.linspace(IDENTIFIED_WIDTH, NOT_IDENTIFIED_WIDTH, 201)
    weights = np.array([identification_weight(w) for w in widths])
    assert np.all(np.diff(weights) < 0) and np.abs(np.diff(weights)).max() < 0.011
    assert identification_weight(IDENTIFIED_WIDTH + 1e-9) == pytest.approx(1.0)

    from moescale.fitting.studies.lack_of_fit import Family, LackOfFit

    refused = LackOfFit((Family("optimal N in sample", (2.3,), 5.4, 1, 0.02),))  # p = 0.02
    assert not refused.fits and refused.weight == pytest.approx(0.4)
    middle = (IDENTIFIED_WIDTH + NOT_IDENTIFIED_WIDTH) / 2
    assert parametric_share(middle, refused) == pytest.approx(0.5 * 0.4)
    assert parametric_share(IDENTIFIED_WIDTH / 2, None) == 1.0


def test_agreement_says_in_words_when_methods_disagree():
    def at(n_opt, interval=None):
        return Prediction(method="m", flops=1e22, n_opt=n_opt, d_opt=1e11, n_opt_interval=interval)

    a, b, c = at(1e9, (0.8e9, 1.2e9)), at(2e9, (1.7e9, 2.4e9)), at(1.1e9, (0.9e9, 1.3e9))
    assert agreement({"parametric": a, "isoflop": b}).verdict == "disagree"
    assert "DISAGREE" in agreement({"parametric": a, "isoflop": b}).text
    assert agreement({"parametric": a, "isoflop": c}).verdict == "agree"
    assert agreement({"parametric": a, "isoflop": at(1e9)}).verdict == "unknown"


def test_fit_json_round_trips_to_equal_predictions(tmp_path):
    table = simulated_design_sweep(2)
    fit = _quiet_fit(table)
    write_fit_json(fit, tmp_path / "fit.json")
    assert (tmp_path / "fit.json").stat().st_mode & 0o044 == 0o044  # readable by group/others
    loaded = load_fit(tmp_path / "fit.json")
    assert loaded.prediction == fit.prediction  # every field, as a typed record
    assert loaded.predictions == fit.predictions
    assert loaded.runs_hash == fit.runs_hash and loaded.options == fit.options

    def numbers(prediction: dict) -> list[float]:
        return [float(v) for key in sorted(prediction) for v in np.ravel(prediction[key])]

    for flops in (1e22, 3.1e24):
        for part in ("parametric", "isoflop"):
            before = getattr(fit, part).predict(flops, fit.compute_law)
            after = getattr(loaded, part).predict(flops, loaded.compute_law)
            assert numbers(after) == pytest.approx(numbers(before), rel=1e-12)
    assert loaded.extrapolation.table().equals(fit.extrapolation.table())
    assert loaded.lack_of_fit == fit.lack_of_fit and loaded.isoflop.shape == fit.isoflop.shape
    assert loaded.conventions["n"].startswith("n_active: activated parameters")
    # without the hold-out check (the design studies' fits): only the reach's words change,
    # and fit.json says it was left out (and, while it is on, has no such key: old files load)
    assert "holdout_check" not in fit.options.to_dict()
    quick = _quiet_fit(table, holdout_check=False)
    assert quick.extrapolation is None and "not asked for" in quick.skipped["extrapolation"]
    for method, p in fit.predictions.items():
        same = quick.predictions[method]
        assert (same.n_opt, same.n_opt_interval, same.d_opt, same.loss_opt) == (
            p.n_opt,
            p.n_opt_interval,
            p.d_opt,
            p.loss_opt,
        )
    write_fit_json(quick, tmp_path / "quick.json")
    assert load_fit(tmp_path / "quick.json").options.holdout_check is False


# --- designs with the noise real runs have (benchmarks.synthetic.DESIGNS) ------------


# every design at 100× past its largest budget, and the real-like one also at 10× (its width goal)
DESIGN_CASES = [(name, 100.0) for name in DESIGNS] + [("real-like", 10.0)]


DESIGN_SEEDS = range(20)  # at 8 the width ratio's denominator (a spread over the seeds) is too
# noisy for its 1.5 bound: seeds 0–7 of symmetric-6 happen to agree to 1.2% (2.6% over 20)


@pytest.fixture(scope="module")
def design_scores() -> pd.DataFrame:
    """20 seeds of every case in DESIGN_CASES, fitted as `moescale fit` does (100 bootstrap
    draws), two processes side by side."""
    from benchmarks.headline_designs import score_designs

    return score_designs(DESIGN_CASES, DESIGN_SEEDS, bootstrap=100, workers=2)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "factor"), DESIGN_CASES)
def test_headline_is_honest_and_no_wider_than_it_must_be(design_scores, name, factor):
    """20 seeds of Student-t noise with outliers at the grid edges, off-centre grids, 3, 6 and 9
    budgets, symmetric, asymmetric and Hunyuan-style curves: coverage >= 80%, |bias| <= 10%,
    and the median log(hi/lo) at most 1.5 × 2 × 1.96 × the s.d. of log N_opt across the
    seeds (vague intervals fail that); on the real-like design (9 budgets over 2 decades, 8
    sizes, 0.5% noise) a median hi/lo <= 2.5 at 10× past. The same table:
    `python -m benchmarks.headline_designs --bootstrap 100 --workers 2`."""
    from benchmarks.headline_designs import summarise

    scores = design_scores[(design_scores["design"] == name) & (design_scores["factor"] == factor)]
    assert len(scores) == len(DESIGN_SEEDS)
    s = summarise(scores)
    assert s["coverage"] >= 0.8, s
    assert abs(s["bias"]) <= 0.10, s
    assert s["width ratio"] <= 1.5, s
    if name == "real-like" and factor == 10.0:
        assert s["median hi/lo"] <= 2.5, s


def _curved_path_sweep(seed: int) -> pd.DataFrame:
    """isoFLOP curves that no L = E + A/N^α + B/D^β makes: parabolas in log N whose optimum
    grows as C^0.7 over the small budgets and as C^0.35 over the large ones (the kind of bend
    Chinchilla's own optima show, exaggerated), 0.2% noise."""
    rng = np.random.default_rng(seed)
    budgets = np.geomspace(1e18, 1e21, 7)
    rows = []
    for budget in budgets:
        z = np.log(budget / budgets[0])
        log_opt = np.log(5e7) + 0.7 * z - 0.025 * z**2  # slope 0.7 → 0.35 across the sweep
        loss_opt = 1.8 + 40.0 * budget**-0.1
        for k in range(-3, 4):
            log_n = log_opt + 0.5 + k * np.log(2.0)  # off-centre grid
            loss = (loss_opt + 0.02 * (log_n - log_opt) ** 2) * (1 + 0.002 * rng.standard_normal())
            n = float(np.exp(log_n))
            rows.append(
                {
                    "run_id": f"c{budget:.3g}-{k}",
                    "n_active": n,
                    "tokens": budget / (6 * n),
                    "flops_per_token": 6 * n,
                    "flops": budget,
                    "budget_flops": budget,
                    "final_loss": loss,
                    "status": "completed",
                }
            )
    return pd.DataFrame(rows)


def test_approach3_leads_only_where_it_fits():
    """On curves of another form Approach 3 can still be fitted (and narrowly): the lack-of-fit
    test refuses it, the headline weights it by its smallest p-value over the threshold and
    Approach 2 takes the rest (draws pooled), and says why; on the simulated design of its
    own form it passes (the headline test above)."""
    fit = _quiet_fit(_curved_path_sweep(0))
    assert allocation_width(fit.parametric.samples) <= IDENTIFIED_WIDTH  # identified
    test = fit.lack_of_fit
    assert test is not None and not test.fits and 0 <= test.weight < 1
    p = fit.prediction
    assert p.method == "combined"
    assert p.weights["parametric"] == pytest.approx(test.weight)
    assert "lack-of-fit test refuses it" in p.chosen_because
    # the point lies between the two methods', and the pooled interval holds both points
    # where they are inside their own intervals
    n3, n2 = fit.predictions["parametric"].n_opt, fit.predictions["isoflop"].n_opt
    assert min(n3, n2) <= p.n_opt <= max(n3, n2)
    low, high = p.n_opt_interval
    assert low <= p.n_opt <= high
    # and the same combination at any other budget (validation, report)
    other = fit.predict_at(3 * fit.target_flops)["combined"]
    assert other.weights == p.weights and other.n_opt > p.n_opt


def test_optimal_loss_levels_off_at_the_parametric_floor_even_with_three_budgets():
    """Three budgets: the optimal-loss law is E + k·C^−γ with E the parametric fit's (not a
    power law with no floor), so far past the sweep it stays above E, with an interval."""
    table = DESIGNS["symmetric-3"].sweep(0)
    fit = _quiet_fit(table)
    law = fit.isoflop.loss_law
    assert law.floor == pytest.approx(fit.parametric.E)
    far = 1e6 * table["budget_flops"].max()
    predicted = fit.isoflop.predict(far, fit.compute_law)
    assert fit.parametric.E < predicted["loss_opt"] < law(table["budget_flops"].max())
    low, high = predicted["loss_opt_interval"]
    assert low < predicted["loss_opt"] < high
    assert fit.predictions["isoflop"].loss_note is None
