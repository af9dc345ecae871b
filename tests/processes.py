"""Finding and stopping the processes a test started (never anyone else's: no `ray stop`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (e.g. a test's own Ray temp dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (a Ray node's agents and workers are its children)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int(
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_processes_mentioning(text: str, sig: int = signal.SIGKILL) -> int:
    """Kill the processes whose command line names `text`, and all their descendants."""
    pids = descendants(set(pids_mentioning(text)))
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    if pids:
        time.sleep(1)
    return len(pids)


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")
