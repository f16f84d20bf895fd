"""Tiny frozen components (VAE, T5 encoder, tokenizer, scheduler) with random weights, for tests and demos.

They make the whole training path runnable in seconds; they are not useful models of images or language.
"""

import os
from pathlib import Path

import torch

from latte.models.io import write_json

TINY_SCHEDULER = {  # Latte-1's scheduler settings (reference section 3), for the exported pipeline
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "timestep_spacing": "leading",
    "variance_type": "learned_range",
}


def write_tiny_components(
    folder: str | os.PathLike, captions: list[str], seed: int = 0, text_dim: int = 32
) -> Path:
    """Write vae/ (downsample 2, 4 latent channels), text_encoder/ (1-layer T5, width `text_dim`), tokenizer/
    (sentencepiece trained on `captions`) and scheduler/ into `folder`."""
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    from latte.models.text_encoder import train_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    vae.save_pretrained(str(folder / "vae"))
    tokenizer = train_tokenizer(captions, folder / "tokenizer", vocab_size=128)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=text_dim,
        d_kv=8,
        d_ff=2 * text_dim,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    T5EncoderModel(config).save_pretrained(str(folder / "text_encoder"))
    write_json(folder / "scheduler" / "scheduler_config.json", TINY_SCHEDULER)
    return folder
