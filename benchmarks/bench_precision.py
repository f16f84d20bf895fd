"""The shipped model (or `--model`) in each precision `latte generate` offers, side by side in one process.

Rows: fp32 (exact), bf16 (`--dtype bf16`, what `--dtype auto` picks on CPUs with AMX or AVX512-BF16),
`--quantize int8-dynamic` and `--quantize int8` (both on fp32), and with `--compile` bf16 through
`torch.compile` as `latte generate --compile` runs it (compile time printed apart). The pipelines run
interleaved, prompt by prompt, same seed; per row: median denoising step (timed with `callback_on_step_end`),
end to end (text encoder, steps, VAE decode), frame PSNR against the fp32 frames, and the serialized bytes of
the transformer and T5 weights.

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --compile --json precision.json
"""

import argparse
import logging
import statistics
import sys
import time

import torch
from bench_utils import print_machine, serialized_bytes

from latte.acceleration.compiled import compile_seconds, compile_transformer
from latte.acceleration.fidelity import psnr
from latte.models.io import write_json
from latte.pipelines import LattePipeline, default_model_path

PROMPTS = ["a red circle moving left", "a blue square moving right"]
# row -> (dtype to load in, quantization mode, compiled)
ROWS = {
    "fp32": (torch.float32, None, False),
    "bf16": (torch.bfloat16, None, False),
    "int8-dynamic": (torch.float32, "int8-dynamic", False),
    "int8": (torch.float32, "int8", False),
    "bf16 compiled": (torch.bfloat16, None, True),
}


def load(model: str, dtype: torch.dtype, quantize: str | None, compiled: bool) -> LattePipeline:
    pipe = LattePipeline.from_pretrained(model, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if quantize:
        pipe.quantize(quantize)
    if compiled:
        compile_transformer(pipe)
    return pipe


def generate(pipe: LattePipeline, prompt: str, seed: int) -> tuple[torch.Tensor, float, list[float]]:
    """(frames, seconds end to end, seconds per denoising step)."""
    stamps = []

    def stamp(pipe, step, timestep, tensors):
        stamps.append(time.perf_counter())
        return tensors

    start = time.perf_counter()
    frames = pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="pt",
                  callback_on_step_end=stamp).frames
    total = time.perf_counter() - start
    return frames.float(), total, [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="also bf16 compiled (latte generate --compile)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows and the machine block here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    machine = print_machine(args.threads)
    model = str(args.model or default_model_path())
    rows = {name: spec for name, spec in ROWS.items() if args.compile or not spec[2]}
    pipes = {name: load(model, *spec) for name, spec in rows.items()}
    print(f"model {model}; prompts {PROMPTS}, seed {args.seed}; rows {list(rows)}")

    results = {name: {"steps": [], "total": [], "psnr": []} for name in rows}
    with torch.inference_mode():
        if args.compile:  # compile (or load the cached graphs) before timing: an untimed first video
            before = compile_seconds()
            generate(pipes["bf16 compiled"], PROMPTS[0], args.seed)
            print(f"bf16 compiled: {compile_seconds() - before:.1f} s compiling in an untimed first video")
        for prompt in PROMPTS:
            exact = None
            for name, pipe in pipes.items():
                frames, total, steps = generate(pipe, prompt, args.seed)
                exact = frames if exact is None else exact
                results[name]["steps"] += steps
                results[name]["total"].append(total)
                results[name]["psnr"].append(psnr(frames, exact))
                print(f"  {prompt!r} {name}: {total:.2f} s, PSNR {results[name]['psnr'][-1]:.1f} dB", flush=True)

    print("\n| precision | median step | end to end (median) | vs fp32 | frame PSNR vs fp32 | transformer / T5 MiB |")
    print("|---|---|---|---|---|---|")
    table, fp32 = {}, statistics.median(results["fp32"]["total"])
    for name, r in results.items():
        step, total = statistics.median(r["steps"]), statistics.median(r["total"])
        table[name] = dict(step_s=step, end_to_end_s=total, psnr_db=min(r["psnr"]),
                           transformer_mib=serialized_bytes(pipes[name].transformer) / 2**20,
                           text_encoder_mib=serialized_bytes(pipes[name].text_encoder) / 2**20)
        worst = "exact" if name == "fp32" else f"{table[name]['psnr_db']:.1f} dB (worst prompt)"
        print(f"| {name} | {step:.3f} s | {total:.2f} s | {fp32 / total:.2f}x | {worst} | "
              f"{table[name]['transformer_mib']:.1f} / {table[name]['text_encoder_mib']:.2f} |")
    if args.json:
        write_json(args.json, {"machine": machine, "model": model, "prompts": PROMPTS, "seed": args.seed,
                               "rows": table})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
