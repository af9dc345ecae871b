"""Finding and stopping the processes a test started (never anyone else's: no `ray stop`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def wait_for(predicate, timeout: float, what: str, every: float = 0.2, process=None):
    """The first true value of `predicate()`, polled every `every` s. With `process` (a
    Popen with piped output, the one expected to bring it about): a process that exits first
    or is still running at the deadline fails the wait with the end of its output, so that a
    hung or crashed driver says why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"exited ({process.returncode}) before {what}:\n{(out + err)[-3000:]}"
            )
        time.sleep(every)
    detail = ""
    if process is not None:
        # SIGABRT first: Python's faulthandler (on in every process the tests start, see
        # conftest.py) prints where each of its threads is stuck
        process.send_signal(signal.SIGABRT)
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        detail = f"; its output:\n{(out + err)[-6000:]}"
    raise TimeoutError(f"waited {timeout:.0f} s for {what}{detail}")


@dataclass
class LocalCluster:
    address: str
    env: dict  # the environment the cluster's clients need
    node_dirs: list[Path]  # each node's own temp dir: [head, worker, ...]


@contextlib.contextmanager
def local_ray_cluster(n_nodes: int = 2, cpus_per_node: int = 1):
    """A throwaway Ray cluster of `n_nodes` one-CPU nodes on this machine, stopped afterwards by
    killing exactly its own processes (each node's temp dir names them; their children follow).
    Token authentication is turned off for this cluster alone: Ray 2.60 enables it by default
    and a second node without the token would be refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dirs = [Path(tempfile.gettempdir()) / f"msc-{os.getpid()}-{port}-{i}" for i in range(n_nodes)]
    # workers at the sweep's own niceness, as a local sweep's are (sweeps.runner.start_ray)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0"}
    common = [f"--num-cpus={cpus_per_node}", "--node-ip-address=127.0.0.1"]
    try:
        for i, folder in enumerate(dirs):
            role = (
                ["--head", f"--port={port}", "--include-dashboard=false"]
                if i == 0
                else [f"--address=127.0.0.1:{port}"]
            )
            subprocess.run(
                [sys.executable, "-m", "ray.scripts.scripts", "start", *role, *common, f"--temp-dir={folder}"],
                env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        yield LocalCluster(f"127.0.0.1:{port}", env, dirs)
    finally:
        for folder in dirs:
            kill_processes_mentioning(str(folder))
            shutil.rmtree(folder, ignore_errors=True)
