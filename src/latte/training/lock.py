"""The run-folder lock: one `latte train` (or `latte cache` into the run folder) per run folder at a time.

An OS lock (`flock`) on RUN_DIR/.lock, taken without waiting and held for the life of the run. The kernel
releases it when the process ends, however it ends, so a killed run never leaves a stale lock. The holder
writes its PID into the file so that the refusal can name it. The file itself stays; only the lock matters.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderBusyError(OSError):
    """Another process holds the lock of the run folder."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of `run_dir` (created if missing) for the `with` block, or fail at once naming the PID
    that holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusyError(
                f"run folder {run_dir} is in use by another latte process (PID {holder}); wait for it to "
                "finish or stop it, or set output_dir to another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock
