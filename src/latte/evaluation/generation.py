"""Generated videos for an evaluation, made here (`latte eval ... --model DIR [--prompt TEXT] --fake OUT`).

A text-to-video folder (`LattePipeline`) makes every video from `--prompt`, or with `--real synthetic` video j
from the caption of clip j of the shapes domain's generated-side draw (see `latte.evaluation.protocol`);
a class-conditional or unconditional
folder (`LatteClassPipeline`, e.g. `latte convert` of the paper's checkpoints) draws each video's class label
uniformly, as the paper's `sample_ddp.py` does, but seeded: label of video j = `default_rng([seed, j])`.
Video j has seed `seed + j` (its name carries it, and its label), so any one can be made again alone.

The videos are written as PNG frame folders (no lossy re-encoding) in chunks, `OUT/videos-000000`,
`OUT/videos-000016`, ..., each written whole by the output rule, so a killed run resumes from the chunks already
there; `OUT/generation.json` holds the plan, and a run with another plan refuses the folder. Under torchrun the
chunks are dealt to the ranks.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from latte.evaluation.metrics import shard

logger = logging.getLogger(__name__)

PLAN_FILE = "generation.json"


def _barrier() -> None:
    if shard()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def is_class_model(model: str | os.PathLike) -> bool:
    """A `LatteClassPipeline` folder (class-conditional or unconditional), rather than a text-to-video one."""
    from latte.pipelines.class_conditional import PIPELINE_CLASS_NAME

    try:
        return json.loads((Path(model) / "model_index.json").read_text()).get("_class_name") == PIPELINE_CLASS_NAME
    except (OSError, ValueError):
        return False


def class_label(seed: int, index: int, num_classes: int) -> int:
    return int(np.random.default_rng([seed, index]).integers(num_classes))


class ClassSampler:
    """Chunks of videos from a `LatteClassPipeline` folder, loaded once."""

    def __init__(self, model: str | os.PathLike, device: str, steps: int | None, guidance: float | None):
        from latte.pipelines.class_conditional import PAPER_STEPS, LatteClassPipeline

        self.pipe = LatteClassPipeline.from_pretrained(model).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device, self.steps, self.guidance = device, steps or PAPER_STEPS, guidance
        self.num_classes = self.pipe.transformer.config.num_classes

    def write(self, target: Path, seed: int, first: int, count: int) -> None:
        import torch

        from latte.outputs import write_folder
        from latte.pipelines.export import export_video

        indices = range(first, first + count)
        labels = [class_label(seed, j, self.num_classes) for j in indices] if self.num_classes else None
        videos = self.pipe(labels, num_videos_per_label=1 if labels else count, num_inference_steps=self.steps,
                           guidance_scale=self.guidance, output_type="np",
                           generator=[torch.Generator(self.device).manual_seed(seed + j) for j in indices]).frames

        def fill(tmp: Path) -> None:
            for k, (j, video) in enumerate(zip(indices, videos)):
                label = "" if labels is None else f"-class{labels[k]:03d}"
                export_video(video, tmp / f"{j:06d}{label}-s{seed + j}")

        write_folder(target, fill)


class TextSampler:
    """Chunks of videos from a `LattePipeline` folder, loaded once: video j from prompt j with seed `seed + j`,
    `batch_size` videos per pipeline call."""

    def __init__(self, model: str | os.PathLike, prompts: list[str], device: str, steps: int | None,
                 guidance: float | None, scheduler: str | None = None, teacache: float = 0.0, batch_size: int = 4):
        from latte.pipelines import LattePipeline
        from latte.pipelines.schedulers import make_scheduler

        self.pipe = LattePipeline.from_pretrained(model).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        if scheduler is not None:
            self.pipe.scheduler = make_scheduler(scheduler, self.pipe.scheduler.config)
        if teacache:
            from latte.acceleration.cache import TeaCache

            self.pipe.transformer = TeaCache(self.pipe.transformer, threshold=teacache)
        self.prompts, self.device, self.batch_size = prompts, device, batch_size
        self.steps, self.guidance = steps, guidance  # None: the folder's defaults, as `latte generate`

    def write(self, target: Path, seed: int, first: int, count: int) -> None:
        import torch

        from latte.outputs import write_folder
        from latte.pipelines.export import export_video

        videos = []
        for start in range(first, first + count, self.batch_size):
            indices = range(start, min(start + self.batch_size, first + count))
            generators = [torch.Generator(self.device).manual_seed(seed + j) for j in indices]
            videos += list(self.pipe([self.prompts[j] for j in indices], num_inference_steps=self.steps,
                                     guidance_scale=self.guidance, output_type="np", generator=generators).frames)

        def fill(tmp: Path) -> None:
            for j, video in zip(range(first, first + count), videos):
                export_video(video, tmp / f"{j:06d}-s{seed + j}")

        write_folder(target, fill)


def prompts_digest(prompts: list[str]) -> str:
    """What a generation plan records of per-video prompts: their count and a hash of them all."""
    return f"{len(prompts)} prompts, sha256 {hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]}"


def generate_videos(folder: str | os.PathLike, model: str | os.PathLike, prompt: str | list[str] | None,
                    count: int, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                    device: str | None = None, chunk: int = 16, overwrite: bool = False,
                    scheduler: str | None = None, teacache: float = 0.0) -> dict:
    """Generate the `count` videos into `folder` (those not there yet); returns the plan. `prompt`: one prompt
    for every video, or a list of `count` (video j from prompt j); None for class and unconditional models.
    `scheduler` (a diffusers class name) and `teacache` (a threshold) change a text-to-video model's sampling."""
    from latte.outputs import write_folder

    folder = Path(folder)
    classes = is_class_model(model)
    prompts = prompt if isinstance(prompt, list) else [prompt] * count
    if len(prompts) != count:
        raise ValueError(f"{len(prompts)} prompts for {count} videos: give one prompt, or one per video")
    if classes and (scheduler or teacache):
        raise ValueError(f"--model {model} is a class-conditional or unconditional model: --scheduler and "
                         "--teacache apply to text-to-video models")
    plan = {"model": str(model), "prompt": prompts_digest(prompt) if isinstance(prompt, list) else prompt,
            "count": count, "seeds": [seed, seed + count - 1],
            "labels": "uniform, seeded" if classes else None, "steps": steps, "guidance": guidance, "chunk": chunk,
            **({"scheduler": scheduler} if scheduler else {}), **({"teacache": teacache} if teacache else {})}
    try:
        existing = json.loads((folder / PLAN_FILE).read_text())
    except (OSError, ValueError):
        existing = None
    if existing is not None and existing != plan and not overwrite:
        key = next((k for k in plan if existing.get(k) != plan[k]), None)
        if key is None:
            raise ValueError(f"--fake {folder}: {PLAN_FILE} was written by another latte version; name a new "
                             "folder, or pass --overwrite to replace it")
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
    sampler = None
    for k in starts[rank::world]:
        target = folder / f"videos-{k:06d}"
        if target.is_dir():  # a chunk is there only when complete
            continue
        if sampler is None:
            sampler = (ClassSampler(model, device or "cpu", steps, guidance) if classes
                       else TextSampler(model, prompts, device or "cpu", steps, guidance, scheduler, teacache))
        sampler.write(target, seed, k, min(chunk, count - k))
    _barrier()
    return plan
