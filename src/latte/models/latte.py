"""The paper's Latte models: class-conditional and unconditional latent video diffusion transformers.

One module for the whole family (Ma et al. 2024, https://arxiv.org/abs/2401.03048, section 3):
- `variant` 1: spatial and temporal blocks interleaved (the released model); 2: all spatial blocks, then all
  temporal ones (late fusion); 3: one block does spatial attention, temporal attention, then the MLP;
  4: one attention whose first half of heads attends within a frame and second half across frames.
- `patch_embedding` "frame" (a Conv2d per frame) or "tubelet" (a Conv3d over `tubelet_size` frames; the final
  layer predicts all of a tubelet's frames, which is the temporal upsampling at the output).
- `conditioning` "adaln" (DiT adaLN-Zero, c = t_emb + y_emb) or "tokens" (t and y as extra tokens per frame,
  removed again before the final layer).
- `temporal_position` "absolute" (a 1-D sin-cos table added once before the first temporal attention) or
  "rope".

Variant 1 with frame patches, adaLN and absolute positions has the original state-dict keys
(`blocks.N.attn.qkv`, `t_embedder.mlp.0`, `y_embedder.embedding_table`, `pos_embed`, `temp_embed`, ...), so
the released checkpoints load strictly with `Latte.from_original`. The original takes (B, F, C, H, W); this
API takes (B, C, F, H, W) like the text-to-video transformer.

Letters in shape comments: B batch, F temporal tokens (frames, or tubelets), Fv those of the video (stills
excluded), N patches per frame, K condition tokens, D width, p patch size, s tubelet size.
"""

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from latte.models.embeddings import sincos_1d, sincos_2d, timestep_features
from latte.models.io import ModelFolderMixin, config_from_dict, load_torch_checkpoint, unwrap_state_dict
from latte.models.latte_t2v import TIMESTEP_FEATURES, Transformer3DOutput
from latte.models.layers import attention, modulate
from latte.outputs import write_file

CLASS_NAME = "Latte"
VARIANTS = (1, 2, 3, 4)
PATCH_EMBEDDINGS = ("frame", "tubelet")
CONDITIONINGS = ("adaln", "tokens")
TEMPORAL_POSITIONS = ("absolute", "rope")
ROPE_BASE = 10000.0

# Model sizes of the paper (table 1): name -> (depth, hidden_size, num_heads). Depth counts spatial and
# temporal blocks together (XL = 14 spatial + 14 temporal).
LATTE_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
PATCH_SIZES = (2, 4, 8)


@dataclass(frozen=True)
class LatteConfig:
    """Arguments of `Latte`; the defaults are the released Latte-XL/2 (256 px, 16 frames, unconditional)."""

    input_size: int = 32  # latent side the position table is built for (256 px / VAE downsampling 8)
    num_frames: int = 16  # video frames the temporal table is built for; fewer or more also run
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 28  # spatial + temporal attention blocks; variants 3 and 4 fuse each pair into one block
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0 = unconditional; otherwise label `num_classes` is the null class of guidance
    class_dropout_prob: float = 0.1  # training label dropout; the table has a null row iff > 0
    learn_sigma: bool = True  # output 2C channels: epsilon, then the learned-range variance value
    variant: int = 1
    patch_embedding: str = "frame"
    tubelet_size: int = 2  # frames per tubelet ("tubelet" embedding only)
    conditioning: str = "adaln"
    temporal_position: str = "absolute"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name, allowed in (("patch_embedding", PATCH_EMBEDDINGS), ("conditioning", CONDITIONINGS),
                              ("temporal_position", TEMPORAL_POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("input_size", "num_frames", "in_channels", "patch_size", "num_heads", "tubelet_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"depth counts spatial and temporal blocks together and must be even >= 2, "
                             f"got {self.depth}")
        if self.hidden_size % 4 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of 4 and of num_heads "
                             f"({self.num_heads})")
        if self.variant == 4 and self.num_heads % 2:
            raise ValueError(f"variant 4 splits the heads in two halves; num_heads must be even, "
                             f"got {self.num_heads}")
        if self.temporal_position == "rope" and self.temporal_head_dim % 2:
            raise ValueError(f"rope needs an even head width, got {self.temporal_head_dim}")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size ({self.input_size}) must be a multiple of patch_size "
                             f"({self.patch_size})")
        if self.patch_embedding == "tubelet" and self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames ({self.num_frames}) must be a multiple of tubelet_size "
                             f"({self.tubelet_size})")
        if self.num_classes < 0 or not 0 <= self.class_dropout_prob < 1:
            raise ValueError(f"need num_classes >= 0 (got {self.num_classes}) and "
                             f"0 <= class_dropout_prob < 1 (got {self.class_dropout_prob})")

    # ----------------------------------------------------------------- derived sizes
    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def frames_per_token(self) -> int:
        """s: video frames folded into one temporal token (1 for per-frame patches)."""
        return self.tubelet_size if self.patch_embedding == "tubelet" else 1

    @property
    def temporal_tokens(self) -> int:
        return self.num_frames // self.frames_per_token

    @property
    def num_blocks(self) -> int:
        return self.depth // 2 if self.variant in (3, 4) else self.depth

    @property
    def num_condition_tokens(self) -> int:
        """K extra tokens per frame with "tokens" conditioning: the timestep, and the class if any."""
        return 0 if self.conditioning == "adaln" else 1 + (self.num_classes > 0)

    @property
    def temporal_head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def has_null_class(self) -> bool:
        return self.num_classes > 0 and self.class_dropout_prob > 0

    @property
    def is_original_layout(self) -> bool:
        """True for the released architecture, whose keys are the original checkpoints' keys."""
        return (self.variant, self.patch_embedding, self.conditioning, self.temporal_position) == (
            1, "frame", "adaln", "absolute")

    # ----------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_name(cls, name: str, **overrides) -> "LatteConfig":
        if name not in LATTE_CONFIGS:
            raise ValueError(f"unknown Latte model {name!r}; choose one of {sorted(LATTE_CONFIGS)}")
        return LATTE_CONFIGS[name](**overrides)

    @classmethod
    def from_dict(cls, data: Mapping, source: str | os.PathLike | None = None) -> "LatteConfig":
        """Build from a config.json dict (read from `source`, named in errors); keys starting with `_` (class
        name, versions) are ignored."""
        return config_from_dict(cls, data, "Latte", source)

    def to_dict(self) -> dict:
        """The content of config.json: the fields (constructor keywords) and `_class_name`."""
        return {"_class_name": CLASS_NAME, **dataclasses.asdict(self)}


def _size_factory(size: str, patch: int) -> Callable[..., LatteConfig]:
    depth, width, heads = LATTE_SIZES[size]
    return lambda **kw: LatteConfig(**{"depth": depth, "hidden_size": width, "num_heads": heads,
                                       "patch_size": patch, **kw})


# "Latte-XL/2" -> factory(**overrides) -> LatteConfig
LATTE_CONFIGS: dict[str, Callable[..., LatteConfig]] = {
    f"Latte-{size}/{patch}": _size_factory(size, patch) for size in LATTE_SIZES for patch in PATCH_SIZES
}


#################################################################################
#                    Rotary temporal positions (RoPE, Su et al.)                #
#################################################################################


def rope_tables(length: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_dim/2) of angles pos * ROPE_BASE^(-2i/head_dim), float32."""
    freqs = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotate each head's (first half, second half) channel pairs of x (G, L, H*Dh) by the angles of positions
    0..L-1 (the tables may be longer than L)."""
    x = rearrange(x, "g l (h d) -> g l h d", h=heads)
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[: x.shape[1], None], sin[: x.shape[1], None]  # (L, 1, Dh/2)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)
    return rearrange(out, "g l h d -> g l (h d)")


#################################################################################
#                          Embedding and conditioning                           #
#################################################################################


class PatchEmbed(nn.Module):
    """Frames or tubelets to tokens: Conv2d (kernel = stride = p) per frame, or Conv3d over s frames."""

    def __init__(self, config: LatteConfig):
        super().__init__()
        c, self.tubelet = config, config.patch_embedding == "tubelet"
        if self.tubelet:
            kernel = (c.tubelet_size, c.patch_size, c.patch_size)
            self.proj = nn.Conv3d(c.in_channels, c.hidden_size, kernel_size=kernel, stride=kernel)
        else:
            self.proj = nn.Conv2d(c.in_channels, c.hidden_size, kernel_size=c.patch_size, stride=c.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tubelet:
            return rearrange(self.proj(x), "b d f h w -> b f (h w) d")  # (B, F/s, N, D)
        b = x.shape[0]
        x = self.proj(rearrange(x, "b c f h w -> (b f) c h w"))
        return rearrange(x, "(b f) d h w -> b f (h w) d", b=b)  # (B, F, N, D)


class TimestepEmbedder(nn.Module):
    """256 sin-cos timestep features -> Linear -> SiLU -> Linear (original keys `mlp.0`, `mlp.2`)."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FEATURES, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_features(t).to(dtype))  # (B, D)


class LabelEmbedder(nn.Module):
    """Class table, with a null row `num_classes` (if trained with label dropout) for guidance."""

    def __init__(self, num_classes: int, width: int, dropout_prob: float):
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.embedding_table = nn.Embedding(num_classes + (dropout_prob > 0), width)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B, F) -> (B, F, D); in training each item's labels (video and stills) drop all or none."""
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob  # (B,)
            labels = torch.where(drop[:, None], self.num_classes, labels)
        return self.embedding_table(labels)


#################################################################################
#                                    Blocks                                     #
#################################################################################


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (original keys `qkv`, `proj`)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (G, L, D) each: qkv features are ordered [3][heads][Dh]
        if rope is not None:
            q, k = apply_rope(q, *rope, self.heads), apply_rope(k, *rope, self.heads)
        return self.proj(attention(q, k, v, self.heads))


class Mlp(nn.Module):
    """Linear -> tanh-GELU -> Linear (original keys `fc1`, `fc2`)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _spatial(fn, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Apply a sequence op within each frame: (B, F, N, D) -> (B*F, N, D) -> back."""
    b = x.shape[0]
    return rearrange(fn(rearrange(x, "b f n d -> (b f) n d"), **kwargs), "(b f) n d -> b f n d", b=b)


def _temporal(fn, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Apply a sequence op across frames at each patch position: (B, F, N, D) -> (B*N, F, D) -> back."""
    b = x.shape[0]
    return rearrange(fn(rearrange(x, "b f n d -> (b n) f d"), **kwargs), "(b n) f d -> b f n d", b=b)


class LatteBlock(nn.Module):
    """One block of any variant on tokens (B, F, N, D): attention, then MLP, each pre-norm and residual.

    `mixing` says what its attention mixes: "spatial" (within a frame), "temporal" (across the video's frames
    at one position; stills pass unchanged), "factorised" (variant 3: spatial attention, then temporal
    attention, then the MLP), "split_heads" (variant 4: half the heads spatial, half temporal, fused by the
    output projection).
    With adaLN, `c` (B, F or 1, D) gives (shift, scale, gate) per sub-layer; with "tokens" conditioning the
    LayerNorms are affine and there is no modulation.
    """

    def __init__(self, config: LatteConfig, mixing: str):
        super().__init__()
        d, heads, self.mixing = config.hidden_size, config.num_heads, mixing
        adaln = config.conditioning == "adaln"
        self.norm1 = nn.LayerNorm(d, elementwise_affine=not adaln, eps=1e-6)
        self.attn = SelfAttention(d, heads)
        if mixing == "factorised":
            self.norm_temporal = nn.LayerNorm(d, elementwise_affine=not adaln, eps=1e-6)
            self.temporal_attn = SelfAttention(d, heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=not adaln, eps=1e-6)
        self.mlp = Mlp(d, int(d * config.mlp_ratio))
        self.num_sublayers = 3 if mixing == "factorised" else 2
        if adaln:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 3 * self.num_sublayers * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, num_video: int, rope: tuple | None):
        """x (B, F, N, D); c (B, F, D) per-frame conditioning or None; frames < `num_video` are video."""
        if self.mixing == "temporal":
            # Stills (frames past num_video) skip temporal blocks; the video's conditioning is frame 0's.
            video = self._sublayers(x[:, :num_video], None if c is None else c[:, :1], num_video, rope)
            return torch.cat([video, x[:, num_video:]], dim=1) if num_video < x.shape[1] else video
        return self._sublayers(x, c, num_video, rope)

    def _sublayers(self, x, c, num_video, rope):
        if c is None:
            mods = [(None, None, None)] * self.num_sublayers
        else:
            m = self.adaLN_modulation(c)[:, :, None]  # (B, F or 1, 1, 3*S*D)
            chunks = m.chunk(3 * self.num_sublayers, dim=-1)
            mods = [chunks[i:i + 3] for i in range(0, len(chunks), 3)]  # (shift, scale, gate) per sub-layer

        x = _residual(x, self.norm1, mods[0], lambda h: self._attend(h, num_video, rope))
        if self.mixing == "factorised":
            def temporal(h):  # stills take no part: their update is zero
                out = _temporal(self.temporal_attn, h[:, :num_video], rope=rope)
                return F.pad(out, (0, 0, 0, 0, 0, h.shape[1] - num_video))
            x = _residual(x, self.norm_temporal, mods[1], temporal)
        return _residual(x, self.norm2, mods[-1], self.mlp)

    def _attend(self, h: torch.Tensor, num_video: int, rope: tuple | None) -> torch.Tensor:
        if self.mixing in ("spatial", "factorised"):
            return _spatial(self.attn, h)
        if self.mixing == "temporal":
            return _temporal(self.attn, h, rope=rope)
        return self._split_heads(h, num_video, rope)

    def _split_heads(self, h: torch.Tensor, num_video: int, rope: tuple | None) -> torch.Tensor:
        """Variant 4: heads [0, H/2) attend within a frame, heads [H/2, H) across the video's frames."""
        a, half_heads = self.attn, self.attn.heads // 2
        b, frames, n, _ = h.shape
        # (3, 2, B, F, N, D/2): q/k/v, then the spatial and the temporal half of the heads
        q, k, v = rearrange(a.qkv(h), "b f n (three s x) -> three s b f n x", three=3, s=2)
        spatial = attention(*(rearrange(t, "b f n x -> (b f) n x") for t in (q[0], k[0], v[0])), half_heads)
        spatial = rearrange(spatial, "(b f) n x -> b f n x", b=b)
        qt, kt, vt = (rearrange(t, "b f n x -> (b n) f x") for t in (q[1], k[1], v[1]))
        if rope is not None:
            qt, kt = apply_rope(qt, *rope, half_heads), apply_rope(kt, *rope, half_heads)
        # A still sees only itself across frames; video frames see the video.
        idx = torch.arange(frames, device=h.device)
        mask = None
        if num_video < frames:
            mask = (idx[:, None] == idx[None, :]) | ((idx[:, None] < num_video) & (idx[None, :] < num_video))
        temporal = rearrange(attention(qt, kt, vt, half_heads, mask), "(b n) f x -> b f n x", b=b)
        return a.proj(torch.cat([spatial, temporal], dim=-1))


def _residual(x, norm, mod, fn):
    """x + gate * fn(modulate(norm(x), shift, scale)); without adaLN (mod of Nones): x + fn(norm(x))."""
    shift, scale, gate = mod
    h = norm(x) if shift is None else modulate(norm(x), shift, scale)
    h = fn(h)
    return x + (h if gate is None else gate * h)


class FinalLayer(nn.Module):
    """(adaLN-modulated) LayerNorm, then Linear to s*p*p*C_out values per token."""

    def __init__(self, config: LatteConfig):
        super().__init__()
        c, d = config, config.hidden_size
        adaln = c.conditioning == "adaln"
        self.norm_final = nn.LayerNorm(d, elementwise_affine=not adaln, eps=1e-6)
        self.linear = nn.Linear(d, c.frames_per_token * c.patch_size**2 * c.out_channels)
        if adaln:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            return self.linear(self.norm_final(x))
        shift, scale = self.adaLN_modulation(c)[:, :, None].chunk(2, dim=-1)  # (B, F, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))


#################################################################################
#                                  The model                                    #
#################################################################################


class Latte(ModelFolderMixin, nn.Module):
    """Class-conditional or unconditional Latte. `Latte("Latte-XL/2", num_classes=101)`, `Latte(config)`.

    forward(x (B, C, F, H, W), t (B,), class_labels (B,) or (B, 1 + use_image_num), use_image_num=0)
    -> `Transformer3DOutput(sample=(B, C_out, F, H, W))`.
    """

    config_class = LatteConfig

    def __init__(self, config: LatteConfig | str | None = None, **overrides):
        super().__init__()
        if isinstance(config, str):
            config = LatteConfig.from_name(config, **overrides)
        elif config is None:
            config = LatteConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = c = config
        d = c.hidden_size
        self.x_embedder = PatchEmbed(c)
        self.t_embedder = TimestepEmbedder(d)
        if c.num_classes:
            self.y_embedder = LabelEmbedder(c.num_classes, d, c.class_dropout_prob)
        # Frozen sin-cos tables for the trained grid and frame count, stored like the original's
        # (requires_grad=False there, buffers here); other shapes get tables computed on the fly.
        grid = c.input_size // c.patch_size
        self.register_buffer("pos_embed", sincos_2d(d, grid, grid)[None])  # (1, N, D)
        if c.temporal_position == "absolute":
            self.register_buffer("temp_embed", self._temporal_table(c.temporal_tokens, None)[None])  # (1,F,D)
        pairs = c.depth // 2
        mixing = {1: ["spatial", "temporal"] * pairs, 2: ["spatial"] * pairs + ["temporal"] * pairs,
                  3: ["factorised"] * pairs, 4: ["split_heads"] * pairs}
        self.blocks = nn.ModuleList([LatteBlock(c, m) for m in mixing[c.variant]])
        # The temporal table is added once, just before the first block that attends across frames.
        self.temporal_table_at = mixing[c.variant].index("temporal") if c.variant in (1, 2) else 0
        self.final_layer = FinalLayer(c)
        self.gradient_checkpointing = False
        self.initialize_weights()

    # ----------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        return self.final_layer.linear.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.final_layer.linear.weight.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def num_frozen_table_values(self) -> int:
        """Values in the stored sin-cos tables (the original's `requires_grad=False` parameters)."""
        return sum(b.numel() for b in self.buffers())

    # ----------------------------------------------------------------- init
    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier linears, N(0, 0.02) embeddings, and the adaLN-Zero zeros."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a Linear over the flattened patch
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.config.num_classes:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # Zero-out adaLN modulation: every gate is 0, so each block starts as the identity.
        for block in self.blocks:
            if hasattr(block, "adaLN_modulation"):
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
        if hasattr(self.final_layer, "adaLN_modulation"):
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        # Zero-out the output layer: the untrained model predicts 0.
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ----------------------------------------------------------------- tables
    def _temporal_table(self, length: int, device) -> torch.Tensor:
        pos = torch.arange(length, device=device, dtype=torch.float32)
        return sincos_1d(self.config.hidden_size, pos)  # (F, D)

    def spatial_table(self, grid_h: int, grid_w: int, device) -> torch.Tensor:
        """(N, D): the stored table at the trained grid, else one computed for (grid_h, grid_w)."""
        if grid_h * grid_w == self.pos_embed.shape[1] and grid_h == grid_w:
            return self.pos_embed[0]
        return sincos_2d(self.config.hidden_size, grid_h, grid_w, device=device).to(self.pos_embed.dtype)

    def temporal_table(self, length: int, device) -> torch.Tensor:
        """(F, D): the stored table's first `length` rows, or one computed for a longer video."""
        if length <= self.temp_embed.shape[1]:
            return self.temp_embed[0, :length]
        return self._temporal_table(length, device).to(self.temp_embed.dtype)

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, t: torch.Tensor | int, class_labels: torch.Tensor | None = None,
                use_image_num: int = 0, return_dict: bool = True):
        """Predict noise (and variance values) for latents x (B, C, F, H, W) at timesteps t (B,).

        `use_image_num` I: the last I frames of x are stills (image-video joint training): they pass patch
        embedding, the spatial attention and the final layer, never the temporal attention or table.
        `class_labels`: (B,) one label per item (its stills share it), or (B, 1 + I): the video's label, then
        one per still; label `num_classes` is the null class. Unconditional models ignore them, like the
        original (so a trainer may pass a data set's labels to any model).
        """
        c = self.config
        b, num_video, grid_h, grid_w = self._check_input(x, use_image_num)
        dtype, s = self.dtype, c.frames_per_token
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        if t.shape != (b,):
            raise ValueError(f"timesteps must be a single value or shape ({b},), got {tuple(t.shape)}")
        fv = num_video // s  # temporal tokens of the video

        h = self.x_embedder(x.to(dtype))  # (B, F, N, D), F = fv + I
        h = h + self.spatial_table(grid_h, grid_w, h.device)
        t_emb = self.t_embedder(t, dtype)  # (B, D)
        cond = t_emb[:, None].expand(b, h.shape[1], -1)  # (B, F, D): per frame, stills have their own labels
        if c.num_classes:
            y_emb = self.y_embedder(self._frame_labels(class_labels, b, fv, use_image_num, x.device))
            cond = cond + y_emb  # (B, F, D)

        if c.conditioning == "tokens":
            extra = [cond] if c.num_classes == 0 else [t_emb[:, None].expand_as(y_emb), y_emb]
            h = torch.cat([torch.stack(extra, dim=2), h], dim=2)  # (B, F, K + N, D)
            cond = None
        rope = None
        if c.temporal_position == "rope":
            rope = rope_tables(h.shape[1], c.temporal_head_dim, h.device)  # cos, sin (F, Dh/2)

        for i, block in enumerate(self.blocks):
            if i == self.temporal_table_at and c.temporal_position == "absolute":
                table = self.temporal_table(fv, h.device)[:, None].to(h.dtype)  # (Fv, 1, D)
                h = torch.cat([h[:, :fv] + table, h[:, fv:]], dim=1)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, cond, fv, rope, use_reentrant=False)
            else:
                h = block(h, cond, fv, rope)

        h = h[:, :, c.num_condition_tokens:]  # drop the condition tokens: (B, F, N, D)
        h = self.final_layer(h, cond)  # (B, F, N, s*p*p*C_out)
        out = rearrange(h, "b f (h w) (s p q c) -> b c (f s) (h p) (w q)", h=grid_h, s=s, p=c.patch_size,
                        q=c.patch_size)
        return Transformer3DOutput(sample=out) if return_dict else (out,)

    def _check_input(self, x: torch.Tensor, use_image_num: int) -> tuple[int, int, int, int]:
        """(batch, video frames, patch rows, patch columns) of valid latents; ValueError otherwise."""
        c = self.config
        if x.ndim != 5:
            raise ValueError(f"latents must be (batch, channels, frames, height, width), got {tuple(x.shape)}"
                             )
        b, channels, frames, height, width = x.shape
        if channels != c.in_channels:
            raise ValueError(f"latents have {channels} channels; the model takes in_channels={c.in_channels}")
        if height % c.patch_size or width % c.patch_size:
            raise ValueError(f"latent height and width ({height} x {width}) must be multiples of "
                             f"patch_size={c.patch_size}")
        if not 0 <= use_image_num < frames:
            raise ValueError(f"use_image_num ({use_image_num}) must be >= 0 and leave at least one video "
                             f"frame of the {frames}")
        if use_image_num and c.patch_embedding == "tubelet":
            raise ValueError("use_image_num needs patch_embedding='frame': a still is not a tubelet")
        num_video = frames - use_image_num
        if num_video % c.frames_per_token:
            raise ValueError(f"{num_video} video frames are not a multiple of tubelet_size={c.tubelet_size}")
        return b, num_video, height // c.patch_size, width // c.patch_size

    def _frame_labels(self, labels, batch: int, fv: int, num_images: int, device) -> torch.Tensor:
        """Class labels per temporal token (B, Fv + I): the video's label, then each still's."""
        c = self.config
        if labels is None:
            raise ValueError(f"the model is class-conditional (num_classes={c.num_classes}): pass labels")
        labels = torch.as_tensor(labels, device=device).long()
        labels = labels.expand(batch) if labels.ndim == 0 else labels
        if labels.shape == (batch,):
            labels = labels[:, None].expand(batch, 1 + num_images)
        if labels.shape != (batch, 1 + num_images):
            raise ValueError(f"class_labels must be shape ({batch},) or ({batch}, {1 + num_images}) "
                             f"(video label, then one per still), got {tuple(labels.shape)}")
        highest = c.num_classes if c.has_null_class else c.num_classes - 1
        if labels.min() < 0 or labels.max() > highest:
            raise ValueError(f"class labels must be in 0..{highest} (num_classes={c.num_classes}"
                             f"{', the last is the null class' if c.has_null_class else ''}), "
                             f"got {labels.min().item()}..{labels.max().item()}")
        return torch.cat([labels[:, :1].expand(batch, fv), labels[:, 1:]], dim=1)

    # ----------------------------------------------------------------- original checkpoints (folders: ModelFolderMixin)
    @classmethod
    def from_original(cls, checkpoint: str | os.PathLike | Mapping, num_heads: int | None = None,
                      torch_dtype: torch.dtype | None = None) -> "Latte":
        """Load an original Latte checkpoint (`ffs.pt`, `skytimelapse.pt`, `taichi-hd.pt`, `ucf101.pt`).

        `checkpoint`: a path, or an already loaded `{"ema": ...}`, `{"model": ...}` or bare state dict. Every
        size is read from the tensors; heads come from the size table by width unless given.
        """
        source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
        raw = load_torch_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
        state = unwrap_state_dict(raw)
        config = infer_original_config(state, source, num_heads)
        return cls.from_state_dict(state, config, source, torch_dtype)

    def save_original(self, path: str | os.PathLike) -> Path:
        """Write `{"ema": state_dict}` (fp32), the released checkpoints' layout; variant-1 models only."""
        if not self.config.is_original_layout:
            raise ValueError("only variant 1 with patch_embedding='frame', conditioning='adaln', "
                             "temporal_position='absolute' exists in the original code; this model is "
                             f"variant={self.config.variant}, {self.config.patch_embedding}, "
                             f"{self.config.conditioning}, {self.config.temporal_position}")
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        return write_file(path, lambda tmp: torch.save({"ema": state}, tmp))


def infer_original_config(state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                          num_heads: int | None = None) -> LatteConfig:
    """The `LatteConfig` of an original class-/unconditional checkpoint, read from its tensor shapes."""
    try:
        conv = state["x_embedder.proj.weight"]  # (D, C, p, p)
        num_patches = state["pos_embed"].shape[1]
        num_frames = state["temp_embed"].shape[1]
        out_features = state["final_layer.linear.weight"].shape[0]  # p*p*C_out
    except KeyError as err:
        t2v = "caption_projection.linear_1.weight" in state
        hint = " (it looks like a text-to-video checkpoint)" if t2v else ""
        raise ValueError(f"{source} is not an original Latte class/unconditional checkpoint: "
                         f"missing {err}{hint}") from err
    if conv.ndim != 4:
        raise ValueError(f"{source}: x_embedder.proj.weight has shape {tuple(conv.shape)}; the original "
                         "uses a Conv2d (D, C, p, p)")
    width, in_channels, patch = conv.shape[0], conv.shape[1], conv.shape[2]
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"{source}: pos_embed has {num_patches} positions, not a square grid")
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    if num_heads is None:
        heads_by_width = {w: h for _, w, h in LATTE_SIZES.values()}
        if width not in heads_by_width:
            raise ValueError(f"{source}: width {width} is not a paper size ({sorted(heads_by_width)}); "
                             "pass num_heads explicitly")
        num_heads = heads_by_width[width]
    table = state.get("y_embedder.embedding_table.weight")
    # The released UCF101 model was trained with label dropout: its table holds num_classes + 1 rows.
    num_classes = 0 if table is None else table.shape[0] - 1
    return LatteConfig(
        input_size=grid * patch, num_frames=num_frames, in_channels=in_channels, patch_size=patch,
        hidden_size=width, depth=depth, num_heads=num_heads, num_classes=num_classes,
        learn_sigma=out_features == 2 * in_channels * patch * patch,
    )


#################################################################################
#                              Cost (analytic FLOPs)                            #
#################################################################################


def forward_flops(config: LatteConfig, batch: int = 1, num_frames: int | None = None,
                  use_image_num: int = 0) -> dict[str, int]:
    """Matmul FLOPs of one forward pass (2 per multiply-add), by part, as this implementation computes them.

    Counted: the patch-embedding convolution, every Linear (timestep MLP, qkv, attention output, MLP, adaLN
    modulation, final layer) and both attention products (QK^T and AV). Not counted: biases, norms,
    activations, softmax, rope rotations, table additions, embedding lookups. Frames default to `num_frames`.
    """
    c, d = config, config.hidden_size
    s = c.frames_per_token
    fv = (c.num_frames if num_frames is None else num_frames) // s
    f = fv + use_image_num  # temporal tokens including stills
    n = (c.input_size // c.patch_size) ** 2
    tokens = n + c.num_condition_tokens  # per frame, condition tokens included
    hidden = int(d * c.mlp_ratio)
    all_rows, video_rows = batch * f * tokens, batch * fv * tokens

    def linear(rows, d_in, d_out):
        return 2 * rows * d_in * d_out

    def core(groups, length, width):  # QK^T and AV over `groups` sequences
        return 2 * 2 * groups * length * length * width

    def attn(rows, groups, length, width=d):
        return linear(rows, d, 3 * d) + core(groups, length, width) + linear(rows, d, d)

    adaln = c.conditioning == "adaln"
    cost = {
        "patch_embed": linear(batch * f * n, c.in_channels * s * c.patch_size**2, d),
        "timestep_mlp": linear(batch, TIMESTEP_FEATURES, d) + linear(batch, d, d),
        "spatial_attention": 0, "temporal_attention": 0, "mlp": 0, "modulation": 0,
        "final_layer": linear(batch * f * n, d, s * c.patch_size**2 * c.out_channels)
        + (linear(batch * f, d, 2 * d) if adaln else 0),
    }
    kinds = ("spatial", "temporal") * (c.depth // 2) if c.variant in (1, 2) else (c.variant,) * c.num_blocks
    for mixing in kinds:
        rows = video_rows if mixing == "temporal" else all_rows
        if mixing in ("spatial", 3):
            cost["spatial_attention"] += attn(all_rows, batch * f, tokens)
        if mixing in ("temporal", 3):
            cost["temporal_attention"] += attn(video_rows, batch * tokens, fv)
        if mixing == 4:  # one qkv and projection; half the width attends each way (stills are masked)
            cost["spatial_attention"] += linear(all_rows, d, 3 * d) + core(batch * f, tokens, d // 2)
            cost["temporal_attention"] += core(batch * tokens, f, d // 2) + linear(all_rows, d, d)
        cost["mlp"] += 2 * linear(rows, d, hidden)
        if adaln:
            sublayers = 3 if mixing == 3 else 2
            cost["modulation"] += linear(batch * (1 if mixing == "temporal" else f), d, 3 * sublayers * d)
    cost["total"] = sum(cost.values())
    return cost
