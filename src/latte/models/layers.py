"""Small building blocks shared by the Latte models: attention math, modulation, feed-forward."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None):
    """Multi-head scaled dot-product attention on (B, L, H*Dh) tensors -> (B, Lq, H*Dh).

    `mask` is boolean (True = attend) or additive, broadcastable to (B, H, Lq, Lk).
    """
    q, k, v = (rearrange(t, "b l (h d) -> b h l d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return rearrange(out, "b h l d -> b l (h d)")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation `x * (1 + scale) + shift`; shift and scale broadcast over tokens."""
    return x * (1 + scale) + shift


class GELUProjection(nn.Module):
    """Linear followed by GELU (tanh approximation by default); `proj` matches diffusers' key name."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "tanh", bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nn.Module):
    """Transformer MLP `Linear(D, mult*D) -> GELU -> Linear(mult*D, D)` with diffusers' `net.0.proj` / `net.2` keys."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0, approximate: str = "tanh"):
        super().__init__()
        self.net = nn.Sequential(
            GELUProjection(dim, dim * mult, approximate), nn.Dropout(dropout), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
