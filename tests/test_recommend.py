"""`moescale recommend` on the example's fit: the run it writes trains (a valid run YAML) at the
headline's N and spends the budget; the inference-aware choice agrees with a hand
computation on the fit's own law and moves to smaller models as the inference grows."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import moescale

from moescale.models import count
from moescale.recommend import load_inputs, recommend, run_config, tokens_for_loss
from moescale.training import RunSpec
from moescale.yamlio import load_yaml, validate

EXAMPLE = Path(__file__).resolve().parents[1] / "results" / "example"
BUDGET = 3e14


@pytest.fixture(scope="module")
def recommended():
    return recommend(*load_inputs(EXAMPLE), BUDGET, inference_tokens=1e12)


def test_the_recommended_run_is_the_headline_model_and_spends_the_budget(recommended, tmp_path):
    import yaml

    fit, spec = load_inputs(EXAMPLE)
    n_opt = fit.predict_at(BUDGET)[fit.lead_method].n_opt
    assert recommended.n_opt == n_opt
    assert recommended.model.n_active == pytest.approx(n_opt, rel=0.10)
    assert recommended.model.flops == pytest.approx(BUDGET, rel=0.02)
    low, high = recommended.n_opt_interval
    assert recommended.low.n_active < recommended.model.n_active < recommended.high.n_active
    assert recommended.low.n_active == pytest.approx(low, rel=0.1)
    assert recommended.regret_low > 0 and recommended.regret_high > 0
    # the YAML is a run moescale train accepts, with the same model, tokens and FLOPs
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(recommended, spec)))
    run = validate(RunSpec, load_yaml(path), source=str(path))
    accounting = count(run.model, run.recipe.seq_len)
    assert accounting.n_active == recommended.model.n_active
    assert accounting.flops_per_token * run.tokens == pytest.approx(BUDGET, rel=0.02)
    assert run.recipe.lr == recommended.lr and run.recipe.batch_tokens == recommended.batch_tokens
    # on a device: the run's memory and its days at 40% of the dense bf16 peak
    from moescale.training.hardware import HARDWARE

    h100 = HARDWARE["h100"]
    placed = recommend(*load_inputs(EXAMPLE), BUDGET, hardware=h100)
    assert placed.devices == 1 and 0 < placed.memory_per_device < h100.memory
    assert placed.days == pytest.approx(placed.model.flops / (h100.peak_bf16 * 0.4) / 86400)


def test_inference_aware_sizing_matches_a_hand_computation_on_the_fits_law(recommended):
    fit, spec = load_inputs(EXAMPLE)
    inference, optimal = recommended.inference, recommended.model
    chosen = inference.model
    assert chosen.n_active < optimal.n_active
    assert inference.total_flops < inference.optimal_total_flops
    # by hand: D from L(N, D) = L* under the fit's law, E + A/N^α + B/D^β
    law = fit.parametric
    room = inference.loss_target - law.E - law.A / chosen.n_active**law.alpha
    by_hand = (law.B / room) ** (1 / law.beta)
    assert tokens_for_loss(fit, chosen.n_active, inference.loss_target) == pytest.approx(by_hand)
    assert chosen.tokens == pytest.approx(by_hand, abs=recommended.batch_tokens)
    assert chosen.loss == pytest.approx(inference.loss_target, abs=1e-4)
    total = chosen.tokens * chosen.flops_per_token + 1e12 * chosen.inference_flops_per_token
    assert inference.total_flops == pytest.approx(total)
    # no inference: the compute-optimal model; more inference: smaller models
    sizes = [
        recommend(*load_inputs(EXAMPLE), BUDGET, inference_tokens=t).inference.model.n_active
        for t in (0.0, 1e9, 1e11)
    ]
    assert sizes[0] == optimal.n_active
    assert sizes[0] > sizes[1] > sizes[2]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "1e10"], "is below the sweep's smallest budget"),
        (["--budget", "3e14", "--inference-tokens", "-1"], "--inference-tokens must be at least 0"),
        (["--budget", "-3"], "--budget must be a positive number"),
        (["--budget", "3e14", "--peak-flops", "1e15"], "a custom --hardware needs both"),
    ],
)
def test_recommend_bad_input_is_one_line(args, expected):
    from cli_helpers import assert_one_line_error

    assert_one_line_error(moescale("recommend", str(EXAMPLE), *args), expected)


def test_a_folder_without_a_fit_is_one_line(tmp_path):
    from cli_helpers import assert_one_line_error

    (tmp_path / "sweep.yaml").write_text((EXAMPLE / "sweep.yaml").read_text())
    result = moescale(
        "recommend", str(tmp_path), "--budget", "3e14", "--out", str(tmp_path / "r.yaml")
    )
    assert_one_line_error(result, "no fit.json (run `moescale fit")
    assert not (tmp_path / "r.yaml").exists()
