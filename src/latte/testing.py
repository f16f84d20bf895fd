"""Random-weight Latte-1 components of any size, built offline in seconds: for tests and benchmarks.

Each builder is seeded, so two calls with the same arguments give the same weights. Nothing here is trained
except the sentencepiece tokenizer, which is fitted on the given corpus (a T5 tokenizer needs a vocabulary).
"""

import functools
import tempfile
from pathlib import Path

import torch


@functools.lru_cache(maxsize=8)
def _tokenizer_folder(corpus: tuple[str, ...], vocab_size: int) -> Path:
    """Fit the sentencepiece model once per process and corpus."""
    from latte.models.text_encoder import train_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="latte-random-tokenizer-"))
    train_tokenizer(list(corpus), folder, vocab_size=vocab_size)
    return folder


def random_tokenizer(corpus: list[str], vocab_size: int):
    """A T5Tokenizer whose sentencepiece model is fitted on `corpus`."""
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(_tokenizer_folder(tuple(corpus), vocab_size)))


def random_text_encoder(vocab_size: int, width: int, seed: int = 0, **config):
    """A T5 v1.1-style encoder (gated GELU) of `width`, 2 layers unless `config` says otherwise."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(**{
        "vocab_size": vocab_size, "d_model": width, "d_kv": 64, "num_heads": 8, "num_layers": 2,
        "d_ff": 2 * width, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False, "use_cache": False,
        "pad_token_id": 0, "eos_token_id": 1, **config,
    })  # fmt: skip
    return T5EncoderModel(config).eval()


def random_vae(block_out_channels: tuple[int, ...], seed: int = 0, **config):
    """An SD-style AutoencoderKL (4 latent channels, downsampling 2 ** (levels - 1))."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    levels = len(block_out_channels)
    return AutoencoderKL(**{
        "latent_channels": 4, "block_out_channels": block_out_channels,
        "down_block_types": ("DownEncoderBlock2D",) * levels, "up_block_types": ("UpDecoderBlock2D",) * levels,
        **config,
    }).eval()  # fmt: skip
