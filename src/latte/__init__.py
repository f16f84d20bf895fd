"""latte: Latent Diffusion Transformer for video generation.

The public classes are imported on first use, so `import latte.cli` (the `latte` command) starts without torch
and can set up the process (OpenMP waiting, logging) before torch loads.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Latte": "latte.models.latte",
    "LatteConfig": "latte.models.latte",
    "LatteT2VConfig": "latte.models.latte_t2v",
    "LatteT2VTransformer": "latte.models.latte_t2v",
    "LatteClassPipeline": "latte.pipelines.class_conditional",
    "LattePipeline": "latte.pipelines.text_to_video",
    "LattePipelineOutput": "latte.pipelines.text_to_video",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'latte' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
