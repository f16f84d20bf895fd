"""Training: `load_config` (YAML + overrides), `train(cfg)`, `export_run(run_dir, output)`."""

from latte.training.config import Config, load_config
from latte.training.export import export_run
from latte.training.train import train

__all__ = ["Config", "export_run", "load_config", "train"]
