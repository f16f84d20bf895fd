"""Render the README preview: one animated GIF with a generated video per prompt, side by side.

    python scripts/make_shapes_preview.py docs/assets/latte-shapes.gif [--model DIR] [--seed 0]

Uses the model's `latte generate` defaults (steps, guidance); frames are upscaled 2x (nearest) for display.
"""

import argparse
import sys
from pathlib import Path

import torch

PROMPTS = (
    "a red circle moving left",
    "a small blue square slides to the right on a black background",
    "a yellow triangle moving down",
    "a green circle growing",
    "a purple square moving up on a white background",
    "a cyan triangle drifting right on a gray background",
)


def main(argv: list[str] | None = None) -> int:
    from latte.cli.generate import resolve_model
    from latte.pipelines import LattePipeline
    from latte.pipelines.export import export_video

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the .gif to write")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = resolve_model(args.model)
    pipe = LattePipeline.from_pretrained(folder)
    generators = [torch.Generator().manual_seed(args.seed) for _ in PROMPTS]
    videos = pipe(list(PROMPTS), generator=generators, output_type="pt").frames  # (B, F, 3, H, W): folder defaults
    videos = torch.nn.functional.pad(videos, (2, 2, 2, 2), value=1.0)  # white frame between videos
    strip = torch.cat(list(videos), dim=-1)  # (F, 3, H + 4, B * (W + 4))
    strip = strip.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    print(f"wrote {export_video(strip, args.output, fps=pipe.generate_defaults.get('fps', 8))}")
    for i, prompt in enumerate(PROMPTS, 1):
        print(f"{i}. {prompt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
