"""`export_run`: a training run's EMA weights as a model folder that `latte generate` and diffusers load.

Text-to-video runs give the Latte-1 pipeline layout: model_index.json, transformer/ (the EMA weights),
and the frozen vae/, text_encoder/, tokenizer/, scheduler/ copied from the run's `components` folder.
"""

import logging
import os
import shutil
from pathlib import Path

from latte.models.io import read_json, write_json
from latte.training.checkpoint import list_checkpoints
from latte.training.config import config_from_dict

logger = logging.getLogger(__name__)

COMPONENTS = ("vae", "text_encoder", "tokenizer", "scheduler")
# The schedule the trainer uses, as Latte-1 publishes it; written when `components` has no scheduler/.
LATTE1_SCHEDULER = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "prediction_type": "epsilon", "clip_sample": False, "steps_offset": 0,
    "timestep_spacing": "leading", "variance_type": "learned_range",
}
MODEL_INDEX = {
    "_class_name": "LattePipeline",
    "_diffusers_version": "0.30.0",
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", "LatteTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def export_run(
    run_dir: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    use_ema: bool = True,
) -> Path:
    """Write the model of `run_dir` (its newest checkpoint, or `checkpoint`) as a pipeline folder `output`."""
    from latte.models.io import load_torch_checkpoint
    from latte.training.train import build_model

    run_dir, output = Path(run_dir), Path(output)
    if checkpoint is None:
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(
                f"no checkpoints in {run_dir / 'checkpoints'}: train first (`latte train`)"
            )
        checkpoint = found[-1]
    state = load_torch_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    weights = state["ema" if use_ema else "model"]
    model = build_model(cfg, state["latent_shape"], state["text_dim"])
    model.load_state_dict(weights)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output / "transformer")

    components = Path(cfg.components) if cfg.components else None
    for name in COMPONENTS if cfg.model.type == "t2v" else ("vae", "scheduler"):
        source = components / name if components else None
        if source is not None and source.is_dir():
            shutil.copytree(source, output / name, dirs_exist_ok=True)
        elif name == "scheduler":  # the training schedule, as Latte-1 ships it
            write_json(output / name / "scheduler_config.json", LATTE1_SCHEDULER)
        else:
            raise FileNotFoundError(
                f"missing component folder {source}: the run's `components` must hold {name}/"
            )
    if cfg.model.type == "t2v":
        index = dict(MODEL_INDEX)
        if components is not None and (components / "model_index.json").is_file():
            index.update(
                {k: v for k, v in read_json(components / "model_index.json").items() if k in COMPONENTS}
            )
        index["scheduler"] = [
            "diffusers",
            read_json(output / "scheduler" / "scheduler_config.json")["_class_name"],
        ]
        write_json(output / "model_index.json", index)
    logger.info(
        "exported %s weights of %s (step %d) to %s",
        "EMA" if use_ema else "raw",
        run_dir,
        state["step"],
        output,
    )
    return output
