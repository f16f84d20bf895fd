"""`--dtype auto`: the fastest precision whose frames hold up, chosen from what the device can do.

- CPU: bfloat16 where the CPU computes it natively (AMX or AVX512-BF16 in /proc/cpuinfo's flags: there a bf16
  matmul runs 5-6x the fp32 rate; on an Intel Xeon with AMX the shipped model ran 2.05x faster end to end, frames
  49.7 dB from fp32, at the same prompt adherence), else float32 (without them bf16 is emulated and slower).
- CUDA: bfloat16 where the GPU supports it (Ampere and later), else float32: float16 overflows T5.
- anything else (MPS): float32.
"""

from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of AMX's bf16 tiles and AVX512-BF16


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (x86 "flags", ARM "Features"); empty where /proc/cpuinfo is missing."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def auto_dtype(device: str, flags: set[str] | None = None) -> tuple[str, str]:
    """("fp32" | "bf16", why) for `device`; `flags` are the CPU's (default: read from /proc/cpuinfo)."""
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} supports bfloat16"
        return "fp32", f"{torch.cuda.get_device_name(device)} has no bfloat16, and float16 overflows T5"
    if kind != "cpu":
        return "fp32", f"no reduced precision chosen for {kind} devices"
    native = sorted(set(NATIVE_BF16_FLAGS) & (cpu_flags() if flags is None else flags))
    if native:
        return "bf16", f"the CPU computes bfloat16 natively ({', '.join(native)})"
    return "fp32", (f"the CPU has no AMX or AVX512-BF16 (its best ISA: {torch.backends.cpu.get_cpu_capability()}), "
                    "so bfloat16 would be emulated and slower")
