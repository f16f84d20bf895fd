"""The diffusers schedulers Latte offers, and how one is built without losing the model's settings.

A Latte model is trained as a DDPM: 1000 steps, its beta schedule, its prediction type (epsilon or v). Every
scheduler must keep those, and none may clip or threshold its x0 estimate: latents are not bounded to
[-1, 1]. DDIM's and DDPM's `clip_sample=True` default, kept when swapping from a config that does not name it
(DPM-Solver's), turns every video into noise.

The offered set (`scheduler_names`) is what was measured to give adherent videos on the shipped model, each at
its recommended step count (docs/default_model.md, "Schedulers"). Left out of diffusers' Karras family are the
ones in `UNSUPPORTED`, with the reason.
"""

import os
from pathlib import Path

from latte.models.io import read_json

# Recommended inference steps per offered scheduler: what reaches the default scheduler's adherence on the
# shipped model (measured, docs/default_model.md). Two-evaluation solvers (Heun, KDPM2) need fewer steps.
RECOMMENDED_STEPS = {
    "DDIMScheduler": 50,
    "DDPMScheduler": 50,
    "DEISMultistepScheduler": 25,
    "DPMSolverMultistepScheduler": 25,
    "DPMSolverSinglestepScheduler": 25,
    "EulerAncestralDiscreteScheduler": 50,
    "EulerDiscreteScheduler": 25,
    "HeunDiscreteScheduler": 20,
    "KDPM2AncestralDiscreteScheduler": 25,
    "KDPM2DiscreteScheduler": 20,
    "LMSDiscreteScheduler": 25,
    "PNDMScheduler": 25,
    "UniPCMultistepScheduler": 25,
}
# Karras-family schedulers that cannot run a Latte model as it is, and why (the error message says it).
UNSUPPORTED = {
    "EDMEulerScheduler": "EDM's noise parametrisation (model timesteps 0.25 log sigma, sigma_data "
    "preconditioning) does not fit a DDPM-trained model",
    "DPMSolverSDEScheduler": "its noise comes from its own Brownian tree (torchsde) seeded by its config, not "
    "from the pipeline's generator, so a seed cannot reproduce a video",
}
# Always set on a built scheduler: no x0 clipping or thresholding.
LATTE_SETTINGS = {"clip_sample": False, "thresholding": False}
# Timestep spacing when the source config does not state one: the grid ends at t = 999, the pure noise the
# model starts from (the shipped model's setting).
DEFAULT_SPACING = "trailing"
# Schedulers whose step() takes the 2C-channel output and uses the variance half itself (learned variance).
LEARNED_VARIANCE_SCHEDULERS = ("DDPMScheduler", "DDPMParallelScheduler")
# Schedulers that, told `variance_type: learned*`, keep the first 3 channels (an RGB-pixel assumption) and so
# break on 4-channel latents; the pipeline gives them epsilon only, so that key is dropped from their config.
RGB_CUT_SCHEDULERS = (
    "DPMSolverMultistepScheduler",
    "DPMSolverMultistepInverseScheduler",
    "DPMSolverSinglestepScheduler",
    "SASolverScheduler",
)
LEARNED_VARIANCE = ("learned", "learned_range")


def scheduler_names() -> list[str]:
    """Scheduler classes a model folder or `--scheduler` may name: those that work with Latte models."""
    return sorted(RECOMMENDED_STEPS)


def recommended_steps(name: str) -> int:
    """The step count scheduler `name` was measured at (see `RECOMMENDED_STEPS`)."""
    _check_name(name)
    return RECOMMENDED_STEPS[name]


def _check_name(name: str) -> None:
    allowed = ", ".join(scheduler_names())
    if name in UNSUPPORTED:
        raise ValueError(f"scheduler {name!r} does not work with Latte models ({UNSUPPORTED[name]}); "
                         f"allowed: {allowed}")
    if name not in RECOMMENDED_STEPS:
        raise ValueError(f"unknown scheduler {name!r}; allowed: {allowed}")


def _defaulted(config) -> set[str]:
    """Keys of a scheduler's config that came from its class defaults, not from the config it was built from
    (diffusers records them in `_use_default_values`)."""
    return set(config.get("_use_default_values", ()))


def _from_config(cls, config, changes: dict):
    """`cls.from_config(config)` with `changes` applied; they count as stated, so diffusers keeps them."""
    defaulted = [key for key in _defaulted(config) if key not in changes]
    return cls.from_config({**config, **changes, "_use_default_values": defaulted})


def make_scheduler(name: str, config):
    """diffusers scheduler `name` built from a config (a folder's own or another scheduler's) with Latte's
    settings: the training schedule and prediction type of `config`, no x0 clipping or thresholding, the
    config's timestep spacing if it states one (else trailing), and no learned-variance key for schedulers that
    would cut it to RGB channels."""
    _check_name(name)
    import diffusers

    changes = dict(LATTE_SETTINGS)
    if "timestep_spacing" not in config or "timestep_spacing" in _defaulted(config):
        changes["timestep_spacing"] = DEFAULT_SPACING
    return keep_latte_settings(_from_config(getattr(diffusers, name), config, changes))


def load_scheduler(folder: str | os.PathLike):
    """The scheduler saved in `folder/scheduler_config.json`, by its `_class_name`, with Latte's settings
    (`make_scheduler`)."""
    path = Path(folder) / "scheduler_config.json"
    config = read_json(path)
    try:
        return make_scheduler(config.get("_class_name", ""), config)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def keep_latte_settings(scheduler):
    """`scheduler` as a Latte pipeline runs it (what `pipe.scheduler = ...` stores): a learned-variance key
    dropped where it would cut epsilon to 3 channels, and x0 clipping turned off where it is only the class
    default (the diffusers idiom `DDIMScheduler.from_config(pipe.scheduler.config)` from a DPM-Solver config);
    clipping asked for explicitly is kept."""
    config = scheduler.config
    changes = {key: value for key, value in LATTE_SETTINGS.items()
               if key in _defaulted(config) and config.get(key) != value}
    if type(scheduler).__name__ in RGB_CUT_SCHEDULERS and config.get("variance_type") in LEARNED_VARIANCE:
        # Latte-1's published config has `variance_type: learned_range`, which a swap to DPM-Solver keeps.
        changes["variance_type"] = None
    return _from_config(type(scheduler), config, changes) if changes else scheduler


def uses_learned_variance(scheduler) -> bool:
    """Learned sigma by channel count: a 2C-channel model output goes whole only to schedulers that use the
    variance half (never decided by the config's `variance_type` alone); every other one gets the C epsilon
    channels."""
    return (
        type(scheduler).__name__ in LEARNED_VARIANCE_SCHEDULERS
        and scheduler.config.get("variance_type") in LEARNED_VARIANCE
    )
