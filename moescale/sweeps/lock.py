"""One sweep driver per results folder: an advisory lock (the `filelock` package, flock on
Unix) that the operating system releases when its holder dies, however it dies.

What holds where: on a local disk, always. On NFS, Linux clients turn flock into POSIX byte-
range locks that the server arbitrates (NFSv4, or NFSv3 with lockd), so two drivers on two
nodes exclude each other; a driver that dies with its node keeps the lock until the server's
lease lapses (NFSv4: about 90 s). A mount with `nolock` (or `local_lock=all`) keeps locks on
each node, so drivers on two nodes would not see each other there: run one driver per folder.
A filesystem without flock at all is refused rather than given a lock that a crash would
leave behind (filelock's soft-lock fallback is off)."""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import filelock

from moescale.errors import UserError
from moescale.results import atomic_write_bytes


class SweepLock:
    def __init__(self, results_dir: Path):
        self.path = Path(results_dir) / ".lock"
        self.holder = Path(results_dir) / ".lock.holder"  # who holds it, for the refusal
        self._lock = filelock.FileLock(self.path, timeout=0, fallback_to_soft=False)

    def __enter__(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            try:
                holder = self.holder.read_text().strip()
            except OSError:
                holder = ""
            raise UserError(
                f"{self.path.parent} is in use by {holder or 'another process'}"
            ) from None
        except OSError as error:
            raise UserError(
                f"{self.path.parent}: cannot lock the folder ({error.strerror or error})"
            ) from None
        started = dt.datetime.now().isoformat(timespec="seconds")
        atomic_write_bytes(
            self.holder, f"pid {os.getpid()} on {socket.gethostname()} (since {started})".encode()
        )
        return self

    def __exit__(self, *exc) -> None:
        if self._lock.is_locked:
            self.holder.unlink(missing_ok=True)
            self._lock.release()
