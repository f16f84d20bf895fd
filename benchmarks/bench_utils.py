"""Helpers shared by the benchmark scripts: machine info, allocator, timing, peak memory, matmul rate.

Benchmarks are scripts, not tests: run them as `python benchmarks/<script>.py --help`.
"""

import ctypes
import datetime
import gc
import importlib.metadata
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# glibc mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_allocator(mode: str) -> str:
    """Apply process-wide glibc malloc settings; returns a description for the report.

    "default": glibc as shipped (large blocks are mmap'ed and returned on free, so every big temporary is
    page-faulted and zeroed again). "tuned": no mmap, no trimming: freed blocks stay in the heap for reuse.
    Both models of a comparison always run in the same process, hence under the same setting.
    """
    if mode == "default":
        return "glibc malloc defaults"
    if mode != "tuned":
        raise ValueError(f"allocator mode {mode!r} is not one of ['default', 'tuned']")
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 40)):
        raise OSError("mallopt failed: the allocator could not be tuned")
    return "glibc malloc tuned (M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 TiB)"


# /proc/cpuinfo flags that decide which GEMM kernels a CPU gets: AVX2 only (no fast bf16), AVX-512, native bf16
# dot products (AVX512-BF16) and Intel's tile units (AMX: bf16 and int8).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# A dtype whose matmul runs below this fraction of fp32's has no native kernels here (emulated, not accelerated).
_NATIVE_FRACTION = 0.5


def parse_cpuinfo(text: str) -> dict:
    """CPU model and the ISA flags that matter, from the text of /proc/cpuinfo (its first processor)."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return {"cpu": model or platform.processor() or "?", "isa": {f: f in (flags or ()) for f in ISA_FLAGS}}


def gemm_libraries() -> dict[str, str]:
    """Which library does the GEMMs of each path on this CPU build (see latte.models.layers.linear)."""
    from latte.models.layers import _ONEDNN_DTYPES  # the dtypes our fused linears send to oneDNN

    blas = "MKL" if torch.backends.mkl.is_available() else "the build's BLAS (no MKL)"
    onednn_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    fused = "oneDNN _linear_pointwise (bias/GELU fused)"
    return {
        "fp32 torch.matmul": blas,
        "fp32 our linears": fused if torch.float32 in _ONEDNN_DTYPES else f"plain F.linear ({blas})",
        "bf16 torch.matmul": "oneDNN" if onednn_bf16 else "ATen's reference GEMM (oneDNN has no bf16 here)",
        "bf16 our linears": fused if torch.bfloat16 in _ONEDNN_DTYPES else "plain F.linear (as bf16 torch.matmul)",
    }


def quick_matmul_gflops(dtype: torch.dtype, device="cpu", target_s: float = 0.05, max_n: int = 4096) -> dict:
    """A short large-matmul rate: n doubles from 256 until an n x n x n product takes `target_s` (or n reaches
    `max_n`); best of two at each n (`matmul_gflops`). Well under a second per dtype, even where the dtype has no
    fast kernels (bf16 on an AVX2 CPU runs at a few percent of fp32)."""
    n = 256
    while True:
        gflops = matmul_gflops(dtype, device, n, repeats=2)
        if 2 * n**3 / gflops / 1e9 >= target_s or n >= max_n:
            return {"n": n, "gflops": round(gflops, 1)}
        n *= 2


def matmul_rates(device="cpu") -> dict[str, dict]:
    """`quick_matmul_gflops` per dtype on `device`; a low-precision dtype much slower than fp32 is marked."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if torch.device(device).type == "cuda":
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    max_n = 8192 if torch.device(device).type == "cuda" else 4096
    rates = {label: quick_matmul_gflops(dtype, device, max_n=max_n) for label, dtype in dtypes.items()}
    for label, rate in rates.items():
        rate["native"] = label == "fp32" or rate["gflops"] >= _NATIVE_FRACTION * rates["fp32"]["gflops"]
    return rates


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads: int, device="cpu", rates: bool = True) -> dict:
    """Where a benchmark ran: date, load, CPU model and ISA flags, torch's CPU kernels, GEMM library per path,
    versions, GPU, and (unless `rates` is False) a short matmul rate per dtype on `device`. About 1-2 s."""
    try:
        cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = parse_cpuinfo("")
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **cpu,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gemm": gemm_libraries(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "versions": {
            "torch": torch.__version__,
            **{name: _version(name) for name in ("diffusers", "transformers", "torchao")},
            "python": platform.python_version(),
        },
        "cuda": {
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "runtime": torch.version.cuda,
        } if cuda else None,  # fmt: skip
        "matmul_device": str(device),
        "matmul": matmul_rates(device) if rates else None,
    }


def format_machine(info: dict) -> str:
    """The machine block every benchmark prints first (the same facts as `info`, which goes in its JSON)."""
    isa = ", ".join(f"{flag} {'yes' if on else 'no'}" for flag, on in info["isa"].items())
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
    lines = [
        f"machine: {info['date']}, load {info['load_avg_1m']} (1 min), {info['threads']} threads of "
        f"{info['logical_cpus']} logical CPUs",
        f"  cpu: {info['cpu']}; {isa}; torch CPU capability {info['torch_cpu_capability']}",
        *(f"  gemm {path}: {library}" for path, library in info["gemm"].items()),
        f"  versions: {versions}",
    ]
    if info["cuda"]:
        cuda = info["cuda"]
        lines.append(f"  gpu: {len(cuda['devices'])} x {cuda['devices'][0]} (compute {cuda['capability']}, "
                     f"CUDA {cuda['runtime']})")  # fmt: skip
    if info["matmul"]:
        rates = [
            f"{label} {r['gflops']:g} GFLOP/s (n={r['n']}){'' if r['native'] else ': no native kernels'}"
            for label, r in info["matmul"].items()
        ]
        lines.append(f"  matmul on {info['matmul_device']}: " + ", ".join(rates))
    return "\n".join(lines)


def print_machine(threads: int, device="cpu", json_line: bool = True, file=None) -> dict:
    """Print the machine block (and, with `json_line`, the same facts as one JSON line); return them for the
    script's own JSON output."""
    info = machine_info(threads, device)
    print(format_machine(info), file=file or sys.stdout)
    if json_line:
        print(json.dumps({"machine": info}), file=file or sys.stdout)
    return info


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device="cpu",
    log: Callable[[str], None] = print,
) -> dict[str, list[float]]:
    """Time each function `repeats` times, round-robin, so load changes on a shared machine hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_call(fn, device))
            log(f"  repeat {r + 1}/{repeats} {name}: {times[name][-1]:.3f} s")
    return times


def summary(times: list[float]) -> float:
    """The statistic we report: the median (robust against a neighbour's burst)."""
    return statistics.median(times)


def matmul_gflops(
    dtype: torch.dtype, device="cpu", n: int = 4096, repeats: int = 3, backend="torch"
) -> float:
    """The machine's own large-matmul rate for `dtype`: best of `repeats` n x n x n products, through
    `torch.matmul` (MKL on x86 CPUs) or, with backend="onednn", oneDNN's GEMM (the one our CPU path uses)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    if backend == "onednn":
        fn = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")  # noqa: E731
    else:
        fn = lambda: a @ b  # noqa: E731
    with torch.inference_mode():
        fn()  # warm-up
        best = min(time_call(fn, device) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------- peak memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serialized_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's saved weights (quantized linears keep packed weights outside `parameters()`)."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def release_freed_heap() -> None:
    """Free what only reference cycles keep (e.g. the float linears a quantized model replaced) and hand the
    heap glibc keeps after frees back to the OS (malloc_trim): the resident set then counts live memory only."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def load_peak_gib() -> float:
    """The process's resident high-water mark so far (GiB)."""
    return _peak_rss_bytes() / 2**30


def measure_peak(fn: Callable[[], object]) -> dict:
    """Run `fn` once; peak resident memory (total) and its rise over the resident set before the call.

    Resets the kernel's high-water mark first (/proc/self/clear_refs), so only this call's peak counts.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss_bytes()
    fn()
    peak = _peak_rss_bytes()
    return {"rss_before_gib": before / 2**30, "peak_gib": peak / 2**30, "above_gib": (peak - before) / 2**30}


def run_child(script: str, args: list[str]) -> dict:
    """Run `script` in a fresh process (for memory: no heap left from another model); parse its JSON line."""
    cmd = [sys.executable, script, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
