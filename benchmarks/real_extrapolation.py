"""How well do the estimators extrapolate on real runs? Each data set is fitted on its smaller
part and asked about the rest; every prediction is scored against what the held-out runs show.

- Chinchilla's isoFLOP sweep (Hoffmann et al. 2022, its nine budgets 6e18–3e21 FLOPs; the
  points as extracted by Besiroglu et al. 2024, arXiv 2404.10102): fitted on the budgets up to
  6e19, 1e20 and 3e20 in turn, every larger budget asked (1.7–50× past). The truth is each
  held-out budget's own optimum (`realised`: a local parabola, no law). Scored: the
  headline's N_opt and optimal loss, and each method's.
- Loss of held-out runs from the parametric law (Approach 3), with its bootstrap interval:
  Epoch's Chinchilla points fitted below 1e20 FLOPs, the rest predicted; the OLMo ladder
  (Bhagia et al. 2024, arXiv 2412.04403) fitted on 190M–1B, the 3B runs predicted; Clark et
  al. 2022's routing curves (arXiv 2202.01169, deepmind/scaling_laws_for_routing, CC-BY 4.0),
  every router × expert count: the five smaller sizes' curve points past 50k steps fitted, the
  largest size's predicted (one cosine schedule per run: these points are not annealed).

Conventions: N as each source counts it (Clark: dense-equivalent parameters; Chinchilla and
OLMo: their parameter counts); C = 6·N·D where the source gives no FLOPs of its own (Clark's
flops_per_step otherwise); losses in nats per token of the source's tokenizer.

    .venv/bin/python -m benchmarks.real_extrapolation [--bootstrap 200] [--json out.json]

Run against another checkout (the `before` of a change) with PYTHONPATH pointing at it;
$MOESCALE_SHARED_DATA names the data folder when it is not ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from moescale.fitting import fit_all, fit_parametric
from moescale.fitting.options import FitOptions

DATA = Path(
    os.environ.get("MOESCALE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
# Hoffmann et al. 2022's isoFLOP budgets (their Figure 3)
EPOCH_BUDGETS = np.array([6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21])


def clark_curves() -> pd.DataFrame:
    return pd.read_csv(DATA / "clark2022_routing" / "curves.csv.gz")


def epoch_points() -> pd.DataFrame:
    table = pd.read_csv(DATA / "epoch_chinchilla" / "svg_extracted_data.csv")
    table = table.assign(
        n_active=table["Model Size"], flops=table["Training FLOP"], final_loss=table["loss"]
    )
    table["tokens"] = table["flops"] / (6 * table["n_active"])
    table["flops_per_token"] = 6 * table["n_active"]
    table["status"] = "completed"
    table["run_id"] = [f"chinchilla-{i}" for i in range(len(table))]
    return table


def epoch_isoflop() -> pd.DataFrame:
    """Chinchilla's points on its nine isoFLOP budgets: each point within 25% of one (the
    extracted FLOPs scatter about the nominal budgets), the rest left out."""
    table = epoch_points()
    c = table["flops"].to_numpy()
    nearest = np.abs(np.log(c[:, None] / EPOCH_BUDGETS[None, :])).argmin(axis=1)
    off = np.abs(np.log(c / EPOCH_BUDGETS[nearest]))
    table["budget_flops"] = EPOCH_BUDGETS[nearest]
    return table[off < np.log(1.25)]


def realised(runs: pd.DataFrame, draws: int = 200) -> tuple[float, float, float] | None:
    """A held-out budget's own optimum, model-light: a parabola in log N through the sizes
    within a factor 3 of its lowest loss (repeats averaged; 4 sizes or more), its vertex
    inside them — local enough that the curve's asymmetry does not move it, wide enough to
    average the noise — and the s.d. of its log from a residual bootstrap (the truth is
    measured too). None when the lowest loss is at an edge."""
    per_size = runs.groupby("n_active")["final_loss"].mean()
    x, y = np.log(per_size.index.to_numpy(float)), per_size.to_numpy(float)
    lowest = int(np.argmin(y))
    if lowest in (0, len(y) - 1):
        return None
    near = np.abs(x - x[lowest]) <= np.log(3.0)
    if near.sum() < 4:
        near = np.sort(np.argsort(np.abs(x - x[lowest]))[:4])
    x, y = x[near], y[near]
    coeffs = np.polyfit(x, y, 2)
    if coeffs[0] <= 0 or not x.min() < -coeffs[1] / (2 * coeffs[0]) < x.max():
        return None
    vertex = -coeffs[1] / (2 * coeffs[0])
    fitted = np.polyval(coeffs, x)
    residual = (y - fitted) * np.sqrt(len(x) / max(len(x) - 3, 1))
    rng = np.random.default_rng(0)
    found = []
    for _ in range(draws):
        c2, c1, _c0 = np.polyfit(x, fitted + rng.choice(residual, len(x)), 2)
        if c2 > 0:
            found.append(np.clip(-c1 / (2 * c2), x.min(), x.max()))
    return float(np.exp(vertex)), float(np.polyval(coeffs, vertex)), float(np.std(found))


def _interval_width(interval) -> float:
    return np.nan if not interval else interval[1] / interval[0]


def score_isoflop(data: str, name: str, table: pd.DataFrame, fit_up_to: float, bootstrap: int):
    """The headline and every method, fitted on the budgets up to `fit_up_to`, at each
    larger budget whose own optimum is interior."""
    fit_part = table[table["budget_flops"] <= fit_up_to]
    truths = {}
    for budget, runs in table[table["budget_flops"] > fit_up_to].groupby("budget_flops"):
        found = realised(runs)
        if found is not None:
            truths[float(budget)] = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        fit = fit_all(
            fit_part,
            None,
            name,
            FitOptions(target_flops=max(truths), bootstrap=bootstrap),
            strict=False,
        )
        seconds = time.perf_counter() - started
    largest = float(fit_part["budget_flops"].max())
    rows = []
    for budget, (n_real, loss_real, se_real) in truths.items():
        at = fit.predict_at(budget)
        at["headline"] = at[fit.lead_method]
        for method, p in at.items():
            low, high = p.n_opt_interval or (np.nan, np.nan)
            loss_low, loss_high = p.loss_opt_interval or (np.nan, np.nan)
            rows.append(
                {
                    "data": data,
                    "setting": name,
                    "method": method,
                    "chosen": fit.lead_method,
                    "factor": budget / largest,
                    "n_error": p.n_opt / n_real - 1,
                    "n_covered": bool(low <= n_real <= high),
                    # inside the interval once the truth's own error is counted too
                    "n_consistent": bool(
                        abs(np.log(p.n_opt / n_real))
                        <= 1.96 * np.hypot(np.log(high / low) / 3.92, se_real)
                    ),
                    "n_width": _interval_width(p.n_opt_interval),
                    "loss_error": (np.nan if p.loss_opt is None else p.loss_opt) / loss_real - 1,
                    "loss_covered": bool(loss_low <= loss_real <= loss_high),
                    "loss_width": _interval_width(p.loss_opt_interval),
                    "seconds": seconds,
                }
            )
    return rows


def score_losses(data: str, setting: str, fit_on: pd.DataFrame, ask: pd.DataFrame, bootstrap: int):
    """Approach 3 fitted on `fit_on`, each run of `ask` predicted with its 95% interval."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_parametric(fit_on, bootstrap=bootstrap)
    rows = []
    for run in ask.itertuples():
        predicted = float(fit.loss(run.n_active, run.tokens))
        low, high = np.percentile(fit.loss_draws(run.n_active, run.tokens), (2.5, 97.5))
        rows.append(
            {
                "data": data,
                "setting": setting,
                "method": "parametric",
                "chosen": "parametric",
                "factor": np.nan,
                "loss_error": predicted / run.final_loss - 1,
                "loss_covered": bool(low <= run.final_loss <= high),
                "loss_width": _interval_width((low, high)),
            }
        )
    return rows


def epoch_rows(bootstrap: int) -> list[dict]:
    table = epoch_points().sort_values("final_loss").iloc[:-5]  # Epoch drops the 5 highest
    table["budget_flops"] = table["flops"]
    below = table["flops"] < 1e20
    return score_losses(
        "epoch chinchilla", "C < 1e20 → rest", table[below], table[~below], bootstrap
    )


def olmo_rows(bootstrap: int) -> list[dict]:
    table = pd.read_csv(DATA / "olmo_ladder" / "ladder_final_c4_summary.csv")
    table = table.assign(
        n_active=table["n_params"], tokens=table["total_tokens"], final_loss=table["c4_loss"]
    )
    table["budget_flops"] = 6 * table["n_active"] * table["tokens"]
    big = table["size"] == "3B"
    return score_losses("olmo ladder", "190M–1B → 3B", table[~big], table[big], bootstrap)


def clark_rows(curves: pd.DataFrame, bootstrap: int) -> list[dict]:
    """Every router × expert-count setting: the five smaller sizes' curve points past 50k
    steps fitted, the largest size's predicted."""
    rows = []
    usable = curves[(curves["step"] >= 50_000) & curves["loss_validation"].notna()]
    for (router, experts), part in usable.groupby(["router_type", "num_experts"]):
        points = part.groupby(["dense_parameter_count", "step"], as_index=False).agg(
            final_loss=("loss_validation", "mean"), flops_per_step=("flops_per_step", "first")
        )
        points["n_active"] = points["dense_parameter_count"]
        points["budget_flops"] = points["step"] * points["flops_per_step"]
        points["tokens"] = points["budget_flops"] / (6 * points["n_active"])
        largest = points["n_active"] == points["n_active"].max()
        rows += score_losses(
            "clark routing", f"{router} E={experts}", points[~largest], points[largest], bootstrap
        )
    return rows


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (data, method), g in frame.groupby(["data", "method"], sort=False):
        row = {"data": data, "method": method, "predictions": len(g)}
        if "n_error" in g and g["n_error"].notna().any():
            row |= {
                "N coverage": f"{int(g['n_covered'].sum())}/{len(g)}",
                "N within both errors": f"{int(g['n_consistent'].sum())}/{len(g)}",
                "N median |error|": f"{g['n_error'].abs().median():.1%}",
                "N median hi/lo": f"{g['n_width'].median():.2f}",
            }
        row |= {
            "loss coverage": f"{int(g['loss_covered'].sum())}/{len(g)}",
            "loss median |error|": f"{g['loss_error'].abs().median():.2%}",
            "loss median hi/lo": f"{g['loss_width'].median():.3f}",
        }
        if "chosen" in g and method == "headline":
            row["headline chose"] = ", ".join(
                f"{m} {n}" for m, n in g.drop_duplicates("setting")["chosen"].value_counts().items()
            )
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write every scored prediction here")
    parser.add_argument("--only", choices=("isoflop", "losses"), help="one kind of data set")
    args = parser.parse_args()
    rows: list[dict] = []
    if args.only != "losses":
        isoflop = epoch_isoflop()
        for fit_up_to in EPOCH_BUDGETS[3:6]:
            name = f"budgets ≤ {fit_up_to:.0e}"
            found = score_isoflop("chinchilla isoFLOP", name, isoflop, fit_up_to, args.bootstrap)
            rows += found
            for r in found:
                if r["method"] == "headline":
                    print(
                        f"{name:16s} {r['factor']:5.1f}×  headline ({r['chosen']}) N error "
                        f"{r['n_error']:+.1%} covered {r['n_covered']!s:5s} hi/lo {r['n_width']:.2f}"
                        f"  loss error {r['loss_error']:+.2%}  fit {r['seconds']:.1f} s",
                        flush=True,
                    )
    if args.only != "isoflop":
        rows += epoch_rows(args.bootstrap) + olmo_rows(args.bootstrap)
        rows += clark_rows(clark_curves(), args.bootstrap)
    frame = pd.DataFrame(rows)
    print()
    print(markdown(summary(frame)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
