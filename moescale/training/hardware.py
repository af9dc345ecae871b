"""The device a run uses and its measured matmul peak (FLOP/s), measured once and cached."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present and asked for ("auto" or "cuda"), else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 1024,
    seconds: float = 0.5,
) -> float:
    """Best FLOP/s of square `size` matmuls over ~`seconds` (the best of short repeats, so a
    noisy neighbour lowers it less than a mean would)."""
    device = torch.device(device)
    if device.type == "cuda":
        size = max(size, 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    flops = 2.0 * size**3
    best = 0.0
    a @ b  # warm-up
    _sync(device)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * flops / (time.perf_counter() - start))
    return best


def _cache_path() -> Path:
    root = os.environ.get("MOESCALE_CACHE") or os.path.join(Path.home(), ".cache", "moescale")
    return Path(root) / "matmul_peak.json"


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """The measured matmul peak of this machine's `device` at `dtype` and at the current
    thread count, cached in ~/.cache/moescale (or $MOESCALE_CACHE) after the first measure."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    key = f"{os.uname().nodename}/{name}/{str(dtype).removeprefix('torch.')}/threads={torch.get_num_threads()}"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = measure_matmul_peak(device, dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    return float(cache[key])
