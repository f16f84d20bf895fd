"""How close an approximate video (cache mode, lower precision) is to the exact one: PSNR and SSIM.

Videos are (..., 3, H, W) float tensors in [0, 1] (e.g. the pipeline's `output_type="pt"` frames); the
figures are averaged over all frames, as the caching papers report them against the exact output.
"""

import math

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(
            f"videos must have equal shapes (..., C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.detach().float().reshape(-1, *a.shape[-3:]), b.detach().float().reshape(-1, *b.shape[-3:])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame PSNR in dB for values in [0, 1]; inf when every frame is identical."""
    a, b = _check(a, b)
    mse = (a - b).square().flatten(1).mean(1)  # (frames,)
    return float(torch.where(mse > 0, -10 * torch.log10(mse), torch.full_like(mse, math.inf)).mean())


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, range 1) over frames and
    channels, on the valid (unpadded) region."""
    a, b = _check(a, b)
    c1, c2 = 0.01**2, 0.03**2
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(a.device)
    channels = a.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window)  # (C, 1, k, k), depthwise

    def blur(t):
        return F.conv2d(t, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())
