"""Latte-1 text-to-video transformer, with diffusers' `LatteTransformer3DModel` key names and config keys.

Input latents (B, C, F, H, W), timesteps (B,), projected T5 text (B, L, caption_channels). Spatial blocks
attend within a frame and cross-attend to the text; temporal blocks attend across frames at one patch
position. The two kinds interleave (the paper's variant 1). A 1-D sin-cos frame table is added once, before
the first temporal block; it is built for the actual frame count, so any F >= 1 works.

At CPU inference the linears run as fused oneDNN calls (`latte.models.layers.linear`); the prompt-only work
can be done once per generation with `prepare_text`. Outputs equal diffusers' to float rounding.

Letters in shape comments: B batch, F frames, N patches per frame, L text tokens, D width, p patch size.
"""

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from latte.models.embeddings import sincos_1d, sincos_2d, timestep_features
from latte.models.io import ModelFolderMixin, config_from_dict, load_torch_checkpoint, unwrap_state_dict
from latte.models.layers import FeedForward, attention, linear, modulate

DIFFUSERS_CLASS_NAME = "LatteTransformer3DModel"
TIMESTEP_FEATURES = 256  # width of the sin-cos timestep features fed to the timestep MLP
_ACTIVATIONS = {"gelu-approximate": "tanh", "gelu": "none"}


@dataclass(frozen=True)
class LatteT2VConfig:
    """The constructor arguments, named as in diffusers' `transformer/config.json` (Latte-1 defaults)."""

    num_attention_heads: int = 16
    attention_head_dim: int = 72
    in_channels: int = 4
    out_channels: int | None = 8  # 2 * in_channels: epsilon plus the learned-range variance value
    num_layers: int = 28  # pairs of (spatial, temporal) blocks
    dropout: float = 0.0
    cross_attention_dim: int | None = 1152
    attention_bias: bool = True
    sample_size: int = 64  # latent side the position table was trained at
    patch_size: int = 2
    activation_fn: str = "gelu-approximate"
    num_embeds_ada_norm: int | None = 1000
    norm_type: str = "ada_norm_single"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    caption_channels: int = 4096
    video_length: int = 16  # frames seen in training; only a default here, any count works

    def __post_init__(self):
        width = self.num_attention_heads * self.attention_head_dim
        if self.num_attention_heads < 1 or self.attention_head_dim < 1 or width % 2:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) x attention_head_dim "
                f"({self.attention_head_dim}) must be a positive even width"
            )
        if self.patch_size < 1 or self.num_layers < 1 or self.in_channels < 1 or self.sample_size < 1:
            raise ValueError("patch_size, num_layers, in_channels and sample_size must be >= 1")
        if self.cross_attention_dim not in (None, width):
            raise ValueError(
                f"cross_attention_dim ({self.cross_attention_dim}) must equal the width {width}: "
                "the text is projected to the model width before cross-attention"
            )
        if self.activation_fn not in _ACTIVATIONS:
            raise ValueError(
                f"activation_fn {self.activation_fn!r} is not supported; use one of {list(_ACTIVATIONS)}"
            )
        if self.norm_type != "ada_norm_single" or self.norm_elementwise_affine:
            raise ValueError(
                f"norm_type={self.norm_type!r}, norm_elementwise_affine={self.norm_elementwise_affine} is "
                "not a "
                "Latte configuration; Latte uses 'ada_norm_single' without affine LayerNorm parameters"
            )

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike | None = None) -> "LatteT2VConfig":
        """Build from a config.json dict (read from `source`, named in errors); keys starting with `_` (class
        name, versions) are ignored."""
        return config_from_dict(cls, data, "Latte transformer", source)

    def to_dict(self) -> dict:
        return {
            "_class_name": DIFFUSERS_CLASS_NAME,
            "_diffusers_version": "0.30.0",
            **dataclasses.asdict(self),
        }


@dataclass
class Transformer3DOutput:
    sample: torch.Tensor  # (B, C_out, F, H, W)


@dataclass
class TextContext:
    """The prompt-only work of a generation, from `LatteT2VTransformer.prepare_text`: computed once, reused at
    every denoising step (the text never changes between steps)."""

    keys_values: list[
        tuple[torch.Tensor, torch.Tensor]
    ]  # per spatial block: cross-attention K, V (B, L, D) each
    mask: torch.Tensor | None  # SDPA mask (B, 1, 1, L): bool keep-mask or additive bias; None = attend to all

    @property
    def batch_size(self) -> int:
        return self.keys_values[0][0].shape[0]

    def select(self, index: slice | torch.Tensor) -> "TextContext":
        """The context of a sub-batch (e.g. one half of a classifier-free-guidance batch)."""
        mask = None if self.mask is None else self.mask[index]
        return TextContext([(k[index], v[index]) for k, v in self.keys_values], mask)


#################################################################################
#                          Embedding and conditioning                           #
#################################################################################


class PatchEmbed(nn.Module):
    """Per-frame patchify: Conv2d with kernel = stride = p, flattened to tokens."""

    def __init__(self, in_channels: int, width: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "n d h w -> n (h w) d")  # (B*F, N, D)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, width)
        self.linear_2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _TimestepProjection(nn.Module):
    """Holds the timestep MLP under diffusers' key path `adaln_single.emb.timestep_embedder`."""

    def __init__(self, width: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(TIMESTEP_FEATURES, width)


class AdaLNSingle(nn.Module):
    """PixArt-alpha's adaLN-single: one timestep embedding `emb` (B, D) and one modulation `t6` (B, 6D)
    shared by every block, which adds its own learned `scale_shift_table` to it."""

    def __init__(self, width: int):
        super().__init__()
        self.emb = _TimestepProjection(width)
        self.linear = nn.Linear(width, 6 * width)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.emb.timestep_embedder(timestep_features(timestep).to(dtype))  # (B, D)
        return emb, self.linear(F.silu(emb))  # (B, D), (B, 6D)


class CaptionProjection(nn.Module):
    """T5 features to model width: Linear, tanh-GELU, Linear."""

    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, width)
        self.linear_2 = nn.Linear(width, width)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return linear(linear(text, self.linear_1, gelu="tanh"), self.linear_2)


#################################################################################
#                                    Blocks                                     #
#################################################################################


class Attention(nn.Module):
    """Multi-head attention, separate q/k/v projections (diffusers' `to_q`, `to_k`, `to_v`, `to_out.0`)."""

    def __init__(
        self,
        width: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(width, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or width, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or width, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, width), nn.Dropout(dropout)])

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return linear(context, self.to_k), linear(context, self.to_v)  # (B, L, H*Dh) each

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ):
        """Self-attention over `x` (B, S, D), or cross-attention to precomputed keys/values (B, L, D)."""
        k, v = self.project_kv(x) if kv is None else kv
        out = attention(linear(x, self.to_q), k, v, self.heads, mask)
        return self.to_out[1](linear(out, self.to_out[0]))


class LatteT2VBlock(nn.Module):
    """Self-attention (+ cross-attention to the text in spatial blocks) + MLP, modulated by adaLN-single.

    Tokens arrive per video as (B, S, D) with S = G * T: `group_len` T consecutive tokens form one attention
    sequence (a frame's N patches for spatial blocks, a patch's F frames for temporal ones). The modulation
    has one value per video and broadcasts over all S tokens: computed once, not once per frame or patch.
    """

    def __init__(self, config: LatteT2VConfig, cross_attention: bool):
        super().__init__()
        d, c = config.width, config
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=c.norm_eps)
        self.attn1 = Attention(
            d, c.num_attention_heads, c.attention_head_dim, bias=c.attention_bias, dropout=c.dropout
        )
        self.attn2 = (
            Attention(
                d,
                c.num_attention_heads,
                c.attention_head_dim,
                context_dim=c.cross_attention_dim or d,
                bias=c.attention_bias,
                dropout=c.dropout,
            )
            if cross_attention
            else None
        )
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=c.norm_eps)
        self.ff = FeedForward(d, dropout=c.dropout, approximate=_ACTIVATIONS[c.activation_fn])
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def modulation(self, t6: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """shift, scale, gate (attention), shift, scale, gate (MLP): (B, 1, D) each, one value per video."""
        b, d = t6.shape[0], self.scale_shift_table.shape[1]
        return (self.scale_shift_table[None] + t6.reshape(b, 6, d)).chunk(6, dim=1)

    def attention_input(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(shift, self.norm1(x), 1 + scale)  # modulate(LN(x), shift, scale)

    def forward(
        self,
        x: torch.Tensor,
        t6: torch.Tensor,
        group_len: int,
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, s, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(t6)

        # addcmul: modulation and gated residuals in one pass each: x + gate * f(LN(x) * (1 + scale) + shift).
        h = self.attention_input(x, shift_msa, scale_msa).reshape(b * s // group_len, group_len, d)
        x = torch.addcmul(x, gate_msa, self.attn1(h).reshape(b, s, d))
        if self.attn2 is not None:
            # Every query of a video sees the same text: one (B, S) x (B, L) attention = the per-frame one.
            x = x + self.attn2(x, text_kv, text_mask)
        x = torch.addcmul(x, gate_mlp, self.ff(torch.addcmul(shift_mlp, self.norm2(x), 1 + scale_mlp)))
        return x


#################################################################################
#                                  The model                                    #
#################################################################################


class LatteT2VTransformer(ModelFolderMixin, nn.Module):
    """Latte-1 text-to-video denoiser: `forward(latents (B, C, F, H, W), timestep (B,), text (B, L, Ct))`.

    `save_pretrained` writes the diffusers layout, which diffusers' `LatteTransformer3DModel` loads."""

    config_class = LatteT2VConfig

    def __init__(self, config: LatteT2VConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = LatteT2VConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        d = config.width
        self.pos_embed = PatchEmbed(config.in_channels, d, config.patch_size)
        self.adaln_single = AdaLNSingle(d)
        self.caption_projection = CaptionProjection(config.caption_channels, d)
        self.transformer_blocks = nn.ModuleList(
            [LatteT2VBlock(config, cross_attention=True) for _ in range(config.num_layers)]
        )
        self.temporal_transformer_blocks = nn.ModuleList(
            [LatteT2VBlock(config, cross_attention=False) for _ in range(config.num_layers)]
        )
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, config.patch_size**2 * config.output_channels)
        self.gradient_checkpointing = False

    # ----------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj_out.weight.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    # ----------------------------------------------------------------- tables
    def spatial_table(self, grid_h: int, grid_w: int, device: torch.device) -> torch.Tensor:
        """(N, D) patch positions; a grid unlike the trained one is stretched onto the trained range."""
        c = self.config
        base = c.sample_size // c.patch_size
        return sincos_2d(
            c.width,
            grid_h,
            grid_w,
            base_size=base,
            interpolation_scale=max(c.sample_size // 64, 1),
            device=device,
        )

    def temporal_table(self, num_frames: int, device: torch.device, spacing: float = 1.0) -> torch.Tensor:
        """(F, D) frame positions 0, spacing, ..., (F-1) * spacing (below 1: slow motion, see
        `latte.pipelines.long_video`)."""
        positions = torch.arange(num_frames, device=device, dtype=torch.float32) * spacing
        return sincos_1d(self.config.width, positions)

    # ----------------------------------------------------------------- forward
    def check_latents(self, shape: tuple[int, ...]) -> None:
        c = self.config
        if len(shape) != 5:
            raise ValueError(
                f"latents must be (batch, channels, frames, height, width), got shape {tuple(shape)}"
            )
        _, channels, frames, height, width = shape
        if channels != c.in_channels:
            raise ValueError(
                f"latents have {channels} channels; this model takes in_channels={c.in_channels}"
            )
        if frames < 1:
            raise ValueError(f"need at least 1 frame, got {frames}")
        if height % c.patch_size or width % c.patch_size:
            raise ValueError(
                f"latent height and width ({height} x {width}) must be multiples of patch_size={c.patch_size}"
            )

    def prepare_text(
        self, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None = None
    ) -> TextContext:
        """Everything that depends only on the prompt: the caption projection and every spatial block's
        cross-attention keys and values. Compute it once per generation and pass it to `forward` in place of
        `encoder_hidden_states`; diffusers redoes this work at every step (and the K/V once per frame)."""
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != self.config.caption_channels:
            raise ValueError(
                f"encoder_hidden_states must be (batch, tokens, {self.config.caption_channels}), "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        text = self.caption_projection(encoder_hidden_states.to(self.dtype))  # (B, L, D)
        keys_values = [block.attn2.project_kv(text) for block in self.transformer_blocks]  # (B, L, D) each
        return TextContext(keys_values, self._text_mask(encoder_attention_mask, text.shape[0], text.dtype))

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor | TextContext,
        encoder_attention_mask: torch.Tensor | None = None,
        enable_temporal_attentions: bool = True,
        return_dict: bool = True,
        sample_channels: int | None = None,
    ):
        """Predict noise (and variance values) for latents `hidden_states` (B, C, F, H, W).

        `timestep`: (B,), a single value or an int. `encoder_hidden_states`: (B, L, caption_channels), or the
        `TextContext` from `prepare_text` (then the mask is already inside it).
        `encoder_attention_mask`: (B, L), 1/True = attend, 0/False = ignore, or an additive bias (B, 1, L).
        `sample_channels`: compute only the first k output channels (e.g. the 4 epsilon channels when the
        scheduler does not use the learned variance); default all.
        Returns `Transformer3DOutput(sample=(B, C_out, F, H, W))`, or a 1-tuple when `return_dict=False`.
        """
        context = self.text_context(encoder_hidden_states, encoder_attention_mask, hidden_states.shape[0])
        out = self.denoise(hidden_states, timestep, context, enable_temporal_attentions, sample_channels)
        return Transformer3DOutput(sample=out) if return_dict else (out,)

    # The forward pass in phases, also used by the wrappers in latte.acceleration: they share `forward` and
    # `denoise` and replace some of the phases (`text_context`, `denoise`, `embed`, `run_blocks`).
    def denoise(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | int,
        context: TextContext,
        enable_temporal_attentions: bool = True,
        sample_channels: int | None = None,
    ) -> torch.Tensor:
        """`forward` after the text: latents (B, C, F, H, W) -> output (B, C_out or sample_channels, F, H, W)."""
        x, emb, t6 = self.embed(hidden_states, timestep)  # (B, F*N, D), (B, D), (B, 6D)
        x = self.run_blocks(x, t6, context, hidden_states.shape[2], enable_temporal_attentions)
        return self.unembed(x, emb, hidden_states.shape, sample_channels)

    def text_context(
        self,
        encoder_hidden_states: torch.Tensor | TextContext,
        encoder_attention_mask: torch.Tensor | None,
        batch: int,
    ) -> TextContext:
        """`encoder_hidden_states` as a TextContext (computed here unless the caller prepared it)."""
        if isinstance(encoder_hidden_states, TextContext):
            if encoder_attention_mask is not None:
                raise ValueError(
                    "encoder_attention_mask must be None with a TextContext: prepare_text took the mask"
                )
            context = encoder_hidden_states
        else:
            context = self.prepare_text(encoder_hidden_states, encoder_attention_mask)
        if context.batch_size != batch:
            raise ValueError(f"the text has batch size {context.batch_size}, the latents {batch}")
        return context

    def embed(self, hidden_states: torch.Tensor, timestep: torch.Tensor | int):
        """Latents (B, C, F, H, W) -> tokens (B, F*N, D) frame-major, timestep embedding (B, D) and
        modulation (B, 6D)."""
        c = self.config
        self.check_latents(tuple(hidden_states.shape))
        b, _, _, height, width = hidden_states.shape
        dtype = self.dtype
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1)
        if timestep.numel() == 1:
            timestep = timestep.expand(b)
        x = rearrange(hidden_states.to(dtype), "b c f h w -> (b f) c h w")
        x = self.pos_embed(x)  # (B*F, N, D)
        x = (x + self.spatial_table(height // c.patch_size, width // c.patch_size, x.device)).to(dtype)
        x = rearrange(x, "(b f) n d -> b (f n) d", b=b)  # spatial order: frame-major
        emb, t6 = self.adaln_single(timestep, dtype)  # (B, D), (B, 6D)
        return x, emb, t6

    def run_blocks(
        self, x: torch.Tensor, t6: torch.Tensor, context: TextContext, frames: int, temporal: bool = True
    ) -> torch.Tensor:
        """All (spatial, temporal) block pairs on tokens (B, F*N, D), frame-major in and out."""
        n = x.shape[1] // frames
        for i, (spatial, temporal_block) in enumerate(
            zip(self.transformer_blocks, self.temporal_transformer_blocks, strict=True)
        ):
            x = self._run(spatial, x, t6, n, context.keys_values[i], context.mask)
            if temporal:
                x = rearrange(x, "b (f n) d -> b (n f) d", f=frames)  # patch-major
                if i == 0 and frames > 1:
                    x = x + self.temporal_table(frames, x.device).to(x.dtype).repeat(n, 1)  # (N*F, D)
                x = self._run(temporal_block, x, t6, frames)
                x = rearrange(x, "b (n f) d -> b (f n) d", f=frames)
        return x

    def unembed(
        self, x: torch.Tensor, emb: torch.Tensor, shape: tuple[int, ...], sample_channels: int | None = None
    ) -> torch.Tensor:
        """Final modulated projection, unpatchify: tokens (B, F*N, D) -> (B, k, F, H, W), latents `shape`."""
        c, p = self.config, self.config.patch_size
        channels = c.output_channels if sample_channels is None else sample_channels
        if not 1 <= channels <= c.output_channels:
            raise ValueError(f"sample_channels={sample_channels} must be in 1..{c.output_channels}")
        _, _, frames, height, _ = shape
        shift, scale = (self.scale_shift_table[None] + emb[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        x = self._project_out(modulate(self.norm_out(x), shift, scale), channels)  # (B, F*N, p*p*k)
        return rearrange(x, "b (f h w) (p q c) -> b c f (h p) (w q)", f=frames, h=height // p, p=p, q=p)

    def _project_out(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """`proj_out` restricted to the rows of the first `channels` channels (feature order [p][q][c])."""
        if channels == self.config.output_channels:
            return self.proj_out(x)
        d, pp = self.config.width, self.config.patch_size**2
        weight = self.proj_out.weight.view(pp, -1, d)[:, :channels].reshape(pp * channels, d)
        bias = self.proj_out.bias.view(pp, -1)[:, :channels].reshape(-1)
        return F.linear(x, weight, bias)

    def _run(self, block: LatteT2VBlock, x, t6, group_len, text_kv=None, text_mask=None):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, t6, group_len, text_kv, text_mask, use_reentrant=False)
        return block(x, t6, group_len, text_kv, text_mask)

    @staticmethod
    def _text_mask(mask: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        """(B, L) keep-mask or (B, 1, L) additive bias -> an SDPA mask (B, 1, 1, L)."""
        if mask is None:
            return None
        if mask.ndim == 3 and mask.shape[0] == batch and mask.shape[1] == 1:
            return mask.to(dtype)[:, None]  # additive bias
        if mask.ndim != 2 or mask.shape[0] != batch:
            raise ValueError(
                f"encoder_attention_mask must be (batch={batch}, tokens) or (batch, 1, tokens), "
                f"got {tuple(mask.shape)}"
            )
        return mask.bool()[:, None, None, :]

    # ----------------------------------------------------------------- init
    def initialize_weights(self) -> None:
        """Training init as in DiT / PixArt: Xavier linears, and every output gate starts at zero."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.pos_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.adaln_single.emb.timestep_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.adaln_single.emb.timestep_embedder.linear_2.weight, std=0.02)
        # Zero-out the output projection: the untrained model predicts 0 and every block starts as identity
        # only through its gates, which train from the adaLN-single modulation.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        # The caption projection and cross-attention keep their Xavier init. PixArt starts both near zero
        # (std 0.02, zeroed attn2 output), which for a small model trained for thousands rather than
        # hundreds of thousands of steps leaves the text path unused: the loss never feels the caption.

    # ----------------------------------------------------------------- parameters
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----------------------------------------------------------------- original checkpoints (folders: ModelFolderMixin)
    @classmethod
    def from_original(
        cls, path: str | os.PathLike, torch_dtype: torch.dtype | None = None, **config_overrides
    ):
        """Load an original Latte `t2v.pt`-style pickle (`{"ema": ...}`, `{"model": ...}` or a bare state
        dict), inferring the sizes from the tensors. Heads default to width // 72 (Latte-1's head width)."""
        state = unwrap_state_dict(load_torch_checkpoint(path))
        for table in ("temp_pos_embed", "pos_embed.pos_embed"):
            state.pop(table, None)  # fixed sin-cos tables, rebuilt for the actual shape
        config = dataclasses.replace(infer_t2v_config(state, str(path)), **config_overrides)
        return cls.from_state_dict(state, config, str(path), torch_dtype)


def infer_t2v_config(state: dict, source: str) -> LatteT2VConfig:
    """Sizes of a Latte T2V transformer from its tensors."""
    try:
        conv = state["pos_embed.proj.weight"]  # (D, C, p, p)
        width, in_channels, patch = conv.shape[0], conv.shape[1], conv.shape[2]
        out_features = state["proj_out.weight"].shape[0]
        caption_channels = state["caption_projection.linear_1.weight"].shape[1]
    except KeyError as err:
        raise ValueError(f"{source} is not a Latte text-to-video checkpoint: missing {err}") from err
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks."))
    head_dim = 72 if width % 72 == 0 else 64 if width % 64 == 0 else width
    return LatteT2VConfig(
        num_attention_heads=width // head_dim,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=out_features // patch**2,
        num_layers=layers,
        cross_attention_dim=width,
        patch_size=patch,
        caption_channels=caption_channels,
    )
