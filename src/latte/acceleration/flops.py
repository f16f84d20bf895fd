"""Analytic matmul work of one Latte-1 transformer step, to state achieved GFLOP/s against the machine's peak.

Counts 2 * m * n * k for every matrix product (linears, attention scores and weighted sums, patchify); the
element-wise work (norms, GELU, modulation, softmax) is left out. The count is the *necessary* work: the text
projection and the cross-attention keys/values once per step and video (not once per frame), as our model
does, so both implementations are rated against the same number.
"""

from latte.models.latte_t2v import LatteT2VConfig


def t2v_forward_flops(
    config: LatteT2VConfig,
    batch: int,
    frames: int,
    height: int,
    width: int,
    text_len: int,
    temporal: bool = True,
    include_text: bool = True,
) -> int:
    """FLOPs of one forward on latents (batch, C, frames, height, width) with `text_len` text tokens.

    `include_text=False` leaves out the prompt-only work (text projection, cross-attention K/V), which a
    generation computes once rather than per step.
    """
    d, p = config.width, config.patch_size
    n = (height // p) * (width // p)  # patches per frame
    tokens = batch * frames * n  # all tokens of the batch
    text_tokens = batch * text_len

    def linear(rows: int, fan_in: int, fan_out: int) -> int:
        return 2 * rows * fan_in * fan_out

    def self_attention(seq: int) -> int:
        # q, k, v and output projections; scores and weighted sum over sequences of length `seq`.
        return 4 * linear(tokens, d, d) + 2 * 2 * tokens * seq * d

    mlp = linear(tokens, d, 4 * d) + linear(tokens, 4 * d, d)
    spatial = (
        self_attention(n) + mlp + 2 * linear(tokens, d, d) + 2 * 2 * tokens * text_len * d
    )  # + cross q, out
    temporal_block = self_attention(frames) + mlp
    text = linear(text_tokens, config.caption_channels, d) + linear(text_tokens, d, d)
    text += config.num_layers * 2 * linear(text_tokens, d, d)  # cross-attention K and V
    total = config.num_layers * (spatial + (temporal_block if temporal else 0))
    total += linear(tokens, config.in_channels * p * p, d)  # patchify
    total += linear(tokens, d, p * p * config.output_channels)  # proj_out
    total += linear(batch, 256, d) + linear(batch, d, d) + linear(batch, d, 6 * d)  # timestep MLP + adaLN
    return total + (text if include_text else 0)
