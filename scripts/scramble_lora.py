"""Write a control adapter: a LoRA adapter's update turned to a random direction, its size kept (docs/training.md).

    python scripts/scramble_lora.py runs/lora-shapes/adapter -o runs/lora-shapes/scrambled [--seed 0]
    latte eval adherence --shrink --num-seen 6 --seeds 0 1 2 3 4 5 --lora runs/lora-shapes/scrambled --json c.json

Each layer's `lora_B` rows and `lora_A` columns are permuted (seeded). Permutations are orthogonal, so every
layer's update B @ A keeps its singular values (its size and rank) while its output and input channels are
shuffled: what the adapter learnt is gone, how much it changes the model is not. Comparing a trained adapter
with its scrambled copy separates losses caused by what was learnt from losses any change of that size causes.
"""

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from latte.outputs import write_folder

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


def scramble(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The adapter's tensors with lora_B rows and lora_A columns permuted; other tensors unchanged."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state):  # a fixed order: the same seed gives the same permutations
        weight = state[key]
        if key.endswith("lora_B.weight"):
            weight = weight[torch.randperm(weight.shape[0], generator=generator)]
        elif key.endswith("lora_A.weight"):
            weight = weight[:, torch.randperm(weight.shape[1], generator=generator)]
        out[key] = weight.contiguous()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapter", type=Path, help=f"peft adapter folder ({CONFIG} + {WEIGHTS})")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to write the scrambled adapter to")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations (default 0)")
    args = p.parse_args(argv)
    missing = [name for name in (CONFIG, WEIGHTS) if not (args.adapter / name).is_file()]
    if missing:
        print(f"error: {args.adapter} is no peft adapter folder: {' and '.join(missing)} missing", file=sys.stderr)
        return 2
    state = scramble(load_file(args.adapter / WEIGHTS), args.seed)

    def fill(folder: Path) -> None:
        shutil.copyfile(args.adapter / CONFIG, folder / CONFIG)
        save_file(state, folder / WEIGHTS)

    print(f"wrote {write_folder(args.output, fill)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
