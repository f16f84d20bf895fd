"""Samples rendered during training (`log.sample_every`): the EMA model through the project's pipelines,
written as GIFs to RUN_DIR/samples/ so progress can be watched."""

import logging
from pathlib import Path

import torch

from latte.training.export import scheduler_config
from latte.training.model import load_frozen

logger = logging.getLogger(__name__)

SAMPLES_DIR = "samples"  # in the run folder


class SampleRenderer:
    """Holds the frozen components (loaded once, on rank 0) and renders the EMA model's videos."""

    def __init__(self, cfg, device: torch.device):
        from latte.pipelines.class_conditional import LatteClassPipeline, paper_scheduler
        from latte.pipelines.schedulers import make_scheduler
        from latte.pipelines.text_to_video import LattePipeline

        self.cfg, self.device = cfg, device
        self.vae, text = load_frozen(cfg, device)
        if cfg.model.type == "t2v":
            scheduler = Path(cfg.components) / "scheduler"
            if not scheduler.is_dir():
                raise FileNotFoundError(f"log.sample_every needs a scheduler in {scheduler}")
            config = scheduler_config(Path(cfg.components), cfg.train.prediction_type)
            self.make = lambda ema: LattePipeline(*text, self.vae, ema, make_scheduler(config["_class_name"], config))
        else:
            self.make = lambda ema: LatteClassPipeline(
                self.vae, ema, paper_scheduler(ema.config.learn_sigma, cfg.train.prediction_type)
            )

    @torch.no_grad()
    def __call__(self, ema: torch.nn.Module, step: int) -> list[Path]:
        from latte.pipelines.export import export_video

        cfg, log = self.cfg, self.cfg.log
        pipe = self.make(ema)
        pipe.set_progress_bar_config(disable=True)
        size = dict(
            video_length=cfg.data.num_frames,
            height=cfg.data.size,
            width=cfg.data.size,
            num_inference_steps=log.sample_steps,
            output_type="pt",
            generator=torch.Generator(self.device).manual_seed(cfg.train.seed),
        )
        if cfg.model.type == "t2v":
            names = list(log.sample_prompts) or ["a red circle moving left"]
            videos = pipe(names, **size).frames  # (B, F, 3, H, W) in [0, 1]
        else:
            labels = list(range(min(4, ema.config.num_classes))) or None
            names = [f"class {label}" for label in labels] if labels else ["unconditional"]
            videos = pipe(class_labels=labels, **size).frames
        folder = self.cfg.run_dir / SAMPLES_DIR
        paths = [
            export_video(video.cpu(), folder / f"step-{step:08d}-{i}.gif") for i, video in enumerate(videos)
        ]
        logger.info("step %d: rendered %s to %s", step, ", ".join(map(repr, names)), folder)
        return paths
