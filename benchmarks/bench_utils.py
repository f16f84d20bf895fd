"""Helpers shared by the benchmark scripts: machine info, allocator, timing, peak memory, matmul rate.

Benchmarks are scripts, not tests: run them as `python benchmarks/<script>.py --help`.
"""

import ctypes
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

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


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


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
