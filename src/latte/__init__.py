"""latte: Latent Diffusion Transformer for video generation."""

from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer

__all__ = ["LatteT2VConfig", "LatteT2VTransformer"]
__version__ = "0.1.0"
