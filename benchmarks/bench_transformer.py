"""One denoising step of our LatteT2VTransformer against diffusers' LatteTransformer3DModel, same weights.

Both models run in this one process, with the same thread count and allocator settings, timed round-robin.
Ours gets the prompt's text context precomputed (`prepare_text`), as our pipeline does once per generation;
the one-off cost of that is printed separately. Peak memory is measured in fresh child processes (one per
model and precision: fp32, and with `--bf16` / `--int8` those too, int8 weight-only included) so no heap
survives from another model.

    python benchmarks/bench_transformer.py --config narrow --compile
    python benchmarks/bench_transformer.py --config latte1 --no-memory --compile --bf16 --int8 --repeats 3

`--compile` adds ours through `torch.compile` (inductor, CPU; what `latte generate --compile` runs, frozen
weights in bf16), which fuses the elementwise work between the GEMMs; its compile time is printed apart.
`--bf16` times diffusers and ours in bfloat16 (compared with each other, and with diffusers fp32's output);
`--int8` times ours with `int8-dynamic` and, with `--bf16`, bounds what int8 GEMMs could give over bf16 ones.
Every run also prints two fp32 bounds: the exact-fp32 bound (all matmul work at the machine's own large-GEMM
rate), and the floor of our step's own GEMM and attention kernels (profiled), what ours would take with every
other op fused away for free.
"""

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import asdict
from functools import partial

import torch
import torch._inductor.config
from bench_utils import (
    interleaved,
    load_peak_gib,
    matmul_gflops,
    measure_peak,
    print_machine,
    release_freed_heap,
    run_child,
    serialized_bytes,
    summary,
    tune_allocator,
)
from diffusers import LatteTransformer3DModel

from latte.acceleration.compiled import freezes
from latte.acceleration.flops import t2v_forward_flops
from latte.acceleration.quantize import quantize_transformer
from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer

LATTE1 = asdict(LatteT2VConfig())  # our config's defaults are Latte-1's published transformer config
# name -> (transformer kwargs, inputs): batch 2 is the classifier-free-guidance pair.
CONFIGS = {
    "latte1": (LATTE1, dict(batch=2, frames=16, size=16, text_len=20)),
    "narrow": (
        dict(LATTE1, num_layers=4, num_attention_heads=6, attention_head_dim=64, cross_attention_dim=384),
        dict(batch=2, frames=16, size=64, text_len=20),
    ),
}


def build_models(name: str, seed: int = 0):
    """diffusers' model with its own random init, and ours sharing the very same weight tensors."""
    kwargs, _ = CONFIGS[name]
    torch.manual_seed(seed)
    ref = LatteTransformer3DModel(**kwargs).eval().requires_grad_(False)
    ours = LatteT2VTransformer.from_state_dict(ref.state_dict(), LatteT2VConfig(**kwargs)).requires_grad_(
        False
    )
    return ref, ours


def make_inputs(name: str, seed: int = 1):
    kwargs, shape = CONFIGS[name]
    g = torch.Generator().manual_seed(seed)
    b = shape["batch"]
    x = torch.randn(b, kwargs["in_channels"], shape["frames"], shape["size"], shape["size"], generator=g)
    t = torch.full((b,), 500)
    text = torch.randn(b, shape["text_len"], kwargs["caption_channels"], generator=g)
    return x, t, text


def step_fns(ref, ours, x, t, text, context):
    """The two timed calls. Ours gets the text `context` prepared once per generation; all output rows are
    computed (the pipeline may ask for the epsilon rows only) so the outputs can be compared."""
    return {
        "diffusers": lambda: ref(x, timestep=t, encoder_hidden_states=text).sample,
        "ours": lambda: ours(x, t, context).sample,
    }


def add_compiled(fns: dict, ours, x, t, context, name="compiled") -> float:
    """Add ours compiled to the timed calls; returns the compile time (the first call)."""
    compiled = torch.compile(ours)
    fns[name] = lambda: compiled(x, t, context).sample
    start = time.perf_counter()
    with torch._inductor.config.patch(freezing=freezes(ours)):  # as `latte generate --compile`
        fns[name]()
    return time.perf_counter() - start


KERNELS = ("linear", "addmm", "mm", "scaled_dot_product")  # profiler op names of GEMMs and attention


def kernel_seconds(step) -> float:
    """Seconds one call of `step` spends inside GEMM and attention kernels (torch profiler, self time): what a
    step would take if all the elementwise work and copies between them were fused away for free."""
    with torch.profiler.profile() as prof:
        step()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if any(k in e.key for k in KERNELS)) / 1e6


# peak-memory child -> (implementation, dtype, quantization as `pipe.quantize` applies it to the transformer)
MEMORY_ROWS = {
    "diffusers": ("diffusers", torch.float32, None),
    "ours": ("ours", torch.float32, None),
    "diffusers-bf16": ("diffusers", torch.bfloat16, None),
    "ours-bf16": ("ours", torch.bfloat16, None),
    "ours-int8-dynamic": ("ours", torch.float32, "int8-dynamic"),
    "ours-int8": ("ours", torch.float32, "int8"),
}


def child_memory(name: str, row: str) -> None:
    """Child process: build one model only (in its row's precision), run one step, print as JSON the peak
    memory while building, that of the step (freed heap handed back first) and the serialized weight size."""
    torch.set_num_threads(2)
    kwargs, _ = CONFIGS[name]
    impl, dtype, quantize = MEMORY_ROWS[row]
    x, t, text = make_inputs(name)
    x, text = x.to(dtype), text.to(dtype)
    if impl == "ours":
        model = LatteT2VTransformer(LatteT2VConfig(**kwargs)).to(dtype).eval().requires_grad_(False)
        if quantize is not None:
            quantize_transformer(model, quantize)
        context = model.prepare_text(text)
        step = lambda: model(x, t, context).sample  # noqa: E731
    else:
        model = LatteTransformer3DModel(**kwargs).to(dtype).eval().requires_grad_(False)
        step = lambda: model(x, timestep=t, encoder_hidden_states=text).sample  # noqa: E731
    loading = load_peak_gib()  # a quantized model was built in float first
    release_freed_heap()
    with torch.inference_mode():
        peak = measure_peak(step)
    weights = serialized_bytes(model)  # after the measurement: serializing leaves copies in the process's heap
    print(json.dumps({**peak, "load_peak_gib": loading, "weights_gib": weights / 2**30}))


def compare(name: str, args, rates: dict) -> None:
    """Time, check and (in child processes) measure the memory of both models on one configuration."""
    kwargs, shape = CONFIGS[name]
    width = kwargs["num_attention_heads"] * kwargs["attention_head_dim"]
    print(f"\n== {name}: {kwargs['num_layers']} layers, width {width}, inputs {shape}")
    ref, ours = build_models(name)
    x, t, text = make_inputs(name)
    sizes = (shape["batch"], shape["frames"], shape["size"], shape["size"], shape["text_len"])
    flops = t2v_forward_flops(ours.config, *sizes)
    with torch.inference_mode():
        context = ours.prepare_text(text)
        fns = step_fns(ref, ours, x, t, text, context)
        expected = fns["diffusers"]()
        diff, scale = (fns["ours"]() - expected).abs().max().item(), expected.abs().max().item()
        if args.compile:
            compile_time = add_compiled(fns, ours, x, t, context)
            compiled_diff = (fns["compiled"]() - expected).abs().max().item()
        if args.bf16:
            ref16 = LatteTransformer3DModel.from_config(ref.config).to(torch.bfloat16).eval()
            ref16.load_state_dict(ref.state_dict())
            ours16 = LatteT2VTransformer.from_state_dict(ref16.state_dict(), ours.config).requires_grad_(False)
            x16, text16 = x.to(torch.bfloat16), text.to(torch.bfloat16)
            context16 = ours16.prepare_text(text16)
            fns["diffusers-bf16"] = lambda: ref16(x16, timestep=t, encoder_hidden_states=text16).sample
            fns["ours-bf16"] = lambda: ours16(x16, t, context16).sample
            if args.compile:
                compile_time16 = add_compiled(fns, ours16, x16, t, context16, name="compiled-bf16")
            bf16_diff = {k: (fns[k]().float() - expected).abs().max().item() for k in fns if k.endswith("bf16")}
        if args.int8:  # what `pipe.quantize("int8-dynamic")` does to a float32 transformer on the CPU
            ours8 = copy.deepcopy(ours)
            quantize_transformer(ours8, "int8-dynamic")
            fns["ours-int8"] = lambda: ours8(x, t, context).sample
            int8_diff = (fns["ours-int8"]() - expected).abs().max().item()
        quiet = {"log": lambda line: None}
        prepare = {"text": lambda: ours.prepare_text(text)}
        text_time = summary(interleaved(prepare, 3, 1, **quiet)["text"])
        kernels = kernel_seconds(fns["ours"])
        times = interleaved(fns, args.repeats, args.warmup)
    med = {k: summary(v) for k, v in times.items()}
    print(f"analytic matmul work per step: {flops / 1e9:.1f} GFLOP")
    for k, v in med.items():
        rate = flops / v / 1e9
        mkl, onednn = rates["fp32" if k in ("diffusers", "ours", "compiled", "ours-int8") else "bf16"]
        print(
            f"{k:>10}: {v:8.3f} s/step {rate:7.1f} GFLOP/s = {100 * rate / mkl:5.1f}% of torch.matmul's "
            f"rate, {100 * rate / onednn:5.1f}% of oneDNN's"
        )
    print(f"ours, once per generation (prepare_text): {text_time:.3f} s")
    print(f"speed-up ours vs diffusers: {med['diffusers'] / med['ours']:.2f}x")
    print(f"max |ours - diffusers| = {diff:.2e} (output max |x| {scale:.2f}, relative {diff / scale:.1e})")
    if args.compile:
        print(
            f"compiled (inductor): compile + first step {compile_time:.1f} s; speed-up vs diffusers "
            f"{med['diffusers'] / med['compiled']:.2f}x, vs ours eager {med['ours'] / med['compiled']:.2f}x; "
            f"max |compiled - diffusers| = {compiled_diff:.2e}"
        )
    bound = flops / (max(rates["fp32"]) * 1e9)
    print(
        f"exact-fp32 bound: all {flops / 1e9:.0f} GFLOP at the machine's best GEMM rate take {bound:.2f} s, "
        f"at most {med['diffusers'] / bound:.2f}x diffusers"
    )
    print(
        f"GEMM + attention kernels of our eager fp32 step (profiled): {kernels:.2f} s; with every other op "
        f"fused away for free, at most {med['diffusers'] / kernels:.2f}x diffusers"
    )
    if args.bf16:
        ours16 = min(med["ours-bf16"], med.get("compiled-bf16", float("inf")))
        print(
            f"bf16: ours vs diffusers bf16 {med['diffusers-bf16'] / med['ours-bf16']:.2f}x eager"
            + (f", {med['diffusers-bf16'] / med['compiled-bf16']:.2f}x compiled (compile + first step "
               f"{compile_time16:.1f} s)" if args.compile else "")
            + f"; our best bf16 vs our fp32 eager {med['ours'] / ours16:.2f}x"
        )
        for k, d in bf16_diff.items():
            print(f"max |{k} - diffusers fp32| = {d:.2e} (relative {d / scale:.1e})")
    if args.int8:
        print(f"int8-dynamic: {med['ours-int8']:.3f} s/step, {med['ours'] / med['ours-int8']:.2f}x our fp32 eager"
              + (f", {ours16 / med['ours-int8']:.2f}x our best bf16" if args.bf16 else "")
              + f"; max |int8 - diffusers fp32| = {int8_diff:.2e}")
        if args.bf16:
            int8_bound(name, med["ours-bf16"])


def int8_bound(name: str, bf16_step: float) -> None:
    """How fast int8 could make our bf16 step: every transformer-block linear's GEMM at `torch._int_mm`'s rate
    (int8 x int8 -> int32, AMX/VNNI where present) instead of bf16's, everything else unchanged."""
    kwargs, shape = CONFIGS[name]
    width, tokens = kwargs["num_attention_heads"] * kwargs["attention_head_dim"], shape["batch"] * shape["frames"]
    tokens *= (shape["size"] // kwargs["patch_size"]) ** 2
    saved = 0.0
    # Per spatial + temporal block pair: q, k, v, out twice, cross-attention q and out; the two MLP linears.
    for k, n, per_layer in ((width, width, 10), (width, 4 * width, 2), (4 * width, width, 2)):
        a8, b8 = (torch.randint(-127, 127, size, dtype=torch.int8) for size in ((tokens, k), (k, n)))
        a16, b16 = torch.randn(tokens, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
        gemms = {"int8": partial(torch._int_mm, a8, b8), "bf16": partial(torch.matmul, a16, b16)}
        med = {d: summary(v) for d, v in interleaved(gemms, 5, 2, log=lambda line: None).items()}
        gflop = 2 * tokens * k * n / 1e9
        print(f"GEMM {tokens}x{k}x{n}: int8 {gflop / med['int8']:.0f} GOP/s, bf16 {gflop / med['bf16']:.0f} GFLOP/s")
        saved += per_layer * kwargs["num_layers"] * (med["bf16"] - med["int8"])
    print(f"int8 bound: at most {bf16_step / (bf16_step - saved):.2f}x our eager bf16 step "
          f"({bf16_step:.2f} s -> {bf16_step - saved:.2f} s) if the int8 GEMMs cost nothing else")


def compare_memory(name: str, args) -> None:
    """Peak resident memory of one step per model and precision, each in a fresh process."""
    rows = ["diffusers", "ours"] + (["diffusers-bf16", "ours-bf16"] if args.bf16 else []) + (
        ["ours-int8-dynamic", "ours-int8"] if args.int8 else [])
    mem = {row: run_child(__file__, ["--child-memory", name, row]) for row in rows}
    print("| row | weights (serialized) | peak while building | resident before the step | peak during the step |")
    print("|---|---|---|---|---|")
    for row, r in mem.items():
        print(f"| {row} | {r['weights_gib']:.2f} GiB | {r['load_peak_gib']:.2f} GiB | {r['rss_before_gib']:.2f} GiB | "
              f"{r['peak_gib']:.2f} GiB (+{r['above_gib']:.2f}) |")
    ratio = mem["ours"]["above_gib"] / mem["diffusers"]["above_gib"]
    print(f"peak above the weights, ours / diffusers (fp32): {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--allocator",
        choices=["default", "tuned"],
        default="default",
        help="glibc malloc settings for the whole process (both models alike)",
    )
    parser.add_argument("--bf16", action="store_true", help="also time diffusers and ours in bfloat16")
    parser.add_argument("--int8", action="store_true", help="also time ours with int8-dynamic quantization")
    parser.add_argument("--compile", action="store_true", help="also time our model through torch.compile")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--child-memory", nargs=2, metavar=("CONFIG", "ROW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child_memory:
        child_memory(*args.child_memory)
        return 0

    torch.set_num_threads(args.threads)
    allocator = tune_allocator(args.allocator)
    print_machine(args.threads)
    print(f"allocator: {allocator}")
    rates = {}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if label == "fp32" or args.bf16:
            rates[label] = (matmul_gflops(dtype), matmul_gflops(dtype, backend="onednn"))
            print(
                f"machine {label} matmul 4096^3: torch.matmul {rates[label][0]:.1f} GFLOP/s, "
                f"oneDNN {rates[label][1]:.1f} GFLOP/s"
            )
    for name in list(CONFIGS) if args.config == "all" else [args.config]:
        compare(name, args, rates)
        if not args.no_memory:
            compare_memory(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
