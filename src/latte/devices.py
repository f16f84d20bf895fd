"""Which devices this machine has, and the one check of a device value against them: used for the CLI's
`--device`, `device_map` in `from_pretrained` and the pipelines' CPU offload, so each refuses a missing device
with the same one-line `ValueError` naming the argument, the value and the devices that are here."""

import torch

ACCELERATORS = ("cuda", "xpu")  # backends with torch.<name>.is_available() and device_count()


def available_devices() -> list[str]:
    """The device names that work here: cpu; cuda and cuda:N (likewise xpu) when present; mps."""
    devices = ["cpu"]
    for name in ACCELERATORS:
        backend = getattr(torch, name, None)
        if backend is not None and backend.is_available():
            devices += [name, *(f"{name}:{i}" for i in range(backend.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def default_device() -> str:
    """cuda when this machine has it, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device, what: str, also: str = "") -> torch.device:
    """`device` (a name such as "cuda:1", a CUDA index, a torch.device) as a torch.device, or a one-line
    ValueError when this machine does not have it. `what` names the argument in the message (`--device`,
    `device_map`); `also` lists other values the argument takes, for the message."""
    devices = available_devices()
    allowed = ", ".join(devices) + (f", or {also}" if also else "")
    parsed = None
    try:
        if isinstance(device, int) and not isinstance(device, bool):
            parsed = torch.device("cuda", device)  # an index means a CUDA device, as in diffusers' device_map
        elif isinstance(device, (str, torch.device)):
            parsed = torch.device(device)
    except (RuntimeError, TypeError):
        pass
    if parsed is not None and (parsed.type == "cpu" or str(parsed) in devices):
        return parsed
    if parsed is not None and parsed.type in ACCELERATORS and parsed.type not in devices:
        why = f"no {parsed.type.upper()} device is available here"
    else:
        why = "not a device of this machine"
    shown = str(device) if isinstance(device, torch.device) else device
    raise ValueError(f"{what} {shown!r}: {why}; allowed here: {allowed}")
