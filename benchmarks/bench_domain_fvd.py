"""Domain FVD of the shipped shapes model (or --model) under sampling settings: step counts, schedulers, TeaCache.

Each row generates `--num-videos` videos from the shapes domain's captions into OUT/<row> (kept and resumed, as
`latte eval fvd --model ... --real synthetic` does) and compares them with rendered training clips using the
shipped shapes detector (`latte.evaluation.shapes_detector`). The first row is the floor: a second draw of real
clips, what a perfect generator would score at this number of videos. Domain FVDs compare only with each other
(same detector file, same N), never with I3D FVDs.

    python benchmarks/bench_domain_fvd.py --out runs/domain-fvd --num-videos 64
"""

import argparse
import json
import time
from pathlib import Path

from bench_utils import machine_info

from latte.evaluation.generation import generate_videos
from latte.evaluation.metrics import frechet
from latte.evaluation.protocol import domain_prompts, make_protocol
from latte.pipelines import default_model_path

# (row name, scheduler or None for the folder's, steps or None for the folder's, TeaCache threshold)
ROWS = {
    "default": (None, None, 0.0),
    "dpm-10": (None, 10, 0.0),
    "teacache-0.2": (None, None, 0.2),
    "ddim-50": ("DDIMScheduler", 50, 0.0),
    "dpm-50": (None, 50, 0.0),
    "teacache-0.1": (None, None, 0.1),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()), help="model folder (default: the shipped one)")
    p.add_argument("--out", required=True, help="folder for the generated videos (one subfolder per row)")
    p.add_argument("--num-videos", type=int, default=64)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(json.dumps(machine_info(2)))
    protocol = make_protocol("fvd", "shapes", num_videos=args.num_videos)
    prompts = domain_prompts("synthetic", protocol, args.seed)
    results = [("floor (real vs real)", frechet("fvd", "synthetic", "synthetic", None, protocol, args.seed)["value"],
                None)]
    print(f"{results[0][0]}: {results[0][1]:.3f}")
    for name in args.rows:
        scheduler, steps, teacache = ROWS[name]
        start = time.perf_counter()
        folder = Path(args.out) / name
        generate_videos(folder, args.model, prompts, args.num_videos, args.seed, steps, None, "cpu",
                        scheduler=scheduler, teacache=teacache)
        report = frechet("fvd", "synthetic", folder, None, protocol, args.seed)
        results.append((name, report["value"], time.perf_counter() - start))
        print(f"{name}: {report['value']:.3f} ({results[-1][2]:.0f} s with generation, on a possibly shared machine)")
    print(f"\n| row | domain FVD ({args.num_videos} videos) |\n|---|---|")
    for name, value, _ in results:
        print(f"| {name} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
