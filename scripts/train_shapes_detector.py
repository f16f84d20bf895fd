"""Train the shapes domain's feature extractor and write it as TorchScript (the shipped one:
src/latte/assets/shapes-detector.pt). It reads clips of latte.data.synthetic; see latte.evaluation.shapes_detector.

    python scripts/train_shapes_detector.py --steps 2000 -o src/latte/assets/shapes-detector.pt
"""

import argparse
import json

import torch

from latte.evaluation.shapes_detector import SHIPPED_DETECTOR, head_accuracy, save_detector, train_shapes_detector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pool", type=int, default=2048, help="clean clips rendered once, drawn with fresh degradations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=str(SHIPPED_DETECTOR))
    args = p.parse_args()
    model = train_shapes_detector(args.steps, args.batch_size, seed=args.seed, pool=args.pool)
    print(json.dumps({k: round(v, 4) for k, v in head_accuracy(model).items()}))
    save_detector(model, args.output)
    print(f"wrote {args.output} ({sum(p.numel() for p in model.parameters())} parameters, torch {torch.__version__})")


if __name__ == "__main__":
    main()
