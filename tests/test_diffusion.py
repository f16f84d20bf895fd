"""The diffusion objective against independent computations: diffusers' DDPMScheduler tables and variance,
closed-form Gaussian KL from torch.distributions, and an exact-erf decoder likelihood."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from torch.distributions import Normal, kl_divergence

from latte.diffusion import GaussianDiffusion, linear_betas, respace_betas, space_timesteps


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(linear_betas())


@pytest.fixture(scope="module")
def ddpm():
    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         variance_type="learned_range", clip_sample=False)


def test_respacing_keeps_latte_steps():
    kept = space_timesteps(1000, 250)
    assert kept == [round(k * 999 / 249) for k in range(250)]
    assert kept[:3] == [0, 4, 8] and kept[-2:] == [995, 999]
    betas = respace_betas(linear_betas(), kept)
    abar_full = torch.cumprod(1 - linear_betas(), 0)[kept]
    assert torch.allclose(torch.cumprod(1 - betas, 0), abar_full, rtol=1e-12)
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert len(space_timesteps(100, "10,5")) == 15
    with pytest.raises(ValueError, match="cannot take 60"):
        space_timesteps(100, "60,1")


def test_q_sample_matches_diffusers(diffusion, ddpm):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 4, 3, 4, 4, generator=g), torch.randn(4, 4, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    expected = ddpm.add_noise(x0, noise, t)
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), expected, rtol=1e-5, atol=1e-5)


def test_learned_range_matches_diffusers(diffusion, ddpm):
    ddpm.set_timesteps(1000)
    v = torch.linspace(-1.3, 1.3, 7)
    for t in (1, 2, 37, 500, 999):  # diffusers clamps the t=0 posterior variance to 1e-20 instead; skip it
        ours = diffusion.learned_range_log_variance(v[None], torch.tensor([t]))[0]
        theirs = ddpm._get_variance(t, predicted_variance=v, variance_type="learned_range")
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)  # diffusers: float32


def _independent_posterior(x0, x_t, t):
    """q(x_{t-1} | x_t, x0) written from the abar form (DDPM eq. 7), float64."""
    abar = torch.cumprod(1 - linear_betas(), 0)
    a_t, a_prev = abar[t], abar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
    beta = 1 - a_t / a_prev
    mean = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x_t) / (1 - a_t)
    var = beta * (1 - a_prev) / (1 - a_t)
    return mean, var, a_t, beta


def test_vb_is_closed_form_kl_in_bits(diffusion):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 2, 2, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn_like(x0)
    out = torch.randn(1, 4, 2, 3, 3, generator=g, dtype=torch.float64) * 0.5
    for t in (1, 250, 999):
        tt = torch.tensor([t])
        x_t = diffusion.q_sample(x0, tt, noise).double()
        got = diffusion.training_losses(out.float(), x0.float(), x_t.float(), tt, noise.float())
        true_mean, true_var, a_t, beta = _independent_posterior(x0, x_t, t)
        eps, v = out[:, :2], out[:, 2:]
        x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        model_mean, _, _, _ = _independent_posterior(x0_hat, x_t, t)
        frac = (v + 1) / 2
        model_var = torch.exp(frac * beta.log() + (1 - frac) * true_var.log())
        kl = kl_divergence(Normal(true_mean, true_var.sqrt()), Normal(model_mean, model_var.sqrt()))
        expected_vb, expected_mse = kl.mean().reshape(1) / math.log(2), ((noise - eps) ** 2).mean().reshape(1)
        torch.testing.assert_close(got["vb"].double(), expected_vb, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["mse"].double(), expected_mse, rtol=1e-5, atol=0)
        torch.testing.assert_close(got["loss"], got["mse"] + got["vb"])


def test_t0_decoder_nll_matches_exact_gaussian_bins(diffusion):
    """At t=0 the bound is -log P(x0 bin) under the model Gaussian, bins of width 2/255, open edge bins."""
    x0 = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0]).reshape(1, 1, 5, 1, 1)
    x_t = x0 + 0.01
    out = torch.cat([torch.zeros_like(x0), torch.full_like(x0, 0.2)], dim=1)
    tt = torch.tensor([0])
    vb = diffusion.training_losses(out, x0, x_t, tt, torch.zeros_like(x0))["vb"]
    mean, log_var = diffusion.p_mean_log_variance(out.double(), x_t.double(), tt)
    dist = Normal(mean, (0.5 * log_var).exp())
    upper = torch.where(x0 > 0.999, torch.ones(()), dist.cdf(x0 + 1 / 255))
    lower = torch.where(x0 < -0.999, torch.zeros(()), dist.cdf(x0 - 1 / 255))
    expected = -(upper - lower).log().mean() / math.log(2)
    # IDDPM's tanh approximation of the normal CDF differs from erf by < 1e-3 relative here.
    torch.testing.assert_close(vb.double(), expected.reshape(1), rtol=2e-3, atol=1e-4)


def test_hybrid_loss_gradients_are_split(diffusion):
    """MSE trains epsilon only; the bound trains v only (its epsilon is detached)."""
    x0 = torch.randn(2, 4, 2, 2, 2)
    noise = torch.randn_like(x0)
    t = torch.tensor([3, 700])
    x_t = diffusion.q_sample(x0, t, noise)
    out = torch.randn(2, 8, 2, 2, 2, requires_grad=True)
    losses = diffusion.training_losses(out, x0, x_t, t, noise)
    (grad_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    assert grad_vb[:, :4].abs().max() == 0 and grad_vb[:, 4:].abs().max() > 0
    assert grad_mse[:, 4:].abs().max() == 0 and grad_mse[:, :4].abs().max() > 0


def test_plain_mse_and_shape_errors(diffusion):
    x0 = torch.randn(2, 4, 2, 2, 2)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 5])
    losses = diffusion.training_losses(torch.zeros_like(x0), x0, diffusion.q_sample(x0, t, noise), t, noise)
    assert losses["vb"] is None
    torch.testing.assert_close(losses["loss"], (noise**2).mean(dim=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match="expected 4 .* or 8"):
        diffusion.training_losses(torch.zeros(2, 6, 2, 2, 2), x0, x0, t, noise)


def test_v_prediction_matches_diffusers_and_the_epsilon_bound(diffusion, ddpm):
    """v targets equal diffusers' get_velocity; a v output gives the same bound as the epsilon it implies."""
    v_diffusion = GaussianDiffusion(linear_betas(), prediction_type="v_prediction")
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, 2, 3, 3, generator=g), torch.randn(3, 4, 2, 3, 3, generator=g)
    t = torch.tensor([0, 450, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    v = v_diffusion.v_target(x0, t, noise)
    torch.testing.assert_close(v, ddpm.get_velocity(x0, noise, t), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v_diffusion.eps_from_v(v, x_t, t), noise, rtol=1e-4, atol=1e-5)

    var = torch.randn(3, 4, 2, 3, 3, generator=g)
    wrong_v = v + 0.1 * torch.randn(v.shape, generator=g)
    v_losses = v_diffusion.training_losses(torch.cat([wrong_v, var], 1), x0, x_t, t, noise)
    eps_equiv = v_diffusion.eps_from_v(wrong_v, x_t, t)
    eps_losses = diffusion.training_losses(torch.cat([eps_equiv, var], 1), x0, x_t, t, noise)
    torch.testing.assert_close(v_losses["vb"], eps_losses["vb"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v_losses["mse"], ((wrong_v - v) ** 2).mean(dim=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match="unknown prediction_type 'sample'"):
        GaussianDiffusion(linear_betas(), prediction_type="sample")
