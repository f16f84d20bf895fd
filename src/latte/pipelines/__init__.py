"""Pipelines: Latte-1 text-to-video (`LattePipeline`) and video export."""

from pathlib import Path

from latte.pipelines.text_to_video import LattePipeline, LattePipelineOutput

DEFAULT_MODEL_DIRNAME = "latte-shapes"


def default_model_path() -> Path:
    """The model folder shipped with the package (`src/latte/assets/latte-shapes`); it may not exist."""
    return Path(__file__).resolve().parent.parent / "assets" / DEFAULT_MODEL_DIRNAME


__all__ = ["LattePipeline", "LattePipelineOutput", "default_model_path"]
