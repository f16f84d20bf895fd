"""Generated videos for an evaluation, made here (`latte eval ... --model DIR --prompt TEXT --fake OUT`).

Video j has seed `seed + j`, so any one can be made again alone with `latte generate`. The videos are written as
PNG frame folders (no lossy re-encoding) in chunks, `OUT/videos-000000`, `OUT/videos-000016`, ..., each written
whole by the output rule, so a killed run resumes from the chunks already there; `OUT/generation.json` holds
the plan, and a run with another plan refuses the folder. Under torchrun the chunks are dealt to the ranks.
"""

import json
import logging
import os
from pathlib import Path

from latte.evaluation.metrics import shard

logger = logging.getLogger(__name__)

PLAN_FILE = "generation.json"


def _barrier() -> None:
    if shard()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def generate_videos(folder: str | os.PathLike, model: str | os.PathLike, prompt: str, count: int, seed: int = 0,
                    steps: int | None = None, guidance: float | None = None, device: str | None = None,
                    chunk: int = 16, overwrite: bool = False) -> dict:
    """Generate the `count` videos into `folder` (those not there yet); returns the plan."""
    from latte.cli.generate import GenerateOptions, generate
    from latte.outputs import write_folder

    folder = Path(folder)
    plan = {"model": str(model), "prompt": prompt, "count": count, "seeds": [seed, seed + count - 1],
            "steps": steps, "guidance": guidance, "chunk": chunk}
    try:
        existing = json.loads((folder / PLAN_FILE).read_text())
    except (OSError, ValueError):
        existing = None
    if existing is not None and existing != plan and not overwrite:
        key = next(k for k in plan if existing.get(k) != plan[k])
        raise ValueError(f"--fake {folder} holds videos of another generation ({key} {json.dumps(existing.get(key))}"
                         f", this run {json.dumps(plan[key])}); name a new folder, or pass --overwrite to replace it")
    rank, world = shard()
    if existing != plan and rank == 0:
        write_folder(folder, lambda tmp: (tmp / PLAN_FILE).write_text(json.dumps(plan) + "\n"), overwrite)
    _barrier()
    starts = list(range(0, count, chunk))
    done = sum((folder / f"videos-{k:06d}").is_dir() for k in starts)
    if done and rank == 0:
        logger.info("%s: %d of %d chunks already there, resuming", folder, done, len(starts))
    for k in starts[rank::world]:
        target = folder / f"videos-{k:06d}"
        if not target.is_dir():  # a chunk is there only when complete
            generate(GenerateOptions(prompts=[prompt], output=target, model=model, seed=seed + k,
                                     num_videos=min(chunk, count - k), format="png", device=device, steps=steps,
                                     guidance=guidance))
    _barrier()
    return plan
