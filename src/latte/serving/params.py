"""What one job may ask for: the request body, the served model's defaults, and the server's per-job limits.

Everything here is checked when a job is submitted, before it is queued: a job that is accepted runs.
"""

import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from latte.models.io import read_json

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 100.0


class InvalidParam(ValueError):
    """A request field the server cannot accept; `field` names it (HTTP 422)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class VideoRequest(BaseModel):
    """The body of `POST /v1/videos`. Omitted fields take the model's defaults; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    num_frames: int | None = Field(None, ge=1, strict=True)
    height: int | None = Field(None, ge=1, strict=True)
    width: int | None = Field(None, ge=1, strict=True)
    steps: int | None = Field(None, ge=1, strict=True)
    guidance_scale: float | None = Field(None, ge=0, le=MAX_GUIDANCE, allow_inf_nan=False, strict=True)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, strict=True)  # None: a random seed, kept in the job
    scheduler: str | None = None  # a diffusers scheduler class name; None: the model's own


@dataclass(frozen=True)
class Limits:
    """Per-job limits (`latte serve --max-frames/--max-steps/--max-pixels`)."""

    max_frames: int = 16
    max_steps: int = 100
    max_pixels: int = 512 * 512  # height x width of one frame

    def __post_init__(self):
        for name in ("max_frames", "max_steps", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def model_defaults(folder: Path) -> dict:
    """Generation defaults of a model folder, read from its JSON files without loading weights: the same values
    `LattePipeline.generation_settings` gives (the folder's `_generate_defaults`, else the built-in ones and the
    transformer's trained frames and size), plus fps."""
    from latte.pipelines.defaults import FOLDER_DEFAULTS_KEY, check_generate_defaults, resolve_settings

    index = folder / "model_index.json"
    folder_defaults = check_generate_defaults(read_json(index).get(FOLDER_DEFAULTS_KEY, {}), str(index))
    transformer = read_json(folder / "transformer" / "config.json")
    return resolve_settings(
        folder_defaults, transformer.get("video_length", 16), transformer["sample_size"] * vae_factor(folder),
        steps=None, guidance=None, fps=None, frames=None, height=None, width=None,
    )


def vae_factor(folder: Path) -> int:
    """Spatial downsampling of the folder's VAE (as `latte.models.vae.vae_scale_factor`, from its config)."""
    from latte.models.vae import downsampling

    return downsampling(read_json(folder / "vae" / "config.json")["block_out_channels"])


@dataclass(frozen=True)
class ModelInfo:
    """What the HTTP side knows of the served model, read from its folder's JSON files (no weights)."""

    name: str
    path: Path
    defaults: dict
    size_multiple: int  # height and width must be multiples of it (VAE factor x patch size)
    scheduler: str  # the folder's scheduler class
    schedulers: tuple[str, ...]  # every scheduler a job may name

    @classmethod
    def from_folder(cls, folder: Path) -> "ModelInfo":
        from latte.pipelines.schedulers import scheduler_names

        folder = Path(folder)
        patch = read_json(folder / "transformer" / "config.json")["patch_size"]
        return cls(
            name=folder.resolve().name,
            path=folder,
            defaults=model_defaults(folder),
            size_multiple=vae_factor(folder) * patch,
            scheduler=read_json(folder / "scheduler" / "scheduler_config.json")["_class_name"],
            schedulers=tuple(scheduler_names()),
        )


def resolve_params(request: VideoRequest, model: ModelInfo, limits: Limits) -> dict:
    """The full parameters of a job (the model's defaults filled in, a seed drawn if none was given), or
    `InvalidParam` naming the first field the server cannot run."""
    if not request.prompt.strip():
        raise InvalidParam("prompt", "must contain text, got only white space")
    d = model.defaults
    given = request.model_dump()

    def pick(field: str, default_key: str):
        return given[field] if given[field] is not None else d[default_key]

    params = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "num_frames": pick("num_frames", "frames"),
        "height": pick("height", "height"),
        "width": pick("width", "width"),
        "steps": pick("steps", "steps"),
        "guidance_scale": float(pick("guidance_scale", "guidance")),
        "seed": request.seed if request.seed is not None else secrets.randbelow(2**32),
        "scheduler": request.scheduler or model.scheduler,
    }
    origin = {field: "" if given[field] is not None else " (the model's default)" for field in given}
    if params["num_frames"] > limits.max_frames:
        raise InvalidParam("num_frames", f"at most {limits.max_frames} (this server's --max-frames), got "
                           f"{params['num_frames']}{origin['num_frames']}")
    if params["steps"] > limits.max_steps:
        raise InvalidParam("steps", f"at most {limits.max_steps} (this server's --max-steps), got "
                           f"{params['steps']}{origin['steps']}")
    for field in ("height", "width"):
        if params[field] % model.size_multiple:
            raise InvalidParam(field, f"must be a multiple of {model.size_multiple} for {model.name}, got "
                               f"{params[field]}{origin[field]}")
    pixels = params["height"] * params["width"]
    if pixels > limits.max_pixels:
        field = "height" if given["height"] is not None or given["width"] is None else "width"
        raise InvalidParam(field, f"height x width must be at most {limits.max_pixels} pixels (this server's "
                           f"--max-pixels), got {params['height']} x {params['width']} = {pixels}")
    if params["scheduler"] not in model.schedulers:
        raise InvalidParam("scheduler", f"unknown scheduler {params['scheduler']!r}; allowed: "
                           f"{', '.join(model.schedulers)}")
    return params
