"""Exact speed-ups (text context, epsilon rows, fused CPU linears), the FLOP count, the opt-in wrappers."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latte.acceleration.cache import TeaCache
from latte.acceleration.distributed import CFGParallel, generate_spread
from latte.acceleration.fidelity import psnr, ssim
from latte.acceleration.flops import t2v_forward_flops
from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer
from latte.pipelines import LattePipeline
from tiny_components import build_tiny_components

TOL = 1e-5


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture
def model(tiny_t2v_kwargs):
    torch.manual_seed(0)
    m = LatteT2VTransformer(LatteT2VConfig(**tiny_t2v_kwargs)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return m


def inputs(batch=2, frames=3, tokens=5):
    g = torch.Generator().manual_seed(3)
    return (
        torch.randn(batch, 4, frames, 8, 8, generator=g),
        torch.tensor([10, 900])[:batch],
        torch.randn(batch, tokens, 32, generator=g),
    )


@torch.no_grad()
def test_text_context_equals_raw_text(model):
    x, t, text = inputs()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = model(x, t, text, encoder_attention_mask=mask).sample
    context = model.prepare_text(text, mask)
    assert torch.equal(model(x, t, context).sample, expected)
    half = context.select(slice(1, 2))
    assert half.batch_size == 1
    assert rel_diff(model(x[1:], t[1:], half).sample, expected[1:]) <= TOL
    with pytest.raises(ValueError, match="encoder_attention_mask must be None with a TextContext"):
        model(x, t, context, encoder_attention_mask=mask)
    with pytest.raises(ValueError, match="batch size 1, the latents 2"):
        model(x, t, half)


@torch.no_grad()
def test_epsilon_rows_only(model):
    x, t, text = inputs()
    full = model(x, t, text).sample
    eps = model(x, t, text, sample_channels=4).sample
    assert eps.shape == (2, 4, 3, 8, 8)
    assert rel_diff(eps, full[:, :4]) <= TOL
    with pytest.raises(ValueError, match="sample_channels=9 must be in 1..8"):
        model(x, t, text, sample_channels=9)


def test_fused_inference_linears_equal_autograd_path(model):
    """Inference takes oneDNN's fused linear(+GELU); with autograd the plain ops run. Same numbers."""
    x, t, text = inputs()
    with torch.no_grad():
        fused = model(x, t, text).sample
    plain = model(x, t, text).sample  # parameters require grad: the plain path
    assert plain.requires_grad
    assert rel_diff(fused, plain.detach()) <= TOL


def test_flop_count_matches_torch_counter(model):
    """The analytic count used for GFLOP/s equals torch's own count of the forward's matmuls, plus the
    attention products (torch's counter skips CPU flash attention): 4 * tokens * seq * D per layer."""
    x, t, text = inputs(batch=2, frames=3, tokens=5)
    with FlopCounterMode(display=False) as counter:
        model(x, t, text)  # autograd on: plain aten ops, all of which the counter sees
    tokens, width, layers = 2 * 3 * 16, 64, 2
    attention = layers * 4 * tokens * (16 + 3 + 5) * width  # spatial, temporal, cross
    assert t2v_forward_flops(model.config, 2, 3, 8, 8, 5) == counter.get_total_flops() + attention


STEPS = 6


@pytest.fixture(scope="module")
def components():
    return build_tiny_components(seed=0)


def pipeline(components, transformer=None):
    pipe = LattePipeline(**{**components, "transformer": transformer or components["transformer"]})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe):
    """Final latents (the VAE adds nothing to these checks)."""
    args = dict(num_inference_steps=STEPS, video_length=3, height=32, width=32, output_type="latent")
    return pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **args).frames


@pytest.fixture(scope="module")
def exact(components):
    return run(pipeline(components))


def test_teacache_zero_threshold_is_exact_and_counts_steps(components, exact):
    cached = TeaCache(components["transformer"], threshold=0.0)
    pipe = pipeline(components, cached)
    assert pipe.transformer.config.in_channels == 4  # attributes come from the wrapped model
    assert rel_diff(run(pipe), exact) <= TOL
    assert (cached.computed, cached.skipped) == (STEPS, 0)


def test_teacache_skips_steps_and_stays_close(components, exact):
    cached = TeaCache(components["transformer"], threshold=1.0)  # big: 6 coarse steps change a lot
    pipe = pipeline(components, cached)
    latents = run(pipe)
    assert cached.computed + cached.skipped == STEPS and cached.computed >= 1 and cached.skipped >= 1
    assert 0 < rel_diff(latents, exact) < 0.5
    run(pipe)  # a second generation starts afresh (timesteps go back up)
    assert cached.computed + cached.skipped == STEPS
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        TeaCache(components["transformer"], threshold=-1)
    with pytest.raises(ValueError, match="wraps latte's LatteT2VTransformer"):
        TeaCache(torch.nn.Linear(2, 2))


def test_single_process_modes_are_exact(components, exact):
    """Without torch.distributed the CFG split and the prompt spread degenerate to the plain computation."""
    assert rel_diff(run(pipeline(components, CFGParallel(components["transformer"]))), exact) <= TOL

    def draw(prompt, generator):
        return prompt + str(torch.randint(0, 99, (1,), generator=generator).item())

    expected = [draw(p, torch.Generator().manual_seed(5 + i)) for i, p in enumerate(["a", "b"])]
    assert generate_spread(draw, ["a", "b"], seed=5) == expected


def test_psnr_and_ssim():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 3, 24, 24, generator=g)
    assert psnr(video, video) == float("inf") and ssim(video, video) == pytest.approx(1.0, abs=1e-6)
    assert psnr((video + 0.1).clamp(max=2), video) == pytest.approx(20.0, abs=1e-3)  # mse 0.01
    noisy = (video + 0.05 * torch.randn(video.shape, generator=g)).clamp(0, 1)
    very_noisy = (video + 0.3 * torch.randn(video.shape, generator=g)).clamp(0, 1)
    assert 1 > ssim(noisy, video) > ssim(very_noisy, video) > 0
    assert ssim(noisy, video) == pytest.approx(ssim(video, noisy), abs=1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(video, video[:1])
