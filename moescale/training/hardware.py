"""The device a run uses and its measured matmul peak (FLOP/s), measured once and cached."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from moescale.errors import OptionError, UserError

if TYPE_CHECKING:  # torch loads where a device is used: naming a target stays light
    import torch


@dataclass(frozen=True)
class Hardware:
    """A device a sweep can be planned for: dense peak matmul FLOP/s and memory per device."""

    name: str
    peak_bf16: float  # FLOP/s, dense (no structured sparsity)
    peak_fp32: float  # FLOP/s, plain fp32 (not TF32)
    memory: float  # bytes per device
    source: str

    def peak(self, precision: str) -> float:
        return self.peak_bf16 if precision == "bf16" else self.peak_fp32


# Vendors' datasheets, dense figures (the headline "with sparsity" numbers are twice these).
HARDWARE: dict[str, Hardware] = {
    h.name: h
    for h in (
        Hardware("a100-40gb", 312e12, 19.5e12, 40e9, "NVIDIA A100 Tensor Core GPU datasheet (SXM)"),
        Hardware("a100-80gb", 312e12, 19.5e12, 80e9, "NVIDIA A100 Tensor Core GPU datasheet (SXM)"),
        Hardware("h100", 989e12, 67e12, 80e9, "NVIDIA H100 Tensor Core GPU datasheet (SXM)"),
        Hardware("h200", 989e12, 67e12, 141e9, "NVIDIA H200 Tensor Core GPU datasheet (SXM)"),
        Hardware("l40s", 362e12, 91.6e12, 48e9, "NVIDIA L40S datasheet"),
        Hardware("mi300x", 1307e12, 163.4e12, 192e9, "AMD Instinct MI300X datasheet"),
    )
}


def this_cpu() -> Hardware:
    """This machine's CPU: its measured fp32 matmul peak (bf16 taken as the same) and RAM."""
    peak = matmul_peak("cpu")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Hardware("cpu", peak, peak, float(memory), "measured on this machine")


def resolve_hardware(
    name: str | None, peak_flops: float | None = None, device_memory: float | None = None
) -> Hardware | None:
    """A named target (or `cpu`), optionally with its peak or memory replaced; a custom target
    needs both numbers. None when nothing was asked for."""
    if name is None and peak_flops is None and device_memory is None:
        return None
    if name is None:
        if peak_flops is None or device_memory is None:
            raise OptionError("a custom {hardware} needs both {peak_flops} and {device_memory}")
        base = Hardware("custom", peak_flops, peak_flops, device_memory, "given")
    elif name == "cpu":
        base = this_cpu()
    elif name in HARDWARE:
        base = HARDWARE[name]
    else:
        raise OptionError(
            f"{{hardware}}: unknown target '{name}' (known: cpu, {', '.join(HARDWARE)}; or give "
            "{peak_flops} and {device_memory})"
        )
    for value, what in ((peak_flops, "peak_flops"), (device_memory, "device_memory")):
        if value is not None and not value > 0:
            raise OptionError(f"{{{what}}} must be a positive number, got {value}")
    return replace(
        base,
        peak_bf16=peak_flops or base.peak_bf16,
        peak_fp32=peak_flops or base.peak_fp32,
        memory=device_memory or base.memory,
    )


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present and asked for ("auto" or "cuda"), else the CPU; asking for CUDA on a
    machine without it is a UserError, not a crash deep in the first step."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device: {requested}, but this machine has no CUDA device (torch "
            f"{torch.__version__}); use device: auto or cpu here, or plan for a GPU with "
            "`moescale sweep … --dry-run --hardware NAME`"
        )
    return device


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> None:
    """Serve every allocation from the heap and keep freed host memory for reuse instead of
    returning it to the OS (glibc only; elsewhere nothing). A CPU step allocates and frees
    the same activations each micro-batch; glibc serves large ones by fresh mmaps (always
    those over 32 MB), and every page of those faults again: a dense FFN at d_model 512 ran
    at 62% of the matmul peak that way, 81% without. Values are untouched; the process keeps
    its peak memory."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None or os.uname().sysname != "Linux":
        return
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # musl and others: nothing to tune
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # an int: never trim below 2 GiB of free top


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    size: int = 1024,
    seconds: float = 0.5,
) -> float:
    """Best FLOP/s of square `size` matmuls over ~`seconds` (the best of short repeats, so a
    noisy neighbour lowers it less than a mean would); fp32 unless `dtype` is given."""
    import torch

    dtype = dtype or torch.float32
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


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> float:
    """The measured matmul peak of this machine's `device` at `dtype` (fp32 unless given) and
    at the current thread count, cached in ~/.cache/moescale (or $MOESCALE_CACHE) after the
    first measure."""
    import torch

    dtype = dtype or torch.float32
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
