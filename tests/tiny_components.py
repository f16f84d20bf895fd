"""Tiny Latte-1-shaped components for CPU tests, built offline in a second or two.

    components = build_tiny_components(seed=0)          # dict for LattePipeline(**components)
    folder = build_tiny_pipeline_folder(tmp_path / "m")  # the same, saved in the diffusers layout

Sizes: T5 encoder width 32 (2 layers), sentencepiece tokenizer trained on TINY_CORPUS, AutoencoderKL with 4
levels (spatial factor 8, like the SD VAE) and 8-16 channels, transformer 2 x (spatial, temporal) blocks of
width 64, patch 2, sample_size 8 (so 64 x 64 pixels by default), 8 output channels (learned sigma), DDIM
scheduler with Latte-1's published config (`variance_type: learned_range`).
"""

from dataclasses import asdict
from pathlib import Path

import torch

from latte.models.latte_t2v import LatteT2VConfig
from latte.testing import random_text_encoder, random_tokenizer, random_vae
from latte.training.export import LATTE1_SCHEDULER  # Latte-1's published scheduler_config.json (DDIM)

TEXT_WIDTH = 32
TINY_CORPUS = [
    "a red circle moves left",
    "a blue square moves right",
    "a green triangle bounces up and down",
    "a yellow star spins slowly",
    "the cat plays piano in the desert",
    "a small cactus with a happy face",
    "waves crash on a rocky beach at sunset",
    "a purple hexagon zooms in",
    "two dogs run across a field",
]
# diffusers' LatteTransformer3DModel config keys; also our LatteT2VConfig.
TINY_TRANSFORMER = {
    **asdict(LatteT2VConfig()),  # Latte-1's config, shrunk
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "num_layers": 2,
    "cross_attention_dim": 64,
    "sample_size": 8,
    "caption_channels": TEXT_WIDTH,
}


def tiny_tokenizer():
    return random_tokenizer(TINY_CORPUS, vocab_size=96)


def tiny_text_encoder(vocab_size: int, seed: int = 0):
    return random_text_encoder(
        vocab_size, TEXT_WIDTH, seed, d_kv=8, num_heads=4, d_ff=64, relative_attention_num_buckets=8, dropout_rate=0.0
    )


def tiny_vae(seed: int = 0):
    return random_vae((8, 8, 16, 16), seed, layers_per_block=1, norm_num_groups=4, sample_size=64)


def tiny_transformer(seed: int = 0, **overrides):
    """Our transformer with random weights at a scale that keeps every path (gates, text, time) active."""
    from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer

    torch.manual_seed(seed)
    model = LatteT2VTransformer(LatteT2VConfig(**{**TINY_TRANSFORMER, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def tiny_scheduler(name: str = "DDIMScheduler", **overrides):
    import diffusers

    return getattr(diffusers, name).from_config({**LATTE1_SCHEDULER, **overrides})


def build_tiny_components(seed: int = 0, scheduler: str = "DDIMScheduler", **transformer_overrides) -> dict:
    """tokenizer, text_encoder, vae, transformer, scheduler: `LattePipeline(**build_tiny_components())`."""
    tokenizer = tiny_tokenizer()
    return dict(
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(len(tokenizer), seed),
        vae=tiny_vae(seed),
        transformer=tiny_transformer(seed, **transformer_overrides),
        scheduler=tiny_scheduler(scheduler),
    )


def build_tiny_pipeline_folder(
    path, seed: int = 0, scheduler: str = "DDIMScheduler", **transformer_overrides
) -> Path:
    """The tiny components saved as a diffusers-layout model folder at `path`; returns the folder."""
    from latte.pipelines import LattePipeline

    return LattePipeline(**build_tiny_components(seed, scheduler, **transformer_overrides)).save_pretrained(
        path
    )


def quiet_pipeline(components: dict, **replaced):
    """`LattePipeline` of `components` (with `replaced` ones swapped in), progress bars off."""
    from latte.pipelines import LattePipeline

    pipe = LattePipeline(**{**components, **replaced})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_frames(pipe, **kwargs):
    """A seeded 2-step call for "a red circle" (two 32 x 32 frames unless `kwargs` say otherwise): the frames."""
    kwargs = {"prompt": "a red circle", "num_inference_steps": 2, "video_length": 2, "height": 32, "width": 32,
              "output_type": "pt", "generator": torch.Generator().manual_seed(0), **kwargs}
    return pipe(**kwargs).frames
