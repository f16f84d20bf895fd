"""`export_run`: a training run's EMA weights as a model folder that `latte generate` and diffusers load.

Text-to-video runs give the Latte-1 pipeline layout: model_index.json, transformer/ (the EMA weights),
and the frozen vae/, text_encoder/, tokenizer/, scheduler/ copied from the run's `components` folder.
Class/unconditional runs give a `LatteClassPipeline` folder: transformer/, vae/, scheduler/ (the paper's
DDPM), model_index.json. The folder is assembled beside `output` and renamed into place.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path

from latte.models.io import load_torch_checkpoint, read_json, write_json
from latte.training.checkpoint import list_checkpoints
from latte.training.config import config_from_dict

logger = logging.getLogger(__name__)

COMPONENTS = ("vae", "text_encoder", "tokenizer", "scheduler")
MODEL_INDEX = {
    "_class_name": "LattePipeline",
    "_diffusers_version": "0.30.0",
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", "LatteTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# The schedule the trainer uses, as Latte-1 publishes it; written when `components` has no scheduler/.
LATTE1_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 0,
    "timestep_spacing": "leading",
    "variance_type": "learned_range",
}


def export_run(
    run_dir: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    use_ema: bool = True,
) -> Path:
    """Write the model of `run_dir` (its newest checkpoint, or `checkpoint`) as a model folder `output`."""
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
    model = build_model(cfg, state["latent_shape"], state["text_dim"])
    model.load_state_dict(state["ema" if use_ema else "model"])
    if not cfg.components or not Path(cfg.components).is_dir():
        raise FileNotFoundError(
            f"the run's components folder {cfg.components} is missing: it holds the frozen "
            "VAE (and text encoder) the model folder needs"
        )

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        if cfg.model.type == "t2v":
            _write_text_to_video(model, Path(cfg.components), tmp, cfg.train.prediction_type)
        else:
            _write_class(model, Path(cfg.components), tmp, cfg.train.prediction_type)
        if output.exists():  # swap: the old folder is removed only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            os.replace(output, old / output.name)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "exported the %s weights of %s (step %d) to %s",
        "EMA" if use_ema else "raw",
        run_dir,
        state["step"],
        output,
    )
    return output


def scheduler_config(components: Path, prediction_type: str) -> dict:
    """A text-to-video run's sampler: the components' scheduler config (else Latte-1's), set to read the model's
    output as the trainer defined it."""
    path = components / "scheduler" / "scheduler_config.json"
    return {**(read_json(path) if path.is_file() else LATTE1_SCHEDULER), "prediction_type": prediction_type}


def _write_text_to_video(model, components: Path, folder: Path, prediction_type: str) -> None:
    model.save_pretrained(folder / "transformer")
    for name in COMPONENTS:
        if name == "scheduler":
            write_json(folder / name / "scheduler_config.json", scheduler_config(components, prediction_type))
        elif (components / name).is_dir():
            shutil.copytree(components / name, folder / name)
        else:
            raise FileNotFoundError(
                f"missing component folder {components / name}: a text-to-video run's "
                f"components must hold {', '.join(COMPONENTS[:3])}"
            )
    index = dict(MODEL_INDEX)
    if (components / "model_index.json").is_file():
        index.update({k: v for k, v in read_json(components / "model_index.json").items() if k in COMPONENTS})
    index["scheduler"] = [
        "diffusers",
        read_json(folder / "scheduler" / "scheduler_config.json")["_class_name"],
    ]
    write_json(folder / "model_index.json", index)


def _write_class(model, components: Path, folder: Path, prediction_type: str) -> None:
    from latte.models.vae import load_vae
    from latte.pipelines.class_conditional import LatteClassPipeline, paper_scheduler

    vae = load_vae(components / "vae")
    scheduler = paper_scheduler(model.config.learn_sigma, prediction_type)
    LatteClassPipeline(vae, model, scheduler).save_pretrained(folder)
