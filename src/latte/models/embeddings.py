"""Sin-cos tables: 2-D patch positions, 1-D frame positions, diffusion timesteps.

Pure functions, computed for the actual grid and frame count. The arithmetic follows MAE / DiT
(https://github.com/facebookresearch/mae/blob/main/util/pos_embed.py) and matches diffusers' tables bit for bit:
positions in float32, frequencies and the outer product in float64, result cast to float32.
"""

import math

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """`[sin, cos]` table for `positions` (M,) -> (M, dim) float32, with omega_i = 10000^(-2i/dim)."""
    if dim % 2 != 0:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    # float64 where the device has it: the tables then equal the reference ones exactly.
    wide = torch.float32 if positions.device.type == "mps" else torch.float64
    omega = torch.arange(dim // 2, device=positions.device, dtype=wide) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = torch.outer(positions.reshape(-1).to(wide), omega)  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def sincos_2d(
    dim: int, grid_h: int, grid_w: int, base_size: int | None = None, interpolation_scale: float = 1.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Patch-position table (grid_h * grid_w, dim), row-major; first half encodes the column, second the row.

    Positions are `i * base_size / grid / interpolation_scale`, so a grid unlike the trained one (base_size)
    is stretched onto the trained range, as in PixArt and diffusers.
    """
    if dim % 2 != 0:
        raise ValueError(f"2-D sin-cos embedding width must be even, got {dim}")
    base_h = grid_h if base_size is None else base_size
    base_w = grid_w if base_size is None else base_size
    rows = torch.arange(grid_h, device=device, dtype=torch.float32) / (grid_h / base_h) / interpolation_scale
    cols = torch.arange(grid_w, device=device, dtype=torch.float32) / (grid_w / base_w) / interpolation_scale
    row_pos = rows[:, None].expand(grid_h, grid_w)  # (h, w)
    col_pos = cols[None, :].expand(grid_h, grid_w)  # (h, w)
    return torch.cat([sincos_1d(dim // 2, col_pos), sincos_1d(dim // 2, row_pos)], dim=1)  # (h*w, dim)


def timestep_features(timesteps: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """DiT / diffusers timestep features `[cos, sin]` (B, dim), float32, frequencies exp(-ln(P) * i / (dim/2))."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps[:, None].float() * torch.exp(exponent)[None, :]  # (B, half)
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        features = torch.nn.functional.pad(features, (0, 1))
    return features
