"""Sharded runs: one run trained data-parallel over `world_size` processes with PyTorch FSDP2
(`fully_shard` on every transformer block, then the model), checkpointed with
`torch.distributed.checkpoint` so that a resumed run continues where it stopped.

The processes are started here, on the trial's node (`torch.multiprocessing`, NCCL on CUDA,
gloo on the CPU): a trial's devices are one node's, which covers every run the memory plan
shards over up to 8 devices; Ray schedules the trial and reserves all of its devices. Rank r
trains on the r-th contiguous slice of each step's batch (a batch is a pure function of seed
and step, so every rank draws the same one), and FSDP averages the gradients, so the
optimizer sees the same mean gradient as one process would, up to the order of the sums.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moescale.errors import UserError

SHARDED_CHECKPOINT = "checkpoint.dcp"  # a folder: one file per rank and the metadata


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(model: torch.nn.Module) -> None:
    """FSDP2: each block its own unit (gathered while it runs), then the rest of the model."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)


def mean_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def save_sharded(folder: Path, model, optimizer, extra: dict) -> None:
    """Model and optimizer states, each rank writing its shards (DCP); `extra` (step, curve,
    this rank's RNG) beside them, one file per rank. Written to a fresh folder, then swapped
    in, so a crash leaves the previous checkpoint whole."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank, _ = world()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    fresh = folder.with_name(f".{folder.name}.new")
    if rank == 0 and fresh.exists():
        shutil.rmtree(fresh)
    dist.barrier()
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(fresh))
    torch.save(extra, fresh / f"extra-rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            folder.rename(old)
        fresh.rename(folder)
        if old.exists():
            shutil.rmtree(old)
    dist.barrier()


def load_sharded(folder: Path, model, optimizer) -> dict:
    """Restore what `save_sharded` wrote; returns this rank's `extra`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    rank, _ = world()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    return torch.load(folder / f"extra-rank{rank}.pt", weights_only=True)


def full_model_state(model) -> dict:
    """The whole model's weights as plain tensors on rank 0 (for the final checkpoint.pt)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, backend: str, run, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        run(*args)
        dist.barrier()  # no rank tears the group down while another still has work in flight
    finally:
        dist.destroy_process_group()
    # The run's files are all written (atomically) by now. Leave without the interpreter's
    # teardown: gloo's worker threads can still hold tensors then, and freeing them while
    # Python finalises aborts the process (SIGABRT, "terminate called without an active
    # exception"; pytorch/pytorch#179291), which would fail a run that finished.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def launch(world_size: int, device: str, run, *args) -> None:
    """Run `run(*args)` in `world_size` processes of one process group, and wait for them."""
    if world_size < 1:
        raise UserError(f"world_size must be at least 1, got {world_size}")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.device_count() < world_size:
        raise UserError(
            f"a run over {world_size} devices needs {world_size} GPUs; this node has "
            f"{torch.cuda.device_count()}"
        )
    backend = "nccl" if cuda else "gloo"
    try:
        mp.spawn(_worker, args=(world_size, _free_port(), backend, run, args), nprocs=world_size)
    except mp.ProcessRaisedException as err:  # bad input in a worker stays a one-line error
        last = str(err).strip().splitlines()[-1]
        if last.startswith("moescale.errors.UserError: "):
            raise UserError(last.removeprefix("moescale.errors.UserError: ")) from None
        raise
