"""The shapes domain's own video feature extractor, the stand-in for I3D when evaluating the shipped model here.

I3D (FVD's detector) is a 400-class Kinetics network that is downloaded; nothing is downloaded here, and its
features say little about a 64-pixel shape on a plain background. `ShapesDetector` is a small 3D CNN trained by
this project (`scripts/train_shapes_detector.py`) on `latte.data.synthetic` clips to read what a generator can
get wrong in this domain:
  - what the clip shows: colour, shape, motion, background and size (classification heads);
  - where: the shape's path position (regression on the clip's start point, drawn at random here);
  - how well it is drawn: blur, pixel noise and frame-to-frame flicker of random strength are added to half of
    the training clips and their strengths regressed, so that features move with image quality too.
The 64 features before the heads are what FVD compares. A domain FVD is only comparable with other domain FVDs
from the same detector file (its SHA-256 is in every report), never with I3D FVDs.

The file is TorchScript and is called like StyleGAN-V's I3D: `detector(videos, rescale=True, resize=True,
return_features=True)` on (B, 3, T, H, W) videos in the uint8 range, so the FVD code needs no special case.
"""

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latte.data.synthetic import BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES, combinations, render_clip

SHIPPED_DETECTOR = Path(__file__).resolve().parents[1] / "assets" / "shapes-detector.pt"
NUM_FRAMES, SIZE = 16, 64  # the clips the detector reads; other sizes are resized to this
FEATURES = 64
# Classification heads (name, classes) and regression targets, in the order of `ShapesDetector.heads`.
HEADS = (("color", len(COLORS)), ("shape", len(SHAPES)), ("motion", len(MOTIONS)),
         ("background", len(BACKGROUNDS)), ("size", len(SIZES)))
REGRESSION = ("start_x", "start_y", "blur", "noise", "flicker")
MAX_BLUR, MAX_NOISE, MAX_FLICKER = 1.5, 0.12, 0.12  # largest degradation strengths (sigma px, std, std) in [-1, 1]


class SpaceTimeConv(nn.Module):
    """A (2+1)D convolution: `kernel` x `kernel` over each frame, then 3 over time, each with its stride, as 2D
    convolutions (PyTorch's CPU backward of a 3D convolution is several times slower than that of these two)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, time_stride: int):
        super().__init__()
        self.space = nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - stride + 1) // 2)
        self.time = nn.Conv2d(cout, cout, (3, 1), stride=(time_stride, 1), padding=(1, 0))
        # Batch statistics, not per-clip ones: a per-clip norm (GroupNorm) divides out the clip's overall contrast
        # and detail, which is exactly how blur, noise and flicker show.
        self.norm = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x = self.space(x.transpose(1, 2).reshape(b * t, c, h, w))
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        x = x.view(b, t, c, h * w).transpose(1, 2)  # (B, C, T, H*W): time as the 2D convolution's height
        x = self.time(F.silu(x))
        return F.silu(self.norm(x.reshape(b, c, x.shape[2], h, w)))


def with_detail_and_change(x: torch.Tensor) -> torch.Tensor:
    """The clip (B, 3, T, H, W) with its fine detail (the clip minus a 3 x 3 local mean: edges, weakened by blur,
    and noise) and its frame-to-frame change (motion and flicker) as six more channels, so that the first layer
    sees quality directly instead of having to learn high-pass filters from scratch."""
    local = F.avg_pool3d(x, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    change = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)
    return torch.cat([x, x - local, change], dim=1)


class ShapesDetector(nn.Module):
    """Four strided (2+1)D convolutions (16 x 64 x 64 -> 2 x 4 x 4), then two linear layers to the features; the
    grid is flattened rather than pooled, so the features keep where the shape is."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            SpaceTimeConv(9, 24, kernel=3, stride=2, time_stride=1),  # 16 x 32 x 32
            SpaceTimeConv(24, 32, kernel=3, stride=2, time_stride=2),  # 8 x 16 x 16
            SpaceTimeConv(32, 64, kernel=3, stride=2, time_stride=2),  # 4 x 8 x 8
            SpaceTimeConv(64, 96, kernel=3, stride=2, time_stride=2),  # 2 x 4 x 4
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(96 * 2 * 4 * 4, 256), nn.SiLU(), nn.Linear(256, FEATURES))
        self.heads = nn.Linear(FEATURES, sum(n for _, n in HEADS) + len(REGRESSION))
        self.num_frames, self.size = NUM_FRAMES, SIZE

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 16, 64, 64) in [-1, 1] -> (B, FEATURES)."""
        return self.embed(self.convs(with_detail_and_change(x)))

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = True) -> torch.Tensor:
        x = x.float()
        if rescale:  # the uint8 range, as I3D takes it
            x = x / 127.5 - 1
        if resize and (x.shape[2] != self.num_frames or x.shape[3] != self.size or x.shape[4] != self.size):
            x = F.interpolate(x, size=(self.num_frames, self.size, self.size), mode="trilinear", align_corners=False)
        features = self.features(x)
        return features if return_features else self.heads(F.silu(features))


def _blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of every frame of (3, T, H, W)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).view(1, 1, 1, -1)
    frames = video.transpose(0, 1).reshape(-1, 1, *video.shape[2:])  # (3T, 1, H, W)
    frames = F.conv2d(F.pad(frames, (radius, radius, 0, 0), mode="replicate"), taps)
    frames = F.conv2d(F.pad(frames, (0, 0, radius, radius), mode="replicate"), taps.transpose(2, 3))
    return frames.view(video.shape[1], 3, *video.shape[2:]).transpose(0, 1)


def domain_clip(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One clean random clip of the domain (any combination, background, size and start point) with its class
    targets (len(HEADS),) and start point (2,) in [0, 1]."""
    pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
    combos = combinations("all")
    color, shape, motion = combos[pick(len(combos))]
    background, size = pick(len(BACKGROUNDS)), pick(len(SIZES))
    start = torch.rand(2, generator=g)
    video = render_clip(color, shape, motion, list(BACKGROUNDS)[background], NUM_FRAMES, SIZE, SIZES[size],
                        (float(start[0]), float(start[1])))
    classes = torch.tensor([list(COLORS).index(color), SHAPES.index(shape), MOTIONS.index(motion), background,
                            size])
    return video, classes, start


def degrade(video: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur, pixel noise and flicker, each with probability 1/2 at a random strength; returns the clip and the
    three strengths in [0, 1] (0: not applied)."""
    strengths = [float(torch.rand((), generator=g)) if torch.rand((), generator=g) < 0.5 else 0.0
                 for _ in range(3)]
    blur, noise, flicker = strengths
    if blur > 0:
        video = _blur(video, 0.3 + blur * (MAX_BLUR - 0.3))
    if flicker > 0:
        video = video + flicker * MAX_FLICKER * torch.randn((3, NUM_FRAMES, 1, 1), generator=g)
    if noise > 0:
        video = video + noise * MAX_NOISE * torch.randn(video.shape, generator=g)
    return video.clamp(-1, 1), torch.tensor(strengths)


def training_clips(count: int, g: torch.Generator, pool: list | None = None):
    """`count` degraded clips with their class and regression targets (REGRESSION order), drawn from `pool`
    (clean clips of `domain_clip`) when given, else rendered."""
    videos, classes, targets = [], [], []
    for _ in range(count):
        video, labels, start = pool[int(torch.randint(len(pool), (1,), generator=g))] if pool else domain_clip(g)
        video, strengths = degrade(video, g)
        videos.append(video)
        classes.append(labels)
        targets.append(torch.cat([start, strengths]))
    return torch.stack(videos), torch.stack(classes), torch.stack(targets)


def train_shapes_detector(steps: int = 2000, batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
                          pool: int = 2048, progress: bool = True) -> ShapesDetector:
    """Train a `ShapesDetector` from scratch on domain clips: `pool` clean clips rendered once, each batch drawn
    from them with fresh degradations (rendering would otherwise cost as much as the training)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    clips = [domain_clip(g) for _ in tqdm(range(pool), desc="rendering clips", disable=not progress)]
    model = ShapesDetector()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)  # then cosine decay to zero
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min((k + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(k / steps, 1.0)))))
    bar = tqdm(range(steps), desc="shapes detector", disable=not progress)
    for _ in bar:
        videos, classes, targets = training_clips(batch_size, g, clips)
        out = model.heads(F.silu(model.features(videos)))
        # The regression targets vary by about 0.1 (squared) against cross-entropies near 1 each; weighted less,
        # the class heads take the shared layers and blur, noise and flicker are never learned (measured).
        regression = F.mse_loss(out[:, -len(REGRESSION):], targets)
        loss, first = regression * 50, 0
        for k, (_, n) in enumerate(HEADS):
            loss = loss + F.cross_entropy(out[:, first:first + n], classes[:, k])
            first += n
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", regression=f"{regression.item():.4f}")
    return model.eval()


@torch.no_grad()
def head_accuracy(model: ShapesDetector, num_clips: int = 256, seed: int = 12345) -> dict:
    """Accuracy of each classification head and mean absolute error of each regression target on fresh clips."""
    videos, classes, targets = training_clips(num_clips, torch.Generator().manual_seed(seed))
    out = torch.cat([model.heads(F.silu(model.features(v))) for v in videos.split(32)])
    result, first = {}, 0
    for k, (name, n) in enumerate(HEADS):
        result[name] = float((out[:, first:first + n].argmax(1) == classes[:, k]).float().mean())
        first += n
    for k, name in enumerate(REGRESSION):
        result[f"{name}_mae"] = float((out[:, first + k] - targets[:, k]).abs().mean())
    return result


def save_detector(model: ShapesDetector, path: str | Path) -> None:
    """TorchScript, written by the output rule (a temporary file renamed into place)."""
    from latte.outputs import write_file

    scripted = torch.jit.script(model.eval())
    write_file(path, lambda tmp: torch.jit.save(scripted, str(tmp)))
