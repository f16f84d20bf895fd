"""Write one generated video to disk: mp4 (H.264 via PyAV), gif, or a folder of PNG frames. Always atomic."""

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from latte.outputs import check_file_target, check_folder_target, write_file, write_folder

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif")  # anything without a suffix (or an existing folder) is a PNG folder
MAX_CRF = 51  # H.264's worst quality
MIN_FPS, MAX_FPS = 0.1, 1000.0


def as_uint8_frames(frames) -> np.ndarray:
    """One video as (F, H, W, 3) uint8.

    Accepts (F, H, W, 3) numpy arrays (uint8, or float in [0, 1]), (F, 3, H, W) tensors in [0, 1] (uint8
    tensors as they are), or a list of PIL images.
    """
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("no frames to export: got an empty list")
        frames = np.stack(
            [np.asarray(f.convert("RGB")) if hasattr(f, "convert") else np.asarray(f) for f in frames]
        )
    elif isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"a frame tensor must be (frames, 3, height, width), got {tuple(frames.shape)}")
        frames = frames.detach().cpu().permute(0, 2, 3, 1)
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (frames, height, width, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
    return frames


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early, naming the path, when `export_video(frames, path)` would: an unsupported suffix, a folder
    that holds files latte did not write (without `overwrite`), or no write permission."""
    if str(path) == "":
        raise ValueError("the output path is empty (an unset shell variable?): name an .mp4, .gif or a folder")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return check_file_target(path)
    if suffix and not path.is_dir():
        raise ValueError(f"unsupported video format {path.suffix!r} for {path}: use .mp4, .gif or a folder")
    if path.is_file():
        raise ValueError(f"{path} is a file: a PNG frame folder needs a folder path (or use .mp4 / .gif)")
    return check_folder_target(path, overwrite)


def export_video(
    frames, path: str | os.PathLike, fps: float = 8, quality: float = 8.0, overwrite: bool = False
) -> Path:
    """Write `frames` (one video, see `as_uint8_frames`) to `path` and return it.

    The suffix picks the format: `.mp4` (H.264, yuv420p), `.gif` (looping), no suffix or an existing folder:
    PNG frames `frame_0000.png`, ... `quality` (0 worst .. 10 best) sets the mp4's constant rate factor,
    CRF = 51 - 4.1 * quality (8 -> CRF 18, visually lossless). The file (or folder) appears only when
    complete; an existing frame folder is replaced only if latte wrote it, or with `overwrite=True` (the
    output rule of `latte.outputs`).
    """
    path = check_output_path(path, overwrite)
    suffix = path.suffix.lower()
    check_fps(fps)
    if not 0 <= quality <= 10:
        raise ValueError(f"quality must be in [0, 10], got {quality}")
    frames = as_uint8_frames(frames)
    if suffix == ".mp4":
        return write_file(path, lambda tmp: _write_mp4(frames, tmp, fps, quality))
    if suffix == ".gif":
        return write_file(path, lambda tmp: _write_gif(frames, tmp, fps))
    return write_folder(path, lambda tmp: _write_png_frames(frames, tmp), overwrite)


def check_fps(fps: float) -> float:
    """`fps` if a video container can hold it: 0.1 .. 1000 frames per second (a GIF stores whole
    milliseconds per frame, at most 65535)."""
    if not (isinstance(fps, (int, float)) and MIN_FPS <= fps <= MAX_FPS):
        raise ValueError(f"fps must be between {MIN_FPS} and {MAX_FPS}, got {fps!r}")
    return fps


def _write_mp4(frames: np.ndarray, path: str, fps: float, quality: float) -> None:
    import av

    # yuv420p halves the chroma resolution, so H.264 needs even sides: repeat the last row/column if odd.
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(round(MAX_CRF - 4.1 * quality))}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def _write_gif(frames: np.ndarray, path: str, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )


def _write_png_frames(frames: np.ndarray, folder: Path) -> None:
    from PIL import Image

    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.png")
