"""Video and image folders for training, decoded with PyAV.

    VideoFolder(root, captions="captions.jsonl", num_frames=16, frame_interval=3, size=256, flip=True)

Items are {"video": (3, F, size, size) float in [-1, 1], "caption": str, "label": int}, plus "images"
(3, K, size, size) and "image_labels" (K,) with `use_image_num` K > 0 stills (joint image-video training).
Where the labels come from: a captions file (JSONL or CSV with `path`, `caption`; no labels), else class
sub-folders of `root` (label = sorted folder index, caption = folder name), else none (unconditional).

Clip sampling follows the paper: a random window of `num_frames * frame_interval` frames; "stride" takes every
`frame_interval`-th frame from it (SkyTimelapse, Taichi-HD), "linspace" spreads `num_frames` evenly over it
(UCF101, FaceForensics). Frames are resized (shorter side) to `size`, centre-cropped, optionally flipped.
A corrupt, unreadable or too-short video is skipped with a warning naming it: the item is None, which
`latte.data.cache.skip_bad_items` drops.
"""

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".gif", ".mov", ".mkv", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NO_LABEL = -1


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _class_files(root: Path, suffixes: tuple[str, ...]) -> tuple[list[tuple[Path, str, int]], list[str]]:
    """(path, caption, label) from class sub-folders of `root`, or unlabelled files when it has none."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _files(d, suffixes))
    if not classes:
        return [(p, "", NO_LABEL) for p in _files(root, suffixes)], []
    entries = [
        (p, name.replace("_", " "), label)
        for label, name in enumerate(classes)
        for p in _files(root / name, suffixes)
    ]
    return entries, classes


def read_captions(path: str | os.PathLike, root: Path) -> list[tuple[Path, str, int]]:
    """(video path, caption, NO_LABEL) rows of a JSONL or CSV file with `path` and `caption` fields; paths are
    relative to `root` and may not leave it (no absolute paths, no `..`): a captions file from elsewhere cannot
    make training read arbitrary files. Rows naming missing files are skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        where = [f"{path} row {i + 2}" for i in range(len(rows))]
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows, where = [], []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {i + 1} is not JSON: {err}") from err
                where.append(f"{path} line {i + 1}")
    else:
        raise ValueError(f"captions file {path} must be .jsonl or .csv")
    entries = []
    for row, place in zip(rows, where, strict=True):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("path"), str)
            or not isinstance(row.get("caption"), str)
        ):
            raise ValueError(f"{place} needs string fields 'path' and 'caption', got {row!r:.120}")
        relative = Path(row["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(
                f"{place}: path {row['path']!r} points outside the video folder {root}; captions paths must be "
                "relative to data.root and stay inside it (move or link the videos into it)"
            )
        video = root / relative
        if not video.is_file():
            logger.warning("skipping %s: %s does not exist", place, video)
            continue
        entries.append((video, row["caption"], NO_LABEL))
    return entries


def read_video(path: Path, pick) -> torch.Tensor:
    """Frames `pick(total)` of a video as (F, H, W, 3) uint8; `pick` maps the frame count to indices.

    Decoding stops at the last wanted frame when the container knows its frame count."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        known = stream.frames or 0
        wanted = pick(known) if known else None
        stop = max(wanted) if wanted else None
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if stop is not None and len(frames) > stop:
                break
    if wanted is None or len(frames) <= stop:  # no count, or fewer frames than the header said
        wanted = pick(len(frames))
    return torch.from_numpy(np.stack([frames[i] for i in wanted]))


def resize_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (3, F, size, size) float in [-1, 1]: shorter side to `size`, centre crop."""
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1  # (F, 3, H, W)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size].permute(1, 0, 2, 3).clamp(-1, 1)  # (3, F, size, size)


class TooShortError(ValueError):
    pass


def clip_indices(
    total: int, num_frames: int, frame_interval: int, sampling: str, generator: torch.Generator
) -> list[int]:
    """Frame indices of one clip from a video of `total` frames (a random window, as in the paper)."""
    if sampling == "stride":
        span = (num_frames - 1) * frame_interval + 1
        if total < span:
            raise TooShortError(f"{total} frames; need {span} ({num_frames} every {frame_interval})")
        start = int(torch.randint(total - span + 1, (1,), generator=generator))
        return [start + k * frame_interval for k in range(num_frames)]
    if total < num_frames:
        raise TooShortError(f"{total} frames; need at least {num_frames}")
    window = min(total, num_frames * frame_interval)
    start = int(torch.randint(total - window + 1, (1,), generator=generator))
    return np.linspace(start, start + window - 1, num_frames).round().astype(int).tolist()


class VideoFolder(torch.utils.data.Dataset):
    """Clips from a folder of videos (see the module docstring); deterministic per (seed, index, epoch)."""

    def __init__(
        self,
        root: str | os.PathLike,
        captions: str | os.PathLike | None = None,
        num_frames: int = 16,
        frame_interval: int = 3,
        sampling: str = "stride",
        size: int = 256,
        flip: bool = False,
        seed: int = 0,
        image_root: str | os.PathLike | None = None,
        use_image_num: int = 0,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder not found: {self.root}")
        if sampling not in ("stride", "linspace"):
            raise ValueError(f"sampling={sampling!r} is not allowed; use 'stride' or 'linspace'")
        if captions is not None:
            self.entries, self.classes = read_captions(captions, self.root), []
        else:
            self.entries, self.classes = _class_files(self.root, VIDEO_SUFFIXES)
        if not self.entries:
            raise ValueError(
                f"no videos found in {self.root} (looked for {', '.join(VIDEO_SUFFIXES)}"
                f"{' listed in ' + str(captions) if captions else ''})"
            )
        self.images = ImageFolder(image_root, size, self.classes or None) if use_image_num else None
        self.num_frames, self.frame_interval, self.sampling = num_frames, frame_interval, sampling
        self.size, self.flip, self.seed, self.use_image_num, self.epoch = size, flip, seed, use_image_num, 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Another epoch draws other windows, flips and stills."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict | None:
        path, caption, label = self.entries[index]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) * 10_007 + self.epoch)
        try:
            frames = read_video(
                path,
                lambda total: clip_indices(total, self.num_frames, self.frame_interval, self.sampling, g),
            )
        except TooShortError as err:
            logger.warning("skipping %s: too short (%s)", path, err)
            return None
        except Exception as err:  # PyAV raises many error types for broken files; none may stop a run
            logger.warning("skipping %s: cannot decode it (%s: %s)", path, type(err).__name__, err)
            return None
        video = resize_crop(frames, self.size)
        if self.flip and bool(torch.rand(1, generator=g) < 0.5):
            video = video.flip(-1)
        item = {"video": video, "caption": caption, "label": label}
        if self.images is not None:
            picks = torch.randint(len(self.images), (self.use_image_num,), generator=g).tolist()
            stills = [self.images[i] for i in picks]
            item["images"] = torch.stack([s for s, _ in stills], dim=1)  # (3, K, size, size)
            item["image_labels"] = torch.tensor([lab for _, lab in stills])
        return item


class ImageFolder:
    """Still images for joint training: item i = ((3, size, size) in [-1, 1], label from sub-folders or -1).

    `classes`: the videos' class names, so that a still's label is its folder's index among them."""

    def __init__(self, root: str | os.PathLike | None, size: int, classes: list[str] | None = None):
        if root is None or not Path(root).is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        self.entries, found = _class_files(Path(root), IMAGE_SUFFIXES)
        if not self.entries:
            raise ValueError(f"no images found in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
        if classes is not None:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise ValueError(f"image folders {unknown[:5]} in {root} are not video classes")
            self.entries = [(p, c, classes.index(found[lab])) for p, c, lab in self.entries]
        self.size = size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        for offset in range(len(self)):  # an unreadable still is replaced by the next readable one
            path, _, label = self.entries[(index + offset) % len(self)]
            try:
                with Image.open(path) as image:
                    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy())
                return resize_crop(pixels[None], self.size)[:, 0], label
            except Exception as err:  # PIL raises many types for broken files
                logger.warning("skipping unreadable image %s: %s", path, err)
        raise ValueError(f"no readable images among the {len(self)} files listed")
