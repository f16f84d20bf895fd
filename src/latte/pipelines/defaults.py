"""A model folder's own generation defaults: `"_generate_defaults"` in `model_index.json`.

    "_generate_defaults": {"steps": 25, "guidance": 4.0, "fps": 8, "frames": 16, "height": 64, "width": 64,
                           "slow_motion": 4}

Any subset; diffusers ignores `_` keys. `LattePipeline.from_pretrained` reads them into
`pipe.generate_defaults`, `__call__` uses them for the arguments the caller leaves at None, and
`save_pretrained` writes them back. `fps` is for whoever writes the video file (`latte generate`).
`slow_motion` S (a number >= 1) is a cap, for models whose training clips use up the frame's room (a shape
crossing it): a longer video than the training length plays one training clip's motion, up to S times slower,
min(S, frames / trained frames) (see `default_slow_motion`). Without it long videos keep the model's speed.
"""

import math
from numbers import Real

from latte.pipelines.export import MAX_FPS, MIN_FPS

FOLDER_DEFAULTS_KEY = "_generate_defaults"
# Used when neither the caller nor the folder says: diffusers' LattePipeline defaults and the usual video rate.
# Frames and size fall back to the transformer's trained ones (16 frames of 512 x 512 for Latte-1).
BUILTIN_DEFAULTS = {"steps": 50, "guidance": 7.5, "fps": 8}

_INTEGER_KEYS = ("steps", "frames", "height", "width")  # each >= 1
_REAL_KEYS = ("guidance", "fps", "slow_motion")  # finite; fps in what a video file can hold; slow_motion >= 1
KNOWN_KEYS = (*_INTEGER_KEYS, *_REAL_KEYS)


def check_generate_defaults(defaults, source: str = FOLDER_DEFAULTS_KEY) -> dict:
    """`defaults` as a plain dict, or a one-line ValueError naming `source` and the bad key."""
    if not isinstance(defaults, dict):
        raise ValueError(f"{source}: {FOLDER_DEFAULTS_KEY} must be an object like {{\"steps\": 25}}, "
                         f"got {defaults!r:.80}")
    for key, value in defaults.items():
        if key not in KNOWN_KEYS:
            raise ValueError(f"{source}: unknown {FOLDER_DEFAULTS_KEY} key {key!r}; allowed: {list(KNOWN_KEYS)}")
        if key in _INTEGER_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{source}: {FOLDER_DEFAULTS_KEY}.{key} must be an integer >= 1, got {value!r:.80}")
        elif (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not math.isfinite(value)
            or (key == "fps" and not MIN_FPS <= value <= MAX_FPS)
            or (key == "slow_motion" and value < 1)
        ):
            allowed = {"fps": f"a number in [{MIN_FPS}, {MAX_FPS}]", "slow_motion": "a finite number >= 1"}.get(
                key, "a finite number")
            raise ValueError(f"{source}: {FOLDER_DEFAULTS_KEY}.{key} must be {allowed}, got {value!r:.80}")
    return dict(defaults)


def resolve_settings(folder_defaults: dict, trained_frames: int, trained_size: int, **given) -> dict:
    """The settings a generation uses: each value in `given` (steps, guidance, frames, height, width, fps) that
    is not None, else the folder's default, else BUILTIN_DEFAULTS or the transformer's trained frames and size.
    Keys: those of `given`."""
    fallback = {**BUILTIN_DEFAULTS, "frames": trained_frames, "height": trained_size, "width": trained_size}
    return {key: value if value is not None else folder_defaults.get(key, fallback[key])
            for key, value in given.items()}


def default_slow_motion(folder_defaults: dict, frames: int, trained_frames: int) -> float:
    """The slow-motion factor for a video of `frames` frames whose caller gives none: 1 (the model's speed)
    unless the folder caps one, then min(cap, frames / trained_frames), at least 1."""
    return max(1.0, min(folder_defaults.get("slow_motion", 1), frames / trained_frames))
