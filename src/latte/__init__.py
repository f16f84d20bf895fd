"""latte: Latent Diffusion Transformer for video generation."""

from latte.models.latte import Latte, LatteConfig
from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer
from latte.pipelines.class_conditional import LatteClassPipeline
from latte.pipelines.text_to_video import LattePipeline, LattePipelineOutput

__all__ = ["LatteT2VConfig", "LatteT2VTransformer", "LattePipeline", "LattePipelineOutput", "Latte",
           "LatteConfig", "LatteClassPipeline"]
__version__ = "0.1.0"
