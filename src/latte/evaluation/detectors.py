"""The feature detectors: TorchScript files the user supplies, called exactly as StyleGAN-V (and Latte's
tools) call them. Nothing is downloaded; a missing file is a one-line error saying where the file comes from.

- FVD: StyleGAN-V's I3D, `detector(videos, rescale=True, resize=True, return_features=True)` on (B, 3, T, H, W)
  uint8 videos; the features are the 400 logits before the softmax.
- FID: NVIDIA's Inception (StyleGAN2-ADA / StyleGAN3), `detector(images, return_features=True)` on (B, 3, H, W)
  uint8 frames; 2048 pool features.
- IS: StyleGAN-V's C3D fine-tuned on UCF101, `detector(videos)` on (B, 3, T, H, W) uint8 videos; class
  probabilities (the conversion from uint8 happens inside the TorchScript).
"""

import contextlib
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorKind:
    metric: str
    file_name: str
    source: str
    kwargs: tuple[tuple[str, bool], ...]  # keyword arguments of every call
    per_frame: bool  # called on single frames (B, 3, H, W) rather than clips (B, 3, T, H, W)


KINDS = {
    "fvd": DetectorKind(
        "fvd", "i3d_torchscript.pt",
        "StyleGAN-V's I3D, https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1 "
        "(mirror: Hugging Face flateon/FVD-I3D-torchscript)",
        (("rescale", True), ("resize", True), ("return_features", True)), per_frame=False),
    "fid": DetectorKind(
        "fid", "inception-2015-12-05.pt",
        "NVIDIA's TorchScript Inception, https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/"
        "versions/1/files/metrics/inception-2015-12-05.pkl (a pickle holding the TorchScript module; save it "
        "with torch.jit.save)",
        (("return_features", True),), per_frame=True),
    "is": DetectorKind(
        "is", "c3d_ucf101.pt",
        "StyleGAN-V's C3D for UCF101, https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt?dl=1",
        (), per_frame=False),
}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_detector_file(path: str | os.PathLike | None, metric: str) -> Path:
    """The detector file for `metric`, or a one-line error naming the flag and where the file comes from."""
    kind = KINDS[metric]
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{metric.upper()} needs --detector {kind.file_name}: {kind.source}; nothing is "
                                "downloaded here")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector file not found: {path} ({metric.upper()} uses {kind.file_name}: "
                                f"{kind.source})")
    return path


class Detector:
    """A loaded TorchScript detector with its file's SHA-256; calling it on a batch gives float64 numpy rows."""

    def __init__(self, path: str | os.PathLike | None, metric: str, device: str = "cpu"):
        self.kind = KINDS[metric]
        self.path = check_detector_file(path, metric)
        self.sha256 = file_sha256(self.path)
        try:
            with warnings.catch_warnings():  # the detectors are TorchScript files: its deprecation is not news here
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"--detector {self.path} is not a TorchScript file torch.jit.load reads ({first}); "
                             f"{metric.upper()} uses {self.kind.file_name}: {self.kind.source}") from err
        self.device = device
        logger.debug("detector %s (sha256 %s)", self.path, self.sha256)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """`batch`: uint8 (B, 3, T, H, W) clips, or (B, 3, H, W) frames for a per-frame detector."""
        kwargs = dict(self.kind.kwargs)
        try:
            with no_tf32():
                output = self.module(batch.to(self.device), **kwargs)
        except RuntimeError as err:  # a wrong file (another detector) or an input it cannot take
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            call = ", ".join(["x", *(f"{k}={v}" for k, v in kwargs.items())])
            raise ValueError(f"--detector {self.path} failed on a {self.kind.metric.upper()} batch of shape "
                             f"{tuple(batch.shape)} uint8, called as forward({call}) ({first}); "
                             f"{self.kind.metric.upper()} uses {self.kind.file_name}: {self.kind.source}") from err
        return output.detach().to("cpu", torch.float64).numpy().reshape(len(batch), -1)


@contextlib.contextmanager
def no_tf32():
    """Full float32 matmuls and convolutions on CUDA, as Latte's and StyleGAN-V's metric tools set them."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
