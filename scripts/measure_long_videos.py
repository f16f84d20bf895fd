"""Measure long videos, image-to-video and video extension on the shipped shapes model (docs/long_videos.md).

    python scripts/measure_long_videos.py results.json [--prompts "a red circle moving right" ...] [--seed 0]
        [--lengths 64 32 16] [--slow-motion 4] [--parts long image extend chain] [--chain-frames 128]

Every run is read with the adherence analyser (`latte.evaluation.adherence.read_clip`) per 16-frame window;
results are appended to the JSON file after each run (so an interrupted measurement keeps what it finished)
and printed, one JSON line per run.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

PROMPTS = ("a red circle moving right", "a blue square moving up")
WINDOW = 16  # frames per adherence window (the training length)


def presence(video: torch.Tensor) -> float:
    """Fraction of frames (F, 3, H, W) in [0, 1] that show a shape: the analyser's foreground test per frame."""
    from latte.evaluation.adherence import FG_DISTANCE, MIN_AREA

    pixels = video.permute(0, 2, 3, 1)
    border = torch.cat([pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]], dim=1)
    background = border.reshape(-1, 3).median(0).values
    area = ((pixels - background).norm(dim=-1) > FG_DISTANCE).sum((1, 2))
    return float((area >= MIN_AREA * (video.shape[-1] / 64) ** 2).float().mean())


def windows(video: torch.Tensor, case) -> dict:
    """Per 16-frame window: does colour / shape / motion read as the prompt says, and are colour and shape
    kept (read the same as in the first window)?"""
    from latte.evaluation.adherence import read_clip

    reads = [read_clip(video[s:s + WINDOW]) for s in range(0, video.shape[0] - WINDOW + 1, WINDOW)]
    return {
        "present": presence(video),
        **{attr: sum(getattr(r, attr) == getattr(case, attr) for r in reads) / len(reads)
           for attr in ("color", "shape", "motion")},
        **{f"{attr}_kept": sum(getattr(r, attr) == getattr(reads[0], attr) for r in reads) / len(reads)
           for attr in ("color", "shape")},
        "consistency": sum(r.consistency for r in reads) / len(reads),
        "motions": [r.motion for r in reads], "colors": [r.color for r in reads], "shapes": [r.shape for r in reads],
        "whole_motion": read_clip(video).motion,  # the whole video's path, however slow per window
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).square().mean())
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def frame_changes(video: torch.Tensor) -> torch.Tensor:
    """(F - 1,) mean absolute pixel change between consecutive frames (F, 3, H, W)."""
    return (video[1:] - video[:-1]).abs().mean((1, 2, 3))


def mean_step(video: torch.Tensor) -> float:
    return float(frame_changes(video).mean())


def start_fraction(motion: str) -> tuple[float, float]:
    """Where a rendered path starts so that the shape has room to keep going (far side of its range)."""
    return {"right": (0.0, 0.5), "left": (1.0, 0.5), "down": (0.5, 0.0), "up": (0.5, 1.0)}.get(motion, (0.5, 0.5))


def main(argv: list[str] | None = None) -> int:
    from latte.data.synthetic import render_clip
    from latte.evaluation.adherence import PromptCase, read_clip
    from latte.pipelines import LattePipeline, default_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="JSON file for the results")
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 32, 16])
    parser.add_argument("--parts", nargs="+", choices=("long", "image", "extend", "chain"),
                        default=["long", "image", "extend"])
    parser.add_argument("--chain-frames", type=int, default=128,
                        help="length of the chained slow-motion video (part 'chain', at the first --slow-motion)")
    parser.add_argument("--slow-motion", type=float, nargs="*", default=[4.0],
                        help="slow-motion factors to measure beyond the training length (default 4)")
    args = parser.parse_args(argv)

    pipe = LattePipeline.from_pretrained(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    results = json.loads(args.output.read_text()) if args.output.is_file() else []
    done = {(r["kind"], r["prompt"], r.get("frames")) for r in results if r.get("seed", 0) == args.seed}

    def generate(prompt, **kwargs):
        start = time.perf_counter()
        video = pipe(prompt, output_type="pt", generator=torch.Generator().manual_seed(args.seed), **kwargs).frames[0]
        return video, time.perf_counter() - start

    def record(row):
        row = {**row, "seed": args.seed}
        results.append(row)
        args.output.write_text(json.dumps(results, indent=1))
        print(json.dumps(row), flush=True)

    samplers = [("windows", {"slow_motion": 1}), ("plain", {"long_video": False}),
                *((f"slow{factor:g}", {"slow_motion": factor}) for factor in args.slow_motion)]
    cases = []
    for prompt in args.prompts:
        words = prompt.split()
        cases.append(PromptCase(prompt, words[1], words[2], words[-1], "seen"))
    for case in cases:
        # 1. Long videos: ours (FreeNoise windows) against plain whole-clip attention.
        #    Slow motion ("slowS"): the same windows, S times longer, at interpolated positions.
        for frames in args.lengths if "long" in args.parts else []:
            for kind, options in samplers:
                if frames <= WINDOW and kind != "windows" or (kind, case.prompt, frames) in done:
                    continue  # up to the training length windows and plain are the same computation
                video, seconds = generate(case.prompt, video_length=frames, **options)
                changes = frame_changes(video)  # a jump or a flicker shows in the largest
                record({"kind": kind, "prompt": case.prompt, "frames": frames, "seconds": seconds,
                        **windows(video, case), "mean_step": float(changes.mean()), "max_step": float(changes.max())})
        # 2. Image-to-video: the first frame of a rendered clip whose path has room ahead.
        clip = (render_clip(case.color, case.shape, case.motion, num_frames=WINDOW,
                            start=start_fraction(case.motion)) + 1) / 2  # (3, F, H, W) in [0, 1]
        if "image" in args.parts and ("image", case.prompt, WINDOW) not in done:
            image = clip[:, 0].permute(1, 2, 0).numpy()
            video, seconds = generate(case.prompt, image=image)
            reading = read_clip(video)
            record({"kind": "image", "prompt": case.prompt, "frames": WINDOW, "seconds": seconds,
                    "psnr_first": psnr(video[0], clip[:, 0]), "motion_ok": reading.motion == case.motion,
                    "motion": reading.motion, "color_ok": reading.color == case.color,
                    "shape_ok": reading.shape == case.shape, "present": presence(video),
                    "first_step": float((video[1] - video[0]).abs().mean()), "later_step": mean_step(video[1:])})
        # 3. Extension: the rendered clip continued by 16 frames in two calls of 8 new frames each, each
        #    conditioned on the last 8 frames so far (context + new frames = the training length).
        if "extend" in args.parts and ("extend", case.prompt, WINDOW) not in done:
            video, seconds = clip.permute(1, 0, 2, 3), 0.0  # (F, 3, H, W)
            for _ in range(2):
                source = video.permute(0, 2, 3, 1).numpy()  # (F, H, W, 3)
                video, took = generate(case.prompt, video=source, video_length=WINDOW // 2, context_frames=WINDOW // 2)
                seconds += took
            new = video[WINDOW:]
            reading = read_clip(new)
            record({"kind": "extend", "prompt": case.prompt, "frames": WINDOW, "seconds": seconds,
                    "join_step": float((video[WINDOW] - video[WINDOW - 1]).abs().mean()),
                    "second_join_step": float((video[WINDOW + 8] - video[WINDOW + 7]).abs().mean()),
                    "new_step": mean_step(new), "clip_step": mean_step(video[:WINDOW]),
                    "motion_ok": reading.motion == case.motion, "motion": reading.motion,
                    "color_ok": reading.color == case.color, "shape_ok": reading.shape == case.shape,
                    "present": presence(new)})
        # 4. Chained slow motion: one slow window (S x 16 frames), then extensions by the same window less its
        #    last 16 frames as context, until --chain-frames; are the joins as smooth as the rest?
        factor = args.slow_motion[0] if args.slow_motion else 1.0
        if "chain" in args.parts and (f"chain{factor:g}", case.prompt, args.chain_frames) not in done:
            length = round(WINDOW * factor)
            video, seconds = generate(case.prompt, video_length=length, slow_motion=factor)
            joins = []
            while video.shape[0] < args.chain_frames:
                joins.append(video.shape[0])
                new_frames = min(max(length - WINDOW, WINDOW // 2), args.chain_frames - video.shape[0])
                video, took = generate(case.prompt, video=video.permute(0, 2, 3, 1).numpy(), video_length=new_frames,
                                       context_frames=WINDOW, slow_motion=factor)
                seconds += took
            changes = frame_changes(video)
            record({"kind": f"chain{factor:g}", "prompt": case.prompt, "frames": args.chain_frames, "seconds": seconds,
                    **windows(video, case), "mean_step": float(changes.mean()),
                    "join_steps": [float(changes[j - 1]) for j in joins]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
