"""Beta schedules and IDDPM timestep respacing, as pure functions."""

import torch


def linear_betas(n: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (n,) in float64; the defaults are Latte's (and DiT's) 1000-step schedule."""
    if n < 1:
        raise ValueError(f"number of diffusion steps must be >= 1, got {n}")
    if not 0 < start <= end < 1:
        raise ValueError(f"need 0 < start ({start}) <= end ({end}) < 1")
    return torch.linspace(start, end, n, dtype=torch.float64)


def space_timesteps(num_train: int, num_steps: int | str) -> list[int]:
    """IDDPM's respacing: which of `num_train` training steps a `num_steps`-step sampler keeps (sorted).

    `num_steps` is an int (one evenly strided section), a string of comma-separated counts (one per equal
    section, e.g. "10,15,20"), or "ddimK" (a fixed integer stride, as DDIM). 250 of 1000 keeps
    round(k * 999 / 249) = 0, 4, ..., 995, 999, the steps Latte's checkpoints sample with.
    """
    if isinstance(num_steps, str) and num_steps.startswith("ddim"):
        wanted = int(num_steps[4:])
        for stride in range(1, num_train):
            if len(range(0, num_train, stride)) == wanted:
                return list(range(0, num_train, stride))
        raise ValueError(f"cannot take exactly {wanted} steps with an integer stride from {num_train}")
    counts = [int(c) for c in str(num_steps).split(",")]
    if len(counts) > num_train:
        raise ValueError(f"cannot divide {num_train} steps into {len(counts)} sections")
    size, extra = divmod(num_train, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if not 1 <= count <= section:
            raise ValueError(f"cannot take {count} steps from a section of {section} (of {num_train} steps)")
        stride = (section - 1) / (count - 1) if count > 1 else 1.0
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += section
    return sorted(set(kept))


def respace_betas(betas: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Betas of the sub-chain through `kept` steps: 1 - abar_i / abar_prev (each kept step keeps its abar)."""
    alphas_cumprod = torch.cumprod(1.0 - betas.double(), dim=0)
    out, prev = [], 1.0
    for i in kept:
        out.append(1.0 - alphas_cumprod[i].item() / prev)
        prev = alphas_cumprod[i].item()
    return torch.tensor(out, dtype=torch.float64)
