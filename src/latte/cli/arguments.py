"""Checks of command-line values, run before any model is loaded: each failure is one `ValueError` line that
names the flag, the value and what is allowed (`latte.cli.main` prints it and exits 2)."""

import math

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1


def check_at_least(flag: str, value: float | None, minimum: float) -> None:
    """`value` (None: not given) is a number >= `minimum`."""
    if value is not None and not value >= minimum:  # `not >=` also catches nan
        raise ValueError(f"{flag} must be >= {minimum}, got {value}")


def check_finite(flag: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value}")


def check_seed(seed: int, count: int = 1, flag: str = "--seed") -> None:
    """`seed` .. `seed + count - 1` are all seeds a torch generator takes."""
    if not 0 <= seed <= MAX_SEED - (count - 1):
        last = "" if count == 1 else f" (with {count} videos the last seed, --seed + {count - 1}, too)"
        raise ValueError(f"{flag} must be from 0 to {MAX_SEED}{last}, got {seed}")


def available_devices() -> list[str]:
    """The `--device` values that work on this machine: cpu, cuda and cuda:N when CUDA is there, mps."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | None) -> str:
    """`device` if this machine has it; None: cuda if available, else cpu."""
    devices = available_devices()
    if device is None:
        return "cuda" if "cuda" in devices else "cpu"
    if device not in devices:
        why = "no CUDA device is available here" if device.startswith("cuda") and "cuda" not in devices else (
            "not a device of this machine")
        raise ValueError(f"--device {device!r}: {why}; allowed here: {', '.join(devices)}")
    return device
