"""`latte generate --compile`: the transformer through `torch.compile` (inductor), with inductor's caches on
disk so that later runs skip most of the compile time.

Inductor keeps compiled graphs (its FX graph cache and AOTAutograd cache, both on by default) under
`TORCHINDUCTOR_CACHE_DIR`. Its default lies in /tmp, which many machines empty at every boot; unless the user
set that variable, latte points it at `~/.cache/latte/inductor` (`$XDG_CACHE_HOME` respected).
"""

import os
from pathlib import Path

import torch

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir() -> Path:
    """Where inductor caches compiled graphs: `$TORCHINDUCTOR_CACHE_DIR`, else latte's folder under the user
    cache, which is then set for this process."""
    if CACHE_VARIABLE not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ[CACHE_VARIABLE] = str(base / "latte" / "inductor")
    return Path(os.environ[CACHE_VARIABLE])


def compile_transformer(pipe) -> Path:
    """`pipe.transformer = torch.compile(pipe.transformer)` with the on-disk cache; returns the cache folder.
    Compiling happens at the first step; `compile_seconds` tells how long it took."""
    import torch._functorch.config
    import torch._inductor.config

    cache = inductor_cache_dir()
    torch._inductor.config.fx_graph_cache = True  # the defaults, stated: a run reuses earlier compiles
    torch._functorch.config.enable_autograd_cache = True
    # Process-wide: dynamo reads it while tracing too, so `torch.compile(options=...)` would not be the same.
    torch._inductor.config.freezing = freezes(pipe.transformer)
    pipe.transformer = torch.compile(pipe.transformer)
    return cache


def freezes(model) -> bool:
    """Whether inference compiles of `model` freeze its weights. bfloat16 on the CPU does: the weights become
    constants that inductor packs once for oneDNN's AMX/AVX512-BF16 kernels, with bias, GELU and residual adds
    fused into them (1.13x over eager bf16 on Latte-1 shapes, Intel with AMX; docs/benchmarks.md). float32 does
    not: frozen it ran slower than the plain compile there. A frozen model no longer sees weight changes."""
    weight = next(model.parameters())
    return weight.device.type == "cpu" and weight.dtype == torch.bfloat16


def compile_seconds() -> float:
    """Seconds this process has spent compiling with `torch.compile` so far (tracing, inductor, loading cached
    graphs), from dynamo's own timers; 0 where this torch does not keep them."""
    import torch._dynamo.utils

    timers = getattr(torch._dynamo.utils, "compilation_time_metrics", {})
    return sum(timers.get("_compile.compile_inner", []))


def graph_cache_use() -> str:
    """How many compiled graphs this process took from inductor's FX graph cache and how many it compiled."""
    from torch._dynamo.utils import counters

    hits, misses = counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]
    return f"inductor FX graph cache: {hits} reused, {misses} compiled"
