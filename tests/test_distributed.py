"""A run sharded over two processes with FSDP2 on the CPU (gloo): the same curve as one
process within floating-point tolerance, and a killed run resumed from its sharded
checkpoint ends exactly where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from processes import wait_for
from test_training import SIGMOID_BIAS, tiny_spec

from moescale.training import train_run

# Dropless routing and no load-balance loss: then the two-process step is the one-process
# step exactly, up to the order of the sums (the balance loss of a half batch is not half the
# balance loss of the batch, and capacity-limited routing depends on the batch it sees).
SHARDABLE = dict(model=dict(aux_loss_coef=0.0), recipe=dict(checkpoint_every=10))
# Each rank's gradient is its half-batch mean, averaged by FSDP's reduce-scatter: the same
# sum in another order, ~1e-7 relative per step; AdamW's normalisation lets such last-bit
# differences grow over 40 steps to ~1e-5 of a loss of ~3 nats. 1e-4 absolute leaves room.
TOLERANCE = 1e-4


@pytest.mark.slow
def test_two_fsdp_processes_train_the_curve_of_one(tmp_path):
    spec = tiny_spec(**SHARDABLE)
    one = train_run(spec, tmp_path / "one")
    two = train_run(spec.model_copy(update={"world_size": 2}), tmp_path / "two")
    assert one.run_id == two.run_id  # the same run, trained another way
    assert one.steps == two.steps and one.tokens == two.tokens
    a = pd.read_parquet(tmp_path / "one" / "curve.parquet")
    b = pd.read_parquet(tmp_path / "two" / "curve.parquet")
    assert a["step"].tolist() == b["step"].tolist()
    for column in ("train_loss", "eval_loss", "lr"):
        pd.testing.assert_series_equal(
            a[column], b[column], check_exact=False, atol=TOLERANCE, rtol=0
        )
    assert two.final_loss == pytest.approx(one.final_loss, abs=TOLERANCE)
    # the noise scale's small batch is the batch's even-indexed sequences on any number of
    # ranks: the same estimate, up to the order of the sums (a difference of two squared
    # norms, so the last-bit differences above grow to ~1e-3 of it, ~0.3 tokens in 400)
    pd.testing.assert_series_equal(
        a["grad_noise_scale"], b["grad_noise_scale"], check_exact=False, rtol=5e-3, atol=1.0
    )
    assert a["grad_noise_scale"].iloc[-1] > 0
    assert (a["train_loss"] != b["train_loss"]).any()  # really two processes, not one reused
    assert (tmp_path / "two" / "checkpoint.pt").exists()  # the final weights, gathered


@pytest.mark.slow
def test_two_fsdp_ranks_keep_the_one_process_runs_selection_bias(tmp_path):
    """Auxiliary-loss-free balancing sharded: each rank's expert loads are summed over both
    ranks before the bias moves, so both keep one bias, the one-process run's to the bit
    (integer counts, a sign update). The curve is not equal to 1e-4 here: with the bias's
    coarse steps a last-bit difference in a score can flip a top-k choice."""
    spec = tiny_spec(
        **{**SHARDABLE, "model": {**SHARDABLE["model"], **SIGMOID_BIAS, "bias_update_rate": 0.01}}
    )
    one = train_run(spec, tmp_path / "one")
    two = train_run(spec.model_copy(update={"world_size": 2}), tmp_path / "two")
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    biases = [k for k in a if k.endswith("expert_bias")]
    assert len(biases) == 2 and all(a[k].abs().max() > 0 for k in biases)
    for key in biases:
        assert torch.equal(a[key], b[key]), key
    assert two.final_loss == pytest.approx(one.final_loss, abs=2e-3)


@pytest.mark.slow
def test_a_killed_sharded_run_resumes_from_its_checkpoint_exactly(tmp_path):
    spec = tiny_spec(**SHARDABLE).model_copy(update={"world_size": 2})
    straight = train_run(spec, tmp_path / "straight")
    folder = tmp_path / "killed"
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from moescale.training import RunSpec, train_run\n"
        "if __name__ == '__main__':\n"
        f"    train_run(RunSpec.model_validate_json({spec.model_dump_json()!r}), {str(folder)!r})\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (folder / "checkpoint.dcp").is_dir(), 120, "a sharded checkpoint")
        time.sleep(0.3)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both of its ranks
        process.wait()
    assert not (folder / "run.json").exists()  # killed mid-run
    steps = pd.read_parquet(folder / "curve.parquet")["step"]
    resumed = train_run(spec, folder)
    assert resumed.final_loss == straight.final_loss
    assert resumed.final_train_loss == straight.final_train_loss
    a = pd.read_parquet(tmp_path / "straight" / "curve.parquet").drop(columns="tokens_per_s")
    b = pd.read_parquet(folder / "curve.parquet").drop(columns="tokens_per_s")
    pd.testing.assert_frame_equal(a, b)
    assert steps.max() >= 10  # it had got past its first checkpoint before the kill
