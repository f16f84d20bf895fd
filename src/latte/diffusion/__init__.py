"""Diffusion math: schedules, respacing and the Gaussian diffusion training objective."""

from latte.diffusion.gaussian import GaussianDiffusion
from latte.diffusion.schedules import linear_betas, respace_betas, space_timesteps

__all__ = ["GaussianDiffusion", "linear_betas", "respace_betas", "space_timesteps"]
