"""Checks made before and during a generation, so that a request that cannot work fails at once with one line,
and a run whose latents turn NaN or infinite stops before anything is decoded.

- `check_timesteps`: step counts and custom timesteps within the scheduler's training range;
- `GenerationLimits` + `check_work_size`: frame count and size ceilings, and a memory estimate compared with
  what the device has free (`pipe.limits`; raise a ceiling or set `max_memory_fraction=None` to try anyway);
- `check_finite`: the finite check on the latents (cheap: one reduction every `FINITE_CHECK_EVERY` steps).
"""

import math
import operator
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import torch

FINITE_CHECK_EVERY = 10  # steps between finite checks on the latents (and always after the last one)
GiB = 2**30

# Memory model, in tensors alive at the peak (the shipped model on CPU, 16 x 256 x 256 and 8 x 512 x 512 with
# guidance: measured peaks within 0.9-1.1x of the estimate). Attention goes through fused SDPA kernels, so no
# tokens x tokens score matrix is counted.
TOKEN_COPIES = 16  # per token, of the transformer width: residual, LN, q/k/v, attention out, 4x MLP hidden, ...
LATENT_COPIES = 8  # latents, the guidance batch, model output, scheduler history (multistep solvers)
VAE_COPIES = 3  # at full resolution, per decoded frame, of the widest full-resolution channel count
OUTPUT_COPIES = 4  # decoded float32 frames: the decode output, [0, 1] scaling, layout change, numpy copy


class NonFiniteLatentsError(ValueError):
    """The latents became NaN or infinite during denoising; nothing was decoded."""


@dataclass
class GenerationLimits:
    """Ceilings checked before any work (`pipe.limits`). Raise one to try a bigger job anyway.

    max_frames: frames per video. max_size: pixels per side. max_memory_fraction: the estimated peak memory
    must fit this fraction of the device's free memory (CUDA: `torch.cuda.mem_get_info`; CPU: MemAvailable);
    None skips the memory check.
    """

    max_frames: int = 1024
    max_size: int = 8192
    max_memory_fraction: float | None = 1.0


def check_guidance(guidance_scale) -> float:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, Real) or not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number (<= 1 turns guidance off), got {guidance_scale!r}")
    return float(guidance_scale)


def check_timesteps(scheduler, num_inference_steps, timesteps) -> list[int] | None:
    """Fail before the first step on what the scheduler cannot run: a step count outside
    1..num_train_timesteps (DPM-Solver++ beyond it produces NaN, or an IndexError minutes later), or custom
    timesteps that are empty, not integers, not strictly descending or outside 0..num_train_timesteps-1.
    Returns the custom timesteps as a list of ints (None when not given)."""
    name, limit = type(scheduler).__name__, scheduler.config.num_train_timesteps
    if timesteps is None:
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or not 1 <= num_inference_steps <= limit:
            raise ValueError(f"num_inference_steps must be an integer in 1..{limit} (the {name}'s "
                             f"num_train_timesteps), got {num_inference_steps!r}")
        return None
    try:
        values = [operator.index(t.item() if isinstance(t, torch.Tensor) else t) for t in timesteps]
    except (TypeError, ValueError, RuntimeError):
        values = None
    if not values or any(isinstance(t, bool) for t in timesteps):
        raise ValueError(f"timesteps must be a non-empty list of integers, got {timesteps!r:.80}")
    if any(not 0 <= t < limit for t in values) or any(a <= b for a, b in zip(values, values[1:])):
        raise ValueError(f"timesteps must be strictly descending integers in 0..{limit - 1} (the {name}'s "
                         f"num_train_timesteps), got {values!r:.80}")
    return values


def available_memory(device: torch.device) -> int | None:
    """Free bytes on `device`: CUDA's free memory, the CPU's MemAvailable; None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return None


def vae_full_resolution_channels(vae) -> int:
    """Channels alive at full resolution while the VAE decodes: the last up block's and its upsampled input."""
    channels = list(vae.config.block_out_channels)
    return channels[0] + (channels[1] if len(channels) > 1 else 0)


def estimate_memory(
    *, videos: int, model_batch: int, frames: int, height: int, width: int, scale: int, patch: int,
    latent_channels: int, model_width: int, model_bytes: int, vae, decode_chunk: int | None, decoded: bool,
) -> dict[str, int]:
    """Rough peak bytes of each phase: `denoising` (latents + transformer activations) and `decoding` (one
    VAE chunk + all decoded frames). `model_batch` is the transformer batch (videos x 2 with guidance)."""
    h, w = height // scale, width // scale
    latents = LATENT_COPIES * model_batch * latent_channels * frames * h * w * 4
    tokens = model_batch * frames * (h // patch) * (w // patch)
    phases = {"denoising": latents + TOKEN_COPIES * tokens * model_width * model_bytes}
    if decoded:
        chunk = videos * frames if decode_chunk is None else min(decode_chunk, videos * frames)
        tile_h, tile_w = height, width
        if getattr(vae, "use_slicing", False):
            chunk = 1
        if getattr(vae, "use_tiling", False):
            tile = getattr(vae, "tile_sample_min_size", height)
            tile_h, tile_w = min(height, tile), min(width, tile)
        vae_bytes = next(vae.parameters()).element_size()
        per_frame = VAE_COPIES * vae_full_resolution_channels(vae) * tile_h * tile_w * vae_bytes
        output = OUTPUT_COPIES * videos * frames * 3 * height * width * 4
        phases["decoding"] = latents + chunk * per_frame + output
    return phases


def check_work_size(
    limits: GenerationLimits, frames: int, height: int, width: int, phases: dict[str, int],
    device: torch.device, resident: int = 0,
) -> None:
    """One-line ValueError when the request passes a ceiling of `limits` or its estimated peak (plus
    `resident` bytes of weights that will be moved in) does not fit the device's free memory."""
    if frames > limits.max_frames:
        raise ValueError(f"video_length={frames} frames is above the limit of {limits.max_frames}: ask for fewer "
                         "frames, or raise pipe.limits.max_frames (CLI: --max-frames)")
    if max(height, width) > limits.max_size:
        raise ValueError(f"{height} x {width} pixels is above the limit of {limits.max_size} per side: ask for a "
                         "smaller size, or raise pipe.limits.max_size (CLI: --max-size)")
    if limits.max_memory_fraction is None:
        return
    free = available_memory(device)
    if free is None:
        return
    needed = max(phases.values()) + resident
    allowed = free * limits.max_memory_fraction
    if needed > allowed:
        detail = ", ".join(f"{name} {size / GiB:,.1f}" for name, size in phases.items())
        raise ValueError(
            f"this generation needs about {needed / GiB:,.1f} GiB on {device} ({detail} GiB) but "
            f"{allowed / GiB:,.1f} GiB is available: use fewer frames, videos or pixels (or "
            "enable_vae_slicing / decode_chunk_size for the decoding), or set pipe.limits.max_memory_fraction="
            "None (CLI: --no-memory-check) to try anyway"
        )


def check_finite(latents: torch.Tensor, step: int, total: int, explain) -> None:
    """NonFiniteLatentsError when `latents` hold NaN or inf after step `step` (1-based) of `total`;
    `explain()` gives the likely cause (called only then)."""
    if not bool(torch.isfinite(latents).all()):
        raise NonFiniteLatentsError(
            f"the latents became NaN or infinite by step {step} of {total}; nothing was decoded. {explain()}"
        )
