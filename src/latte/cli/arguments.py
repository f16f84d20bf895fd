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


def check_device(device: str | None) -> str:
    """`device` if this machine has it; None: cuda if available, else cpu."""
    from latte import devices

    return devices.default_device() if device is None else str(devices.check_device(device, "--device"))
