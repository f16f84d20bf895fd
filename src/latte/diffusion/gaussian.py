"""The diffusion training objective of Latte (improved DDPM): forward noising, the true posterior, the
learned-range variance and the hybrid loss (MSE on epsilon + variational bound with the mean detached).

All schedule arithmetic is float64 and gathered per timestep; losses are float32 per batch item.
References: Nichol & Dhariwal 2021 (https://arxiv.org/abs/2102.09672), `gaussian_diffusion.py` of IDDPM/DiT.
"""

import math

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")  # what a model's first C channels are (diffusers' names)

# Half-width of a pixel bin in [-1, 1] data: the t=0 decoder is discretised to 8 bits.
DECODER_BIN = 1.0 / 255.0


def _gather(table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """table[t] as float32, shaped (B, 1, ..., 1) to broadcast over a tensor with `ndim` dims."""
    return table.to(t.device)[t].float().reshape(-1, *([1] * (ndim - 1)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension except the batch: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # The tanh approximation IDDPM trained with (kept so the loss equals the original one).
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor):
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)), elementwise, nats.

    The edge bins extend to -inf / +inf, as in PixelCNN++ and IDDPM.
    """
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + DECODER_BIN))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - DECODER_BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))),
    )
    return log_probs


class GaussianDiffusion:
    """Tables of a discrete Gaussian diffusion with the given betas (T,), and its training loss.

    Models output epsilon (C channels) or epsilon plus a learned-range variance value v (2C channels):
    log var = frac * log(beta_t) + (1 - frac) * log(posterior variance_t), frac = (v + 1) / 2.
    With `prediction_type="v_prediction"` the first C channels are v = sqrt(abar) eps - sqrt(1 - abar) x0
    instead (Salimans & Ho 2022): the MSE is on v, and the bound uses the epsilon that v implies.
    """

    def __init__(self, betas: torch.Tensor, prediction_type: str = "epsilon"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; allowed: {', '.join(PREDICTION_TYPES)}")
        self.prediction_type = prediction_type
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D tensor of values in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The variance is 0 at t = 0: its log takes index 1's value there (IDDPM's "clipped" log variance).
        log_var = self.posterior_variance.clone()
        log_var[0] = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = log_var.log()
        one_minus = 1.0 - self.alphas_cumprod
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / one_minus

    # ----------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t (B,) long."""
        return (_gather(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean and clipped log variance of q(x_{t-1} | x_t, x0)."""
        n = x_t.ndim
        mean = _gather(self.posterior_mean_coef1, t, n) * x0 + _gather(self.posterior_mean_coef2, t, n) * x_t
        return mean, _gather(self.posterior_log_variance_clipped, t, x_t.ndim)

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0."""
        return (_gather(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
                - _gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)

    def eps_from_v(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The epsilon a v prediction implies: sqrt(abar_t) v + sqrt(1 - abar_t) x_t."""
        return (_gather(self.sqrt_alphas_cumprod, t, x_t.ndim) * v
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t)

    # ----------------------------------------------------------------- model distribution
    def learned_range_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Interpolate, in log space, between the posterior variance (v = -1) and beta_t (v = +1)."""
        frac = (v + 1) / 2
        max_log = _gather(self.betas.log(), t, v.ndim)
        min_log = _gather(self.posterior_log_variance_clipped, t, v.ndim)
        return frac * max_log + (1 - frac) * min_log

    def p_mean_log_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean and log variance of p(x_{t-1} | x_t) for a 2C-channel (epsilon, v) output; no x0 clipping."""
        eps, v = model_output.chunk(2, dim=1)
        log_var = self.learned_range_log_variance(v, t)
        pred_x0 = (_gather(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                   - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)
        mean, _ = self.q_posterior(pred_x0, x_t, t)
        return mean, log_var

    def vb_terms_bpd(self, model_output, x0, x_t, t) -> torch.Tensor:
        """One term of the variational bound in bits per element (B,): KL to the posterior for t > 0,
        the discretised decoder NLL at t = 0."""
        true_mean, true_log_var = self.q_posterior(x0, x_t, t)
        mean, log_var = self.p_mean_log_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    # ----------------------------------------------------------------- loss
    def training_losses(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                        t: torch.Tensor, noise: torch.Tensor) -> dict:
        """Per-item losses (B,) for a prediction at `x_t = q_sample(x0, t, noise)`.

        `model_output` has C channels (epsilon or v: plain MSE) or 2C (prediction, variance value: hybrid loss,
        weight 1 on vb). Returns dict(loss, mse, vb) with vb None for the plain objective.
        """
        channels = x0.shape[1]
        if model_output.shape[1] not in (channels, 2 * channels) or model_output.shape[2:] != x0.shape[2:]:
            raise ValueError(
                f"model output {tuple(model_output.shape)} does not fit the data {tuple(x0.shape)}: expected "
                f"{channels} (epsilon) or {2 * channels} (epsilon + variance) channels"
            )
        model_output = model_output.float()
        pred = model_output[:, :channels]
        target = noise.float() if self.prediction_type == "epsilon" else self.v_target(x0.float(), t, noise.float())
        mse = mean_flat((target - pred) ** 2)
        if model_output.shape[1] == channels:
            return {"loss": mse, "mse": mse, "vb": None}
        # The bound trains only the variance: the prediction is detached, so the mean is learnt from the MSE.
        eps = pred if self.prediction_type == "epsilon" else self.eps_from_v(pred, x_t.float(), t)
        frozen = torch.cat([eps.detach(), model_output[:, channels:]], dim=1)
        vb = self.vb_terms_bpd(frozen, x0.float(), x_t.float(), t)
        return {"loss": mse + vb, "mse": mse, "vb": vb}
