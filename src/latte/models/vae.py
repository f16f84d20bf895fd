"""Frame-wise video encoding and decoding around an image `AutoencoderKL` (Latte's frozen SD VAE).

Videos are (B, 3, F, H, W) in [-1, 1]; latents are (B, C_latent, F, H / s, W / s) already multiplied by the
VAE's `scaling_factor` (0.18215 for the SD VAE), with s = `vae_scale_factor(vae)` (8 for the SD VAE).
"""

import logging
import os
from pathlib import Path

import torch
from einops import rearrange

from latte.models.io import WEIGHTS_NAME, find_weights, import_torchao_quietly, library_bars_off

SD_VAE_SCALE = 0.18215  # Stable Diffusion VAE latent scaling, used when a config does not name one


class _EmptyFloat32Notice(logging.Filter):
    """diffusers' `ModelMixin.to(dtype)` warns "There are modules in AutoencoderKL that should be kept in
    float32: []" on every cast, also when that list is empty (nothing is kept in float32): drop only that
    empty notice, so `pipe.to(torch.bfloat16)` is quiet and a real list still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("should be kept in float32: []" in message and message.startswith("There are modules in"))


def _quiet_empty_float32_notice() -> None:
    source = logging.getLogger("diffusers.models.modeling_utils")  # the logger of ModelMixin.to
    if not any(isinstance(f, _EmptyFloat32Notice) for f in source.filters):
        source.addFilter(_EmptyFloat32Notice())


_quiet_empty_float32_notice()


def vae_scale_factor(vae) -> int:
    """Spatial downsampling of the VAE."""
    return downsampling(vae.config.block_out_channels)


def downsampling(block_out_channels) -> int:
    """Spatial downsampling of an AutoencoderKL with these levels (its config's `block_out_channels`):
    2 ** (number of resolution levels - 1)."""
    return 2 ** (len(block_out_channels) - 1)


def scaling_factor(vae) -> float:
    return getattr(vae.config, "scaling_factor", None) or SD_VAE_SCALE


def load_vae(
    folder: str | os.PathLike, torch_dtype: torch.dtype | None = None, variant: str | None = None,
    use_safetensors: bool | None = None,
):
    """diffusers `AutoencoderKL` from a folder (`config.json` + weights), with errors that name the file;
    `variant` and `use_safetensors` as in diffusers."""
    import_torchao_quietly()  # diffusers' model classes import it, loudly, on their first import
    from diffusers import AutoencoderKL
    from diffusers.utils import is_accelerate_available

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"missing file {folder / 'config.json'}")
    find_weights(folder, WEIGHTS_NAME, variant, use_safetensors)
    try:
        with library_bars_off():
            vae = AutoencoderKL.from_pretrained(
                str(folder), torch_dtype=torch_dtype, variant=variant, use_safetensors=use_safetensors,
                # diffusers asks for accelerate's low-memory loading by default and, without accelerate, warns
                # in seven lines on every load; measured, accelerate saves nothing on Latte's models.
                low_cpu_mem_usage=is_accelerate_available(),
            )
        return vae.eval()
    except Exception as err:  # diffusers raises many types (OSError, SafetensorError, ...) for a bad file
        raise ValueError(f"cannot load the VAE in {folder}: {' '.join(str(err).split())}") from err


def _check_video(video: torch.Tensor, name: str, channels: int) -> None:
    if video.ndim != 5 or video.shape[1] != channels:
        raise ValueError(
            f"{name} must be (batch, {channels}, frames, height, width), got {tuple(video.shape)}"
        )


@torch.no_grad()
def encode_video(
    vae,
    video: torch.Tensor,
    generator: torch.Generator | None = None,
    sample: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Video (B, 3, F, H, W) in [-1, 1] -> scaled latents (B, C_latent, F, h, w).

    `sample=True` draws from the posterior (the training recipe); False takes its mean. Frames are encoded
    `chunk_size` at a time (all at once by default): each frame is independent, chunks only bound memory.
    """
    _check_video(video, "video", 3)
    frames = rearrange(video, "b c f h w -> (b f) c h w").to(device=vae.device, dtype=vae.dtype)
    chunk_size = chunk_size or frames.shape[0]
    latents = []
    for chunk in frames.split(chunk_size):
        posterior = vae.encode(chunk).latent_dist
        latents.append(posterior.sample(generator=generator) if sample else posterior.mode())
    latents = torch.cat(latents) * scaling_factor(vae)  # (B*F, C_latent, h, w)
    return rearrange(latents, "(b f) c h w -> b c f h w", b=video.shape[0])


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Scaled latents (B, C_latent, F, h, w) -> video (B, 3, F, H, W) float32, about [-1, 1] (not clamped).

    Frames are decoded `chunk_size` at a time over the flattened (B*F) frames, as diffusers does.
    """
    _check_video(latents, "latents", vae.config.latent_channels)
    z = rearrange(latents, "b c f h w -> (b f) c h w") * (1 / scaling_factor(vae))  # diffusers' arithmetic
    z = z.to(device=vae.device, dtype=vae.dtype)
    chunk_size = chunk_size or z.shape[0]
    frames = torch.cat([vae.decode(chunk).sample for chunk in z.split(chunk_size)])  # (B*F, 3, H, W)
    return rearrange(frames.float(), "(b f) c h w -> b c f h w", b=latents.shape[0])
