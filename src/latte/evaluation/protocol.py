"""The evaluation protocols (presets), the data they read, and which clip of which video each one uses.

Every knob of a protocol is a field of `Protocol` and goes into the report. Every random choice (which real
videos, each real clip's start frame) comes from the run's seed, and each video's start frame depends only on
(seed, its index in the sorted listing): the same clips whatever the batch size or the order of the work.

Data: a folder of videos (any format PyAV reads, found recursively, sorted by path), or a folder of frame
folders (`root/<video>/<frame>.jpg|png`, the Latte / StyleGAN-V layout, or deeper: every folder that directly
holds images is one video; videos sorted by path, frames in sorted name order), or `synthetic[:SPLIT[:SEED]]`:
clips of the shapes domain (`latte.data.synthetic`) rendered on the fly, no files (`./synthetic` names a folder).
"""

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latte.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, _files, read_video

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """Which clips are compared, and how their frames are prepared."""

    name: str
    num_videos: int = 2048  # real and generated videos each (FVD, FID); generated samples per repeat (IS)
    num_frames: int = 16
    real_stride: int = 3  # every k-th frame of a real video
    fake_stride: int = 1
    real_selection: str = "random"  # "random": a seeded sample of the real videos; "first": sorted order
    min_real_frames: str = "frames*stride"  # real videos shorter than num_frames * real_stride are left out
    size: int | None = 256  # frames centre-cropped to a square and LANCZOS-resized to this; None: as they are
    splits: int = 1  # IS only: the score's splits of each repeat
    repeats: int = 1  # IS only: independent sets of num_videos samples (mean and std over them)
    eps: float = 0.0  # IS only: added to the probabilities before the logarithm
    shuffle: int | None = None  # IS only: the samples are shuffled with numpy RandomState(shuffle) before splitting

    def real_side(self) -> dict:
        """The knobs that decide the real statistics: a saved statistics file must match them."""
        keys = ("num_videos", "num_frames", "real_stride", "real_selection", "min_real_frames", "size")
        return {k: getattr(self, k) for k in keys}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    # Latte's tools (fvd2048_16f as its fork sets it): 2048 real videos at random (seeded here), real stride 3
    # (6 for Taichi-HD), generated stride 1, frames centre-cropped and LANCZOS-resized to 256.
    "latte-paper": Protocol("latte-paper"),
    # StyleGAN-V: the first N videos in sorted order, one stride for both sides, frames as prepared.
    "stylegan-v": Protocol("stylegan-v", real_stride=1, real_selection="first", size=None),
    # The shapes domain (`--real synthetic`, the shipped detector): 256 clips of 16 frames at their 64 px.
    "shapes": Protocol("shapes", num_videos=256, real_stride=1, real_selection="first", size=None),
}
IS_PRESETS = {
    # TGANv2: 10 independent loops of 2048 samples, each scored with one split, eps 1e-20.
    "tgan": Protocol("tgan", real_stride=1, size=None, splits=1, repeats=10, eps=1e-20),
    # StyleGAN-V / Latte's isv2048_ucf: 2048 samples shuffled with RandomState(42) (a constant of that protocol,
    # not a run's random choice), in 10 splits, no eps.
    "stylegan-v": Protocol("stylegan-v", real_stride=1, size=None, splits=10, repeats=1, shuffle=42),
}


def make_protocol(metric: str, preset: str, **overrides) -> Protocol:
    """A preset with the given knobs (None: the preset's) replaced; one shared stride under `stylegan-v`."""
    presets = IS_PRESETS if metric == "is" else PRESETS
    if preset not in presets:
        raise ValueError(f"--preset {preset!r} is not a {metric.upper()} preset; choose from {', '.join(presets)}")
    base = presets[preset]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if preset == "stylegan-v" and metric != "is" and "real_stride" in changes:
        changes.setdefault("fake_stride", changes["real_stride"])  # StyleGAN-V shares one subsample factor
    if "size" in changes and changes["size"] == 0:
        changes["size"] = None  # --size 0: frames as they are
    return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class Clip:
    """One clip: frames `start, start + stride, ...` of video `path` (a file or a frame folder)."""

    path: Path
    start: int
    stride: int
    num_frames: int

    def indices(self) -> list[int]:
        return [self.start + k * self.stride for k in range(self.num_frames)]


class VideoSource:
    """The videos of a folder, sorted: video files (found recursively), else frame folders."""

    def __init__(self, root: str | os.PathLike, flag: str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{flag} {self.root}: no such folder (a folder of videos, a folder of frame "
                                    "folders, or for --real a statistics .npz)")
        self.videos = _files(self.root, VIDEO_SUFFIXES)
        self.frame_folders = [] if self.videos else _frame_folders(self.root)
        self.items = self.videos or self.frame_folders
        if not self.items:
            raise ValueError(f"{flag} {self.root}: no videos ({', '.join(VIDEO_SUFFIXES)}) and no frame folders "
                             f"(<video>/<frame>{'|'.join(IMAGE_SUFFIXES)}) in it")
        self.flag = flag

    def __len__(self) -> int:
        return len(self.items)

    def identity(self, clip: "Clip") -> list:
        """What names a clip's frames in a feature cache key: the file, its last change and the frames."""
        return [str(clip.path.resolve()), clip.path.stat().st_mtime_ns, clip.start, clip.stride, clip.num_frames]

    def length(self, index: int) -> int:
        """The frame count of item `index`."""
        path = self.items[index]
        if not self.videos:
            return len(_frames_of(path))
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.frames or sum(1 for _ in container.decode(stream))

    def read(self, clip: Clip) -> np.ndarray:
        """The clip's frames as (T, H, W, 3) uint8."""
        wanted = clip.indices()
        if self.videos:
            return read_video(clip.path, lambda total: wanted).numpy()
        from PIL import Image

        frames = _frames_of(clip.path)
        return np.stack([np.asarray(Image.open(frames[i]).convert("RGB")) for i in wanted])


SYNTHETIC = "synthetic"


def synthetic_spec(spec: str | os.PathLike) -> tuple[str, int | None] | None:
    """`synthetic[:SPLIT[:SEED]]` -> (split, seed or None); None when `spec` names a path."""
    from latte.data.synthetic import split_parts

    parts = str(spec).split(":")
    if parts[0] != SYNTHETIC or len(parts) > 3:
        return None
    split = parts[1] if len(parts) > 1 else "train"
    try:
        split_parts(split)
    except ValueError as e:
        raise ValueError(f"{spec!r}: {e} (synthetic[:SPLIT[:SEED]])") from None
    if len(parts) == 3 and not parts[2].isdigit():
        raise ValueError(f"{spec!r}: the seed {parts[2]!r} is not a non-negative integer (synthetic[:SPLIT[:SEED]])")
    return split, int(parts[2]) if len(parts) == 3 else None


class SyntheticSource(VideoSource):
    """`count` clips of the shapes domain: item i of `SyntheticShapes(count, split=split, seed=seed)`, rendered
    when read, with its caption (the prompt a generated video of the same distribution gets)."""

    def __init__(self, split: str, seed: int, count: int, num_frames: int, flag: str):
        from latte.data.synthetic import SyntheticShapes

        self.data = SyntheticShapes(count, num_frames=num_frames, seed=seed, split=split)
        self.root = Path(f"{SYNTHETIC}:{split}:{seed}")
        self.items = [self.root / f"{i:06d}" for i in range(count)]
        self.videos, self.frame_folders, self.flag, self.num_frames = [], [], flag, num_frames

    def identity(self, clip: "Clip") -> list:
        return [str(clip.path), 0, clip.start, clip.stride, clip.num_frames]

    def length(self, index: int) -> int:
        return self.num_frames

    def read(self, clip: "Clip") -> np.ndarray:
        video = self.data[int(clip.path.name)]["video"]  # (3, T, H, W) in [-1, 1]; items are named by index
        frames = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return frames.permute(1, 2, 3, 0)[clip.indices()].numpy()

    def captions(self) -> list[str]:
        return [self.data.caption_of(i) for i in range(len(self.items))]


def domain_prompts(real: str | os.PathLike, protocol: Protocol, seed: int) -> list[str]:
    """With real data `synthetic[:SPLIT[:SEED]]`, the prompts of the generated videos: the captions of the draw
    that `--fake synthetic` renders (seed `seed + 1`, independent of the real clips), video j from caption j."""
    split, _ = synthetic_spec(real)
    return SyntheticSource(split, seed + 1, protocol.num_videos, protocol.num_frames, "--real").captions()


def open_source(spec: str | os.PathLike, flag: str, protocol: Protocol, seed: int) -> VideoSource:
    """The videos `spec` names: a folder, or `synthetic[:SPLIT[:SEED]]` (SEED default: `seed`; the real side
    draws with the run's seed, the generated side with seed + 1) with as many clips as the protocol compares."""
    synthetic = synthetic_spec(spec)
    if synthetic is None:
        return VideoSource(spec, flag)
    split, own_seed = synthetic
    return SyntheticSource(split, seed if own_seed is None else own_seed, protocol.num_videos, protocol.num_frames,
                           flag)


def _frame_folders(root: Path) -> list[Path]:
    """The folders under `root` (at any depth, root itself excluded) that directly hold image files, sorted."""
    found = []
    for folder, _, names in os.walk(root):
        if folder != str(root) and any(Path(n).suffix.lower() in IMAGE_SUFFIXES for n in names):
            found.append(Path(folder))
    return sorted(found)


def _frames_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def real_clips(source: VideoSource, protocol: Protocol, seed: int) -> list[Clip]:
    """The real clips: `num_videos` videos long enough (seeded sample or the first ones), each from a seeded
    start frame."""
    n, stride = protocol.num_frames, protocol.real_stride
    lengths = [source.length(i) for i in range(len(source))]
    eligible = [i for i, length in enumerate(lengths) if length >= n * stride]
    if len(eligible) < protocol.num_videos:
        raise ValueError(f"{source.flag} {source.root}: {len(eligible)} of {len(source)} videos have the "
                         f"{n * stride} frames a {n}-frame clip at stride {stride} needs; --num-videos "
                         f"{protocol.num_videos} needs that many (pass a smaller --num-videos)")
    if protocol.real_selection == "random":
        picked = sorted(np.random.default_rng(seed).permutation(len(eligible))[: protocol.num_videos])
        chosen = [eligible[k] for k in picked]
    else:
        chosen = eligible[: protocol.num_videos]
    clips = []
    for i in chosen:
        last_start = lengths[i] - (n - 1) * stride - 1
        start = int(np.random.default_rng([seed, i]).integers(0, last_start + 1))
        clips.append(Clip(source.items[i], start, stride, n))
    return clips


def fake_clips(source: VideoSource, protocol: Protocol, count: int) -> list[Clip]:
    """The generated clips: the first `count` videos in sorted order, each from its first frame."""
    if len(source) < count:
        raise ValueError(f"{source.flag} {source.root} holds {len(source)} videos; {count} are needed "
                         "(pass a smaller --num-videos)")
    clips = [Clip(source.items[i], 0, protocol.fake_stride, protocol.num_frames) for i in range(count)]
    need = (protocol.num_frames - 1) * protocol.fake_stride + 1
    short = next((c for i, c in enumerate(clips) if source.length(i) < need), None)
    if short is not None:
        raise ValueError(f"{source.flag}: {short.path} is shorter than the {need} frames a {protocol.num_frames}-"
                         f"frame clip at stride {protocol.fake_stride} needs")
    return clips


def prepare(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same, centre-cropped to a square and LANCZOS-resized to `size` (None: as is),
    as Latte's `convert_videos_to_frames.py` prepares frames."""
    if size is None:
        return frames
    from PIL import Image

    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        out.append(np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size),
                                                                                      Image.LANCZOS)))
    return np.stack(out)
