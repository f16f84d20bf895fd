"""One command for a lent GPU: Latte-1-shaped fp16 text-to-video, diffusers against ours, every speed option.

Random weights (the Latte-1 transformer, the SD-style VAE, a 2-layer T5 of Latte-1's width; `bench_pipeline`'s
components, built once), 16 x 512 x 512, 50 DDIM steps, guidance 7.5. Rows, in the order they run:

  diffusers eager          diffusers' LattePipeline as it is
  ours eager               our LattePipeline, same weights: the reference of every frame difference
  ours + TeaCache 0.1/0.2  cache mode (approximate)
  ours compiled            the same recipe on ours, torch.compile with --compile-mode (reduce-overhead: CUDA graphs)
  ours fp8                 torchao float8 dynamic (activations and weights, per row) + the compile of "ours compiled"
  diffusers compiled       diffusers' documented recipe: channels_last, torch.compile of transformer and vae.decode
  ours guidance-parallel   CFGParallel over two GPUs (two processes, NCCL), each half of the guidance batch;
                           needs 2 GPUs, so never in the smoke run

The compiled rows share the VAE decode compiled by the docs' recipe (compiled once, in the first compiled
row's warm-up, for both chunk sizes of the 16 frames: 14 and 2). Each row: seconds end to end (text encoder,
denoising, VAE decode; median of --repeats, after one untimed short run at the same shapes that also
compiles), speed-up against diffusers eager, peak GPU memory (all loaded models included), max |frames -
ours eager| (frames in [0, 1]). A row that cannot run says why; a row that fails records its error and the
suite goes on; rows that would not finish within --budget-s are skipped, so a full run fits in 8 minutes.

    benchmarks/gpu_suite.sh                                        # CUDA, writes gpu_suite.json
    python benchmarks/gpu_suite.py --smoke --json /tmp/smoke.json  # CPU, tiny sizes, the same code path
"""

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_pipeline import PROMPT, build_components
from bench_utils import measure_peak, print_machine, time_call
from diffusers import LattePipeline as DiffusersLattePipeline

from latte.acceleration.cache import TeaCache
from latte.acceleration.distributed import CFGParallel
from latte.outputs import check_file_target, write_file
from latte.pipelines import LattePipeline

START = time.monotonic()  # the row budget counts from here; the default leaves a minute for the imports
REFERENCE, BASELINE = "ours eager", "diffusers eager"
# The full setting, and the smoke one: same rows and code on the CPU, tiny sizes, dynamo without inductor
# (backend "eager": no kernel compilation, which takes minutes on a CPU).
SETTINGS = {
    "full": dict(device="cuda", dtype="float16", shapes="latte1", layers=28, frames=16, size=512, steps=50,
                 warmup_steps=3, budget_s=420.0, compile_allowance_s=150.0),
    "smoke": dict(device="cpu", dtype="float32", shapes="tiny", layers=1, frames=16, size=64, steps=3,
                  warmup_steps=1, budget_s=600.0, compile_allowance_s=10.0),
}  # fmt: skip
GUIDANCE = 7.5
COMPILE_MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def pipeline_call(pipe, setting: dict, steps: int | None = None) -> Callable[[], torch.Tensor]:
    """One generation with the suite's settings and seed; returns its frames (B, F, 3, H, W) in [0, 1]."""
    device = setting["device"] if setting["device"] == "cpu" else f"cuda:{torch.cuda.current_device()}"
    call = dict(
        prompt=PROMPT, num_inference_steps=steps or setting["steps"], video_length=setting["frames"],
        height=setting["size"], width=setting["size"], guidance_scale=GUIDANCE, output_type="pt",
        clean_caption=False,
    )  # fmt: skip
    return lambda: pipe(**call, generator=torch.Generator(device).manual_seed(0)).frames


def timed(pipe, setting: dict, repeats: int) -> dict:
    """Warm up (compiles), then time `repeats` generations; peak memory over the timed ones; last frames."""
    warm = time_call(pipeline_call(pipe, setting, setting["warmup_steps"]), setting["device"])
    run, runs, out = pipeline_call(pipe, setting), [], {}

    def timed_runs():
        for _ in range(repeats):
            runs.append(time_call(lambda: out.__setitem__("frames", run()), setting["device"]))

    if setting["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        timed_runs()
        peak = torch.cuda.max_memory_allocated()
        memory = {"peak_gib": peak / 2**30, "above_gib": (peak - before) / 2**30, "memory": "GPU, allocated"}
    else:
        rss = measure_peak(timed_runs)
        memory = {"peak_gib": rss["peak_gib"], "above_gib": rss["above_gib"], "memory": "CPU, resident"}
    return {"seconds": statistics.median(runs), "runs_s": runs, "warmup_s": warm, **memory,
            "frames": out["frames"].float().cpu()}  # fmt: skip


def channels_last_compiled(transformer, options: dict):
    """The docs' recipe for a transformer: channels_last weights, then torch.compile."""
    return torch.compile(transformer.to(memory_format=torch.channels_last), **options)


def compile_vae_decode(vae, options: dict) -> None:
    """The docs' recipe for the VAE, once: channels_last, torch.compile of `decode` (kept for later rows)."""
    if "decode" not in vars(vae):
        vae.to(memory_format=torch.channels_last)
        vae.decode = torch.compile(vae.decode, **options)


def fp8_unavailable(device: str) -> str | None:
    """Why the fp8 row cannot run here, or None."""
    if device != "cuda":
        return "float8 matmuls need a CUDA GPU; this run is on the CPU"
    if torch.cuda.get_device_capability() < (8, 9):
        major, minor = torch.cuda.get_device_capability()
        return f"float8 matmuls need compute capability >= 8.9 (Ada, Hopper); this GPU has {major}.{minor}"
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_  # noqa: F401
    except ImportError as err:
        return f"torchao's float8 dynamic quantization is not importable ({err})"
    return None


def fp8_transformer(ref, config):
    """Ours on `ref`'s weights, its linears (both sides multiples of 16) as float8 with dynamic activations.
    torchao's inductor settings are left alone, so that every compiled row compiles with the same ones."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    from latte.models.latte_t2v import LatteT2VTransformer

    model = LatteT2VTransformer.from_state_dict(ref.state_dict(), config, device=ref.device, torch_dtype=ref.dtype)
    quantize_(
        model,
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False),
        filter_fn=lambda m, _: isinstance(m, torch.nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0,
    )
    return model.requires_grad_(False)


def parallel_unavailable(device: str) -> str | None:
    count = torch.cuda.device_count() if device == "cuda" else 0
    return None if count >= 2 else f"needs 2 CUDA GPUs, found {count}"


def _parallel_worker(rank: int, world: int, init_file: str, out_file: str, setting: dict, repeats: int) -> None:
    """One rank of the guidance-parallel row: its own copy of the same weights on GPU `rank`, half of every
    guidance batch."""
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        components, _ = build_components(getattr(torch, setting["dtype"]), f"cuda:{rank}", setting["layers"],
                                         shapes=setting["shapes"])  # fmt: skip
        pipe = LattePipeline(**{**components, "transformer": CFGParallel(components["transformer"])})
        pipe.set_progress_bar_config(disable=True)
        dist.barrier()
        with torch.inference_mode():
            result = timed(pipe, setting, repeats)
        if rank == 0:
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


def guidance_parallel(setting: dict, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.pt"
        mp.spawn(_parallel_worker, args=(2, f"{tmp}/init", str(out), setting, repeats), nprocs=2, join=True)
        return torch.load(out)


def over_budget(setting: dict, repeats: int, reference: dict | None, compile_s: float) -> str | None:
    """Why a row is skipped for time: its expected seconds (generations as long as ours eager, plus
    `compile_s`) do not fit in what is left of the budget."""
    expected = (repeats + 0.2) * (reference["seconds"] if reference else 0) + compile_s
    left = setting["budget_s"] - (time.monotonic() - START)
    if expected <= left:
        return None
    return f"time budget: about {expected:.0f} s expected, {max(left, 0):.0f} s of {setting['budget_s']:.0f} s left"


def run_rows(setting: dict, repeats: int, compile_mode: str) -> list[dict]:
    device, dtype = setting["device"], getattr(torch, setting["dtype"])
    components, ref = build_components(dtype, device, setting["layers"], shapes=setting["shapes"])
    ours = components["transformer"]
    smoke = device == "cpu"
    ours_options = {"backend": "eager"} if smoke else {"mode": None if compile_mode == "default" else compile_mode}
    recipe_options = {"backend": "eager"} if smoke else {}  # the docs compile with the defaults

    def run(pipeline_class, transformer, options=None):
        """Time `pipeline_class` on the shared components with `transformer` (compiled by the docs' recipe
        with `options`, if given). Built as the docs do, outside inference mode; generations inside it."""
        if options is not None:
            compile_vae_decode(components["vae"], recipe_options)
            transformer = channels_last_compiled(transformer, options)
        pipe = pipeline_class(**{**components, "transformer": transformer})
        pipe.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            return timed(pipe, setting, repeats)

    theirs = DiffusersLattePipeline
    # name -> (why it cannot run here or None, whether it compiles, the run)
    rows = {
        BASELINE: (None, False, lambda: run(theirs, ref)),
        REFERENCE: (None, False, lambda: run(LattePipeline, ours)),
        "ours + TeaCache 0.1": (None, False, lambda: run(LattePipeline, TeaCache(ours, 0.1))),
        "ours + TeaCache 0.2": (None, False, lambda: run(LattePipeline, TeaCache(ours, 0.2))),
        "ours compiled": (None, True, lambda: run(LattePipeline, ours, ours_options)),
        "ours fp8": (fp8_unavailable(device), True,
                     lambda: run(LattePipeline, fp8_transformer(ref, ours.config), ours_options)),
        "diffusers compiled": (None, True, lambda: run(theirs, ref, recipe_options)),
        "ours guidance-parallel": (parallel_unavailable(device), False, lambda: guidance_parallel(setting, repeats)),
    }  # fmt: skip
    results, frames, reference = [], {}, None
    compile_allowance = setting["compile_allowance_s"]
    for name, (unavailable, compiles, run_row) in rows.items():
        row = {"row": name}
        results.append(row)
        why = unavailable or over_budget(setting, repeats, reference, compile_allowance if compiles else 0)
        if why:
            row.update(status="skipped", why=why)
            print(f"{name}: skipped: {why}", flush=True)
            continue
        print(f"{name}: running", flush=True)
        began = time.monotonic()
        try:
            result = run_row()
        except Exception as err:  # one failing option must not cost the others their run
            logging.exception("%s failed", name)
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            row.update(status="failed", why=f"{type(err).__name__}: {first_line}")
            continue
        frames[name] = result.pop("frames")
        row.update(status="ok", **result, row_s=time.monotonic() - began)  # row_s: building and compiling too
        print(f"{name}: {row['seconds']:.2f} s a generation, {row['row_s']:.0f} s for the row", flush=True)
        if name == REFERENCE:
            reference = row
        if compiles:  # later compiled rows are expected to take as long to compile as this one did
            compile_allowance = max(compile_allowance, row["warmup_s"])
        if device == "cuda":
            torch.cuda.empty_cache()
    base = next((r["seconds"] for r in results if r["row"] == BASELINE and r["status"] == "ok"), None)
    for row in results:
        if row["status"] == "ok":
            row["speedup_vs_diffusers_eager"] = base / row["seconds"] if base else None
            diff = (frames[row["row"]] - frames[REFERENCE]).abs().max().item() if reference else None
            row["max_frame_diff"] = diff
    return results


def _number(value, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def table(rows: list[dict]) -> str:
    lines = ["| row | seconds | vs diffusers eager | peak memory GiB | max frame diff | note |", "|---" * 6 + "|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['row']} | - | - | - | - | {r['status']}: {r['why']} |")
            continue
        lines.append(
            f"| {r['row']} | {r['seconds']:.2f} | {_number(r['speedup_vs_diffusers_eager'], '.2f')}x "
            f"| {r['peak_gib']:.2f} | {_number(r['max_frame_diff'], '.1e')} | warm-up {r['warmup_s']:.1f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, same code path (well under a minute)")
    parser.add_argument("--json", default="gpu_suite.json", help="the rows and the machine (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="timed generations per row (median reported)")
    parser.add_argument("--compile-mode", default="reduce-overhead", choices=COMPILE_MODES,
                        help="torch.compile mode of ours compiled and ours fp8 (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, help="skip rows that would end later (default: 420 on a GPU)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's; 2 with --smoke)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.repeats < 1:
        raise SystemExit(f"gpu_suite: error: --repeats must be at least 1, got {args.repeats}")
    setting = dict(SETTINGS["smoke" if args.smoke else "full"])
    if args.budget_s is not None:
        setting["budget_s"] = args.budget_s
    if setting["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: error: no CUDA device; run with --smoke for the CPU check")
    try:
        check_file_target(args.json)
    except (ValueError, OSError) as err:
        raise SystemExit(f"gpu_suite: error: {err}") from None
    if args.threads or args.smoke:
        torch.set_num_threads(args.threads or 2)

    logging.getLogger("latte.pipelines").setLevel(logging.ERROR)  # a random tokenizer's vocabulary warnings
    machine = print_machine(torch.get_num_threads(), setting["device"], json_line=False)
    print(f"setting: {setting['device']}, {setting['dtype']}, {setting['frames']} x {setting['size']} x "
          f"{setting['size']}, {setting['steps']} DDIM steps, guidance {GUIDANCE}, {setting['layers']} layers "
          f"({setting['shapes']} shapes), repeats {args.repeats}", flush=True)  # fmt: skip
    rows = run_rows(setting, args.repeats, args.compile_mode)
    report = {"machine": machine, "setting": {**setting, "guidance": GUIDANCE, "repeats": args.repeats,
              "compile_mode": args.compile_mode}, "rows": rows, "total_s": time.monotonic() - START}  # fmt: skip
    print(table(rows))
    print(f"total {report['total_s']:.0f} s")
    write_file(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
