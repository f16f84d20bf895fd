"""Sampling-time extensions of text-to-video, training-free, for any Latte model: long videos, image-to-video
and video extension (used by `LattePipeline.__call__`; see docs/long_videos.md).

Long videos (FreeNoise, Qiu et al. 2023): beyond the transformer's training length W, every temporal block
runs on overlapping windows of W frames (stride W/4), each window with the frame positions 0..W-1 it was
trained on, and a frame's outputs from the windows that hold it are averaged with triangular position weights
(a window's middle frames count most). Unlike FreeNoise, which fuses the attention outputs, the whole
temporal block (attention and MLP) runs per window through its own forward, so any block works unchanged and
offload hooks still fire; the MLP is per token, so the two differ only by fusing before or after it.
Spatial blocks are per frame and run unchanged, W frames at a time, so the activations held at once stay those
of one window. The starting noise of frames W, W + W/4, ... repeats
the noise of the frames one window earlier in a shuffled order ("noise rescheduling"), which keeps the windows
telling one story instead of W-frame episodes of independent noise.

Slow motion (factor S >= 1): the windows are S times longer (S * W frames) and their frame positions are
spread over the trained range 0..W-1 (position interpolation, as used to stretch the context of language
models), so a window's frames hold the motion of one training clip, S times slower. A model trained on clips
that travel a fixed distance (the shipped shapes model: 24 of 64 pixels per clip) thus keeps moving over S
clips' worth of frames, where windows of W frames, each asking for a clip's travel that the frame has no room
for, stand still midway. Up to S * W frames there is one window: all frames attend to each other.

Known frames (image-to-video, video extension): the first K frames' latents are known (VAE-encoded). Before
every denoising step they are replaced by the known latents noised to the step's timestep with the
scheduler's own `add_noise` (always with the same noise), so the other frames see, through temporal
attention, frames consistent with the known ones; after the last step they are set to the clean latents.
During the first quarter of the steps the other frames are also put on the noised path of the last known
frame (a still continuation), so that the coarse content the first steps decide (background, colour, where
the object is) is the known frames'; the motion forms in the remaining steps.

Letters in shape comments: B videos, C latent channels, F frames, K known frames, W window, N patches.
"""

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from latte.acceleration.wrappers import TransformerWrapper
from latte.models.latte_t2v import LatteT2VTransformer
from latte.models.vae import encode_video

logger = logging.getLogger(__name__)

STRIDE_DIVISOR = 4  # window stride = W / 4, as in FreeNoise
# Share of the denoising steps during which the unknown frames are held on the last known frame's noised path:
# without it the first steps choose the background and colours freely and the known frames only steer the
# motion (measured on the shipped model: frame 0 -> 1 jumped by 0.4-0.9 of the pixel range; with a quarter of
# 25 steps held, 0.04, and the motion still follows the prompt; docs/long_videos.md).
HOLD_FRACTION = 0.25


#################################################################################
#                              Temporal windows                                 #
#################################################################################


@dataclass(frozen=True)
class TemporalWindows:
    """Temporal attention over overlapping windows of `length` frames, `stride` frames apart, whose frames sit
    `spacing` positions apart (1 = the model's own speed)."""

    length: int
    stride: int
    spacing: float = 1.0

    @classmethod
    def for_frames(cls, trained_frames: int, frames: int, slow_motion: float = 1) -> "TemporalWindows | None":
        """The windows for a video of `frames` frames, `slow_motion` times slower than the model's motion; None
        when it fits the training length at the model's speed (then the plain forward runs, so short videos
        are unchanged)."""
        if frames <= trained_frames and slow_motion == 1:
            return None
        length = round(trained_frames * slow_motion)
        spacing = (trained_frames - 1) / (length - 1) if length > 1 else 1.0  # positions within 0..W-1
        return cls(length, max(1, length // STRIDE_DIVISOR), spacing)

    def spans(self, frames: int) -> list[tuple[int, int]]:
        """(start, end) of each window; the last one ends at the last frame. One span if the video fits."""
        length = min(self.length, frames)
        starts = list(range(0, frames - length + 1, self.stride))
        if starts[-1] + length < frames:
            starts.append(frames - length)
        return [(s, s + length) for s in starts]

    def fusion_weights(self, frames: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Per window (W,) weights of its outputs: triangular (1 at the ends, highest in the middle), divided
        by each frame's total over its windows so they sum to 1 per frame (exactly 1 for a frame in one
        window)."""
        spans = self.spans(frames)
        length = spans[0][1] - spans[0][0]
        ramp = torch.arange(length, dtype=torch.float64)
        triangle = torch.minimum(ramp + 1, length - ramp)  # (W,)
        total = torch.zeros(frames, dtype=torch.float64)
        for start, end in spans:
            total[start:end] += triangle
        return [(triangle / total[start:end]).to(device=device, dtype=dtype) for start, end in spans]

    def run_blocks(self, model, x: torch.Tensor, t6: torch.Tensor, context, frames: int,
                   temporal: bool = True) -> torch.Tensor:
        """`model.run_blocks` with windowed temporal blocks: tokens (B, F*N, D) frame-major in and out."""
        b, _, d = x.shape
        n = x.shape[1] // frames
        spans = self.spans(frames)
        weights = self.fusion_weights(frames, x.device, x.dtype)
        length = spans[0][1] - spans[0][0]
        table = model.temporal_table(length, x.device, self.spacing).to(x.dtype)[:, None]  # (W, 1, D)
        for i, (spatial, temporal_block) in enumerate(
            zip(model.transformer_blocks, model.temporal_transformer_blocks, strict=True)
        ):
            kv, mask = context.keys_values[i], context.mask
            x = torch.cat([model._run(spatial, x[:, start * n:end * n], t6, n, kv, mask)
                           for start, end in _chunks(frames, length)], dim=1)
            if not temporal:
                continue
            x = x.reshape(b, frames, n, d)
            fused = torch.zeros_like(x)
            for (start, end), weight in zip(spans, weights, strict=True):
                window = x[:, start:end]  # (B, W, N, D)
                if i == 0 and length > 1:  # the model adds the frame table once, before the first temporal block
                    window = window + table
                window = rearrange(window, "b f n d -> b (n f) d")  # patch-major: attention over frames
                out = model._run(temporal_block, window, t6, length)
                fused[:, start:end] += rearrange(out, "b (n f) d -> b f n d", f=length) * weight[:, None, None]
            x = fused.reshape(b, frames * n, d)
        return x

    def reschedule_noise(self, latents: torch.Tensor, generator) -> torch.Tensor:
        """FreeNoise's noise rescheduling of starting noise (B, C, F, h, w): frames [s, s + stride) for
        s = W, W + stride, ... take the noise of frames [s - W, s - W + stride) in a random order (one order
        per video, drawn from its generator)."""
        latents = latents.clone()
        frames = latents.shape[2]
        generators = generator if isinstance(generator, list) else [generator] * latents.shape[0]
        for start in range(self.length, frames, self.stride):
            count = min(self.stride, frames - start)
            source = start - self.length
            for video, g in enumerate(generators):
                order = torch.randperm(count, generator=g, device=g.device if g is not None else "cpu")
                latents[video, :, start:start + count] = latents[video, :, source + order.to(latents.device)]
        return latents


class WindowedTransformer(TransformerWrapper):
    """The transformer with its temporal blocks run over `windows`; called like the transformer itself. Given
    another wrapper (TeaCache, CFGParallel), it runs that wrapper's transformer without it, and warns: the
    wrapper's own phases would not see the windows."""

    def __init__(self, transformer: LatteT2VTransformer | TransformerWrapper, windows: TemporalWindows):
        if isinstance(transformer, TransformerWrapper):
            logger.warning("%s is not applied to long videos or slow motion (temporal windows): this video runs "
                           "without it", type(transformer).__name__)
            transformer = transformer.transformer
        super().__init__(transformer)
        self.windows = windows

    def run_blocks(self, x: torch.Tensor, t6: torch.Tensor, context, frames: int, *options) -> torch.Tensor:
        return self.windows.run_blocks(self.transformer, x, t6, context, frames, *options)


def _chunks(frames: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, frames)) for start in range(0, frames, size)]


#################################################################################
#                                Known frames                                   #
#################################################################################


@dataclass
class FrameCondition:
    """Pixels the generated video must start with. `known` (3, K, H, W) in [-1, 1] become its first K frames;
    `prefix` (3, P, H, W), if any, replaces them in the output (video extension: the whole given clip, so
    the output is the clip followed by the new frames)."""

    known: torch.Tensor
    prefix: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return self.known.shape[1]

    @property
    def added_frames(self) -> int:
        """Frames the generation needs beyond the requested new ones (the context of an extension)."""
        return 0 if self.prefix is None else self.count

    def encode(self, vae, videos: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The known frames' latents (B, C, K, h, w): the VAE posterior's mean, the same for every video."""
        latents = encode_video(vae, self.known[None], sample=False)
        return latents.to(device=device, dtype=dtype).expand(videos, -1, -1, -1, -1)

    def output_video(self, video: torch.Tensor) -> torch.Tensor:
        """Decoded video (B, 3, F, H, W) -> what the caller gets: the clip then the new frames for an
        extension, else the video as it is."""
        if self.prefix is None:
            return video
        prefix = self.prefix[None].to(video).expand(video.shape[0], -1, -1, -1, -1)
        return torch.cat([prefix, video[:, :, self.count:]], dim=2)


class KnownLatents:
    """Keeps the first K frames of the latents on the known frames' noised path; during the first `hold_steps`
    steps the other frames follow the noised path of the last known frame too (see the module docstring)."""

    def __init__(self, known: torch.Tensor, noise: torch.Tensor, hold_steps: int):
        self.known = known  # (B, C, K, h, w) clean
        self.noise = noise  # (B, C, F, h, w) unit noise of every frame, the same at every step
        self.hold_steps = hold_steps

    @classmethod
    def for_steps(cls, known: torch.Tensor, noise: torch.Tensor, steps: int) -> "KnownLatents":
        return cls(known, noise, round(HOLD_FRACTION * steps))

    def noised(self, latents: torch.Tensor, scheduler, timestep: torch.Tensor, step: int) -> torch.Tensor:
        """`latents` at denoising step `step` (timestep `timestep`) with the known frames put back."""
        k, frames = self.known.shape[2], latents.shape[2]
        if step < self.hold_steps:  # the whole video: the known frames, then the last one held still
            held = self.known[:, :, -1:].expand(-1, -1, frames - k, -1, -1)
            return scheduler.add_noise(torch.cat([self.known, held], dim=2), self.noise,
                                       timestep.reshape(1)).to(latents.dtype)
        noisy = scheduler.add_noise(self.known, self.noise[:, :, :k], timestep.reshape(1))
        return torch.cat([noisy.to(latents.dtype), latents[:, :, k:]], dim=2)

    def clean(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.known.to(latents.dtype), latents[:, :, self.known.shape[2]:]], dim=2)


def check_slow_motion(slow_motion, long_video: bool) -> None:
    if isinstance(slow_motion, bool) or not isinstance(slow_motion, (int, float)) or not 1 <= slow_motion < math.inf:
        raise ValueError(f"slow_motion must be a number >= 1 (1 = the model's own speed), got {slow_motion!r}")
    if slow_motion != 1 and not long_video:
        raise ValueError("slow_motion stretches the temporal windows: it needs long_video=True (--long-video windows)")


def read_condition(image, video, height: int, width: int, context_frames: int | None,
                   trained_frames: int) -> FrameCondition | None:
    """The known frames from `image` (first frame) or `video` (its last `context_frames` frames, default half
    the training length), resized to cover height x width and centre-cropped; None when neither is given."""
    if image is not None and video is not None:
        raise ValueError("pass either image (image-to-video) or video (video extension), not both")
    if context_frames is not None and (
        isinstance(context_frames, bool) or not isinstance(context_frames, int) or context_frames < 1
    ):
        raise ValueError(f"context_frames must be an integer >= 1, got {context_frames!r}")
    if image is not None:
        if context_frames is not None:
            raise ValueError("context_frames is for video extension (video=...); an image is one known frame")
        return FrameCondition(fit_frames(read_image(image)[None], height, width))
    if video is None:
        if context_frames is not None:
            raise ValueError("context_frames needs video=... (the clip to extend)")
        return None
    clip = fit_frames(read_frames(video), height, width)  # (3, F, H, W)
    count = min(context_frames or max(1, trained_frames // 2), clip.shape[1])
    return FrameCondition(clip[:, -count:], prefix=clip)


def read_image(image) -> np.ndarray:
    """A PIL image, a path, or an (H, W, 3) array (uint8, or float in [0, 1]) -> (H, W, 3) uint8."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as opened:
                return np.asarray(opened.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {' '.join(str(err).split())}") from None
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    return _as_uint8(image, "image", 3)[0]


def read_frames(video) -> np.ndarray:
    """A video file (.mp4, .gif, ...), a list of PIL images, or an (F, H, W, 3) array -> (F, H, W, 3) uint8."""
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if not path.is_file():
            raise FileNotFoundError(f"video not found: {path}")
        from latte.data.video import read_video

        try:
            return read_video(path, lambda total: list(range(total))).numpy()
        except Exception as err:  # PyAV raises many types (InvalidDataError, ValueError on no frames, ...)
            raise ValueError(f"cannot read video {path}: {' '.join(str(err).split())}") from None
    if isinstance(video, (list, tuple)) and video and all(hasattr(f, "convert") for f in video):
        return np.stack([np.asarray(f.convert("RGB")) for f in video])
    return _as_uint8(video, "video", 4)


def _as_uint8(array, name: str, ndim: int) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a file path, PIL image(s) or an array, got {type(array).__name__}")
    array = array[None] if array.ndim == 3 and ndim == 3 else array
    shape = "(height, width, 3)" if ndim == 3 else "(frames, height, width, 3)"
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"{name} array must be {shape}, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(f"a float {name} array must hold values in [0, 1] (or pass uint8)")
    return (array * 255).round().astype(np.uint8)


def fit_frames(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (3, F, height, width) float in [-1, 1]: scaled to cover the size, centre crop."""
    x = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (F, 3, H, W)
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        x = x[..., top:top + height, left:left + width]
    return x.clamp(-1, 1).permute(1, 0, 2, 3).contiguous()
