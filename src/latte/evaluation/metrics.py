"""FVD, FID and IS under a pinned protocol (`latte.evaluation.protocol`), and cached real statistics.

    report = fvd(real="ucf101/train", fake="samples/", detector="i3d_torchscript.pt",
                 protocol=make_protocol("fvd", "latte-paper"), seed=0)

`real` may also be a statistics file written by `save_stats` (`latte eval stats`); its detector hash and
real-side protocol knobs must match the run's.
"""

import functools
import hashlib
import json
import logging
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latte.evaluation.detectors import Detector
from latte.evaluation.frechet import FeatureStats, frechet_distance
from latte.evaluation.protocol import Clip, Protocol, VideoSource, fake_clips, open_source, prepare, real_clips

logger = logging.getLogger(__name__)

STATS_FORMAT = 1


def shard() -> tuple[int, int]:
    """(rank, world size) of the torchrun process group this process is in; (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _save_rows(path: str, rows: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
        np.save(f, rows)


@dataclass
class Extraction:
    """How features are taken: the detector, the frame size, videos per call, and where to keep each batch's
    features (`cache`, a folder; None: nowhere) so that a killed run picks up where it stopped."""

    detector: Detector
    size: int | None
    batch_size: int = 8
    cache: str | os.PathLike | None = None

    def cached(self, source: VideoSource, batch: list[Clip]) -> Path | None:
        """The cache file of a batch: named by the detector, the frame size and each clip (path, last change,
        frames)."""
        if self.cache is None:
            return None
        key = json.dumps([self.detector.sha256, self.size, [source.identity(c) for c in batch]])
        return Path(self.cache) / f"{self.detector.kind.metric}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"

    def batches(self, source: VideoSource, clips: list[Clip]) -> Iterator[tuple[int, np.ndarray]]:
        """(batch index, detector features) of this rank's batches of `clips`: float64 rows, one per clip (per
        frame for FID). The batches are fixed slices of the global list, dealt round-robin to the ranks, so each
        clip is in the same batch on 1 or 8 processes."""
        from tqdm import tqdm

        from latte.outputs import write_file

        rank, world = shard()
        batches = [clips[i:i + self.batch_size] for i in range(0, len(clips), self.batch_size)]
        mine = range(rank, len(batches), world)
        bar = tqdm(total=sum(len(batches[i]) for i in mine), desc=f"{self.detector.kind.metric} features",
                   unit="video", disable=None if rank == 0 else True, leave=False)
        for index in mine:
            stored = self.cached(source, batches[index])
            if stored is not None and stored.is_file():
                rows = np.load(stored)
            else:
                rows = self.run(source, batches[index])
                if stored is not None:
                    write_file(stored, functools.partial(_save_rows, rows=rows))
            bar.update(len(batches[index]))
            yield index, rows
        bar.close()

    def run(self, source: VideoSource, batch: list[Clip]) -> np.ndarray:
        frames = [prepare(source.read(clip), self.size) for clip in batch]
        rows, first = [], 0
        for k in range(1, len(frames) + 1):  # frames of another size than the previous clip's: a call of their own
            if k == len(frames) or frames[k].shape != frames[first].shape:
                videos = torch.from_numpy(np.stack(frames[first:k])).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
                if self.detector.kind.per_frame:
                    b, c, t, h, w = videos.shape
                    videos = videos.transpose(1, 2).reshape(b * t, c, h, w)
                rows.append(self.detector(videos.contiguous()))
                first = k
        return np.concatenate(rows)

    def stats(self, source: VideoSource, clips: list[Clip]) -> FeatureStats:
        """The feature statistics of `clips`, summed over the ranks."""
        stats = None
        for _, rows in self.batches(source, clips):
            if stats is None:
                stats = FeatureStats(rows.shape[1])
            stats.add(rows)
        if shard()[1] > 1:
            import torch.distributed as dist

            # Ranks without a batch (fewer batches than ranks) still join: their dimension comes from the others.
            dims = [None] * shard()[1]
            dist.all_gather_object(dims, None if stats is None else stats.dim)
            if stats is None:
                stats = FeatureStats(next(d for d in dims if d is not None))
            packed = torch.from_numpy(np.concatenate([[stats.count], stats.total, stats.total_outer.ravel()]))
            packed = packed.to(self.detector.device)
            dist.all_reduce(packed)
            packed = packed.cpu().numpy()
            stats.count, stats.total = int(round(packed[0])), packed[1:stats.dim + 1]
            stats.total_outer = packed[stats.dim + 1:].reshape(stats.dim, stats.dim)
        return stats

    def rows(self, source: VideoSource, clips: list[Clip]) -> np.ndarray:
        """All detector rows of `clips` in their order, gathered from the ranks."""
        batches = dict(self.batches(source, clips))
        if shard()[1] > 1:
            import torch.distributed as dist

            gathered = [None] * shard()[1]
            dist.all_gather_object(gathered, batches)
            batches = {k: v for part in gathered for k, v in part.items()}
        return np.concatenate([batches[k] for k in sorted(batches)])


def save_stats(path: str | os.PathLike, stats: FeatureStats, metric: str, detector: Detector,
               protocol: Protocol, seed: int) -> Path:
    """Mean, covariance, count, the detector's SHA-256 and the real-side protocol, in one .npz (output rule)."""
    from latte.outputs import write_file

    mean, cov = stats.mean_cov()
    meta = {"format": STATS_FORMAT, "metric": metric, "detector_sha256": detector.sha256,
            "protocol": protocol.real_side(), "preset": protocol.name, "seed": seed, "count": stats.count}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, mean=mean, cov=cov, count=stats.count, meta=json.dumps(meta, sort_keys=True))

    return write_file(path, write)


def load_stats(path: str | os.PathLike, metric: str, detector: Detector, protocol: Protocol,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A statistics file's mean and covariance; an error names the first knob that differs."""
    try:
        with np.load(path, allow_pickle=False) as data:
            mean, cov, meta = data["mean"], data["cov"], json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"--real {path} is not a statistics file written by `latte eval stats` ({err})") from err
    wanted = {"metric": metric, "detector_sha256": detector.sha256, "protocol": protocol.real_side(),
              **({"seed": seed} if protocol.real_selection == "random" else {})}
    for key, value in wanted.items():
        if meta.get(key) != value:
            raise ValueError(f"--real {path} was computed with {key} {json.dumps(meta.get(key))}, this run uses "
                             f"{json.dumps(value)}; recompute it with `latte eval stats` and this run's options")
    return mean, cov


def real_statistics(real: str | os.PathLike, metric: str, extraction: Extraction, protocol: Protocol,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The real mean and covariance: from a statistics file (.npz), else computed from the folder."""
    if Path(real).suffix == ".npz" and not Path(real).is_dir():
        if not Path(real).is_file():
            raise FileNotFoundError(f"--real {real}: no such statistics file")
        return load_stats(real, metric, extraction.detector, protocol, seed)
    source = open_source(real, "--real", protocol, seed)
    return extraction.stats(source, real_clips(source, protocol, seed)).mean_cov()


def versions() -> dict:
    import scipy

    import latte

    return {"latte": latte.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


def report(metric: str, value: float, protocol: Protocol, detector: Detector, seed: int, num_real: int | None,
           num_fake: int, **extra) -> dict:
    return {"metric": metric, "value": value, "preset": protocol.as_dict(), "detector": str(detector.path),
            "detector_sha256": detector.sha256, "num_real": num_real, "num_fake": num_fake, "seed": seed,
            **extra, "versions": versions()}


def detector_for(detector: str | os.PathLike | None, metric: str, *data: str | os.PathLike | None):
    """`detector`, or for FVD on the shapes domain (real or fake data `synthetic...`) the shipped shapes
    detector (`latte.evaluation.shapes_detector`)."""
    from latte.evaluation.protocol import synthetic_spec
    from latte.evaluation.shapes_detector import SHIPPED_DETECTOR

    if detector is None and metric == "fvd" and any(d is not None and synthetic_spec(d) for d in data):
        if not SHIPPED_DETECTOR.is_file():
            raise FileNotFoundError(f"the shipped shapes detector is missing ({SHIPPED_DETECTOR}): reinstall latte, "
                                    "or train one with scripts/train_shapes_detector.py and pass --detector FILE")
        return SHIPPED_DETECTOR
    return detector


def frechet(metric: str, real: str | os.PathLike, fake: str | os.PathLike, detector: str | os.PathLike | None,
            protocol: Protocol, seed: int = 0, batch_size: int = 8, device: str = "cpu",
            cache: str | os.PathLike | None = None) -> dict:
    """FVD (`metric="fvd"`, I3D on clips) or FID (`"fid"`, Inception on every frame of each clip)."""
    det = Detector(detector_for(detector, metric, real, fake), metric, device)
    extraction = Extraction(det, protocol.size, batch_size, cache)
    fake_source = open_source(fake, "--fake", protocol, seed + 1)
    clips = fake_clips(fake_source, protocol, protocol.num_videos)  # checked before the long real pass
    mean_r, cov_r = real_statistics(real, metric, extraction, protocol, seed)
    fake_stats = extraction.stats(fake_source, clips)
    value = frechet_distance(mean_r, cov_r, *fake_stats.mean_cov())
    return report(metric, value, protocol, det, seed, protocol.num_videos, len(clips), real=str(real),
                  fake=str(fake))


def fvd(real, fake, detector, protocol: Protocol, **options) -> dict:
    return frechet("fvd", real, fake, detector, protocol, **options)


def fid(real, fake, detector, protocol: Protocol, **options) -> dict:
    return frechet("fid", real, fake, detector, protocol, **options)


def split_scores(probs: np.ndarray, splits: int, eps: float = 0.0) -> list[float]:
    """exp(E_x KL(p(y|x) || p(y))) of each of `splits` contiguous parts of `probs` (N, classes)."""
    scores = []
    for k in range(splits):
        part = probs[k * len(probs) // splits: (k + 1) * len(probs) // splits] + eps
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return scores


def inception_score(fake, detector, protocol: Protocol, seed: int = 0, batch_size: int = 8, device: str = "cpu",
                    cache: str | os.PathLike | None = None) -> dict:
    """IS of the first `num_videos * repeats` generated videos (sorted order). Each repeat of `num_videos`
    videos (rows shuffled first with `RandomState(protocol.shuffle)` where the preset pins one) scores the mean
    over its `splits`; the value is the mean over repeats. `std` is what each tool reports: the spread over
    repeats (TGANv2), or with one repeat over its splits (StyleGAN-V)."""
    det = Detector(detector, "is", device)
    source = VideoSource(fake, "--fake")
    clips = fake_clips(source, protocol, protocol.num_videos * protocol.repeats)
    probs = Extraction(det, protocol.size, batch_size, cache).rows(source, clips)
    if (probs < 0).any() or not np.isfinite(probs).all():
        raise ValueError(f"--detector {det.path} gave values that are not probabilities (IS needs the C3D "
                         "TorchScript, whose output is a softmax)")
    n = protocol.num_videos
    per_split = []
    for r in range(protocol.repeats):
        part = probs[r * n:(r + 1) * n].copy()
        if protocol.shuffle is not None:
            np.random.RandomState(protocol.shuffle).shuffle(part)
        per_split.append(split_scores(part, protocol.splits, protocol.eps))
    scores = [float(np.mean(s)) for s in per_split]
    std = np.std(scores) if protocol.repeats > 1 else np.std(per_split[0])
    return report("is", float(np.mean(scores)), protocol, det, seed, None, len(clips), std=float(std),
                  scores=scores, split_scores=per_split, fake=str(fake))


def real_stats_file(real: str | os.PathLike, output: str | os.PathLike, metric: str, detector: str | os.PathLike,
                    protocol: Protocol, seed: int = 0, batch_size: int = 8, device: str = "cpu",
                    cache: str | os.PathLike | None = None) -> dict:
    """Compute the real statistics of a folder and save them (`latte eval stats`)."""
    det = Detector(detector_for(detector, metric, real), metric, device)
    source = open_source(real, "--real", protocol, seed)
    stats = Extraction(det, protocol.size, batch_size, cache).stats(source, real_clips(source, protocol, seed))
    if shard()[0] == 0:
        save_stats(output, stats, metric, det, protocol, seed)
    return report(f"{metric}-stats", None, protocol, det, seed, protocol.num_videos, 0, real=str(real),
                  output=str(output))
