"""Training checkpoints: one file per save, written atomically, the last N kept.

A checkpoint `RUN_DIR/checkpoints/step-00001000.pt` holds {"step", "model", "ema", "optimizer", "scaler",
"rng", "config", ...}. It is written to a temporary file and renamed, so killing the run at any moment leaves
either the previous checkpoint or the new one, never a torn file.
"""

import logging
import os
import re
from pathlib import Path

import torch

from latte.models.io import load_torch_checkpoint
from latte.outputs import write_file

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"step-(\d+)\.pt")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := _PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict, keep_last: int) -> Path:
    path = write_file(checkpoint_path(run_dir, step), lambda tmp: torch.save(state, tmp))
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of a run (path, contents), or None when there is none."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_torch_checkpoint(path)
        except ValueError as err:  # cannot happen with atomic writes, but never lose a run to one bad file
            logger.warning("skipping unreadable checkpoint %s: %s", path, err)
    return None


def rng_state() -> dict:
    import random

    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
