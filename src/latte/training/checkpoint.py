"""Training checkpoints: one file per save, written atomically, the last N readable ones kept.

A checkpoint `RUN_DIR/checkpoints/step-00001000.pt` holds {"step", "model", "ema", "optimizer", "scaler",
"rng", "config", ...}. It is written to a temporary file and renamed, so killing the run at any moment leaves
either the previous checkpoint or the new one, never a torn file. Pruning counts only checkpoints that load:
an unreadable file (copied in, damaged) is warned about and left alone, and never pushes a good one out.
"""

import logging
import os
import re
from pathlib import Path

import torch

from latte.models.io import load_torch_checkpoint
from latte.outputs import write_file
from latte.training.config import Config

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"step-(\d+)\.pt")
# Settings a resumed run cannot change: they shape the model, or change what it learns to predict.
RESUME_FIXED = (
    "model.type", "model.name", "model.args", "data.num_frames", "data.size", "train.prediction_type", "train.lora"
)


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := _PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict, keep_last: int) -> Path:
    """Write the checkpoint of `step`, then delete readable ones beyond the newest `keep_last` readable ones."""
    path = write_file(checkpoint_path(run_dir, step), lambda tmp: torch.save(state, tmp))
    kept = 0
    for old in reversed(list_checkpoints(run_dir)):
        if old != path and not loads(old):
            logger.warning("leaving unreadable checkpoint %s alone: it does not count towards log.keep_last", old)
            continue
        kept += 1
        if kept > keep_last:
            old.unlink(missing_ok=True)
    return path


def loads(path: Path) -> bool:
    """Whether torch can open the checkpoint (memory-mapped: its tensors are not read)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types for damaged files
        return False
    return True


def newest_readable(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run that loads, or None."""
    return next((p for p in reversed(list_checkpoints(run_dir)) if loads(p)), None)


def checkpoint_step(path: Path) -> int:
    return int(_PATTERN.fullmatch(path.name).group(1))


def load_latest(run_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of a run (path, contents), or None when there is none."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_torch_checkpoint(path)
        except ValueError as err:  # cannot happen with atomic writes, but never lose a run to one bad file
            logger.warning("skipping unreadable checkpoint %s: %s", path, err)
    return None


def resume_conflicts(saved: dict, current: dict) -> list[str]:
    """'key: old -> new' for each setting a resumed run cannot change (RESUME_FIXED) that differs between the
    config dict of a checkpoint and the current one. Keys an older checkpoint lacks count as defaults."""
    defaults = _flat(Config().to_dict())
    old, new = {**defaults, **_flat(saved)}, {**defaults, **_flat(current)}
    changed = sorted(k for k in old.keys() | new.keys() if k.startswith(RESUME_FIXED) and old.get(k) != new.get(k))
    return [f"{k}: {_shown(old, k)} -> {_shown(new, k)}" for k in changed]


def _shown(values: dict, key: str) -> str:
    return repr(values[key]) if key in values else "unset"


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
