"""`export_run`: a training run's EMA weights as a model folder that `latte generate` and diffusers load.

Text-to-video runs give the Latte-1 pipeline layout: model_index.json, transformer/ (the EMA weights),
and the frozen vae/, text_encoder/, tokenizer/, scheduler/ copied from the run's `components` folder.
Class/unconditional runs give a `LatteClassPipeline` folder: transformer/, vae/, scheduler/ (the paper's
DDPM), model_index.json. The folder follows the output rule (`latte.outputs.write_folder`): assembled beside
`output` and swapped in; a folder latte did not write is replaced only with `overwrite` (`--overwrite`).
"""

import logging
import os
import shutil
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch

from latte.models.io import load_torch_checkpoint, read_json, write_json
from latte.outputs import check_folder_target, write_folder
from latte.pipelines.defaults import FOLDER_DEFAULTS_KEY
from latte.training.checkpoint import CHECKPOINT_DIR, load_latest
from latte.training.config import config_from_dict
from latte.training.model import build_model, load_text

logger = logging.getLogger(__name__)

# What every checkpoint of `latte train` holds and export needs.
TRAINING_KEYS = ("step", "config", "model", "ema", "latent_shape", "text_dim")
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
    overwrite: bool = False,
    lora: bool = False,
) -> Path:
    """Write the model of `run_dir` (its newest readable checkpoint, or `checkpoint`) as a model folder `output`,
    by the output rule (`latte.outputs.write_folder`): an existing folder latte did not write is replaced only
    with `overwrite`.

    A LoRA run (`train.lora`) gives its adapter in peft's format with `lora=True` (`latte export --lora`), else
    a whole model folder with the adapter fused into the pretrained weights."""
    run_dir = Path(run_dir)
    output = check_folder_target(output, overwrite)
    if checkpoint is None:
        latest = load_latest(run_dir)
        if latest is None:
            raise FileNotFoundError(
                f"no readable checkpoints in {run_dir / CHECKPOINT_DIR}: train first (`latte train`)"
            )
        checkpoint, state = latest
    else:
        state = load_torch_checkpoint(checkpoint)
        check_training_checkpoint(state, checkpoint)
    cfg = config_from_dict(state["config"])
    if lora and not cfg.train.lora.enabled:
        raise ValueError(f"{checkpoint} is from a full fine-tuning run (no train.lora): export it without --lora")
    model = build_model(cfg, state["latent_shape"], state["text_dim"])
    weights = state["ema" if use_ema else "model"]
    if cfg.train.lora.enabled:
        from latte.models.lora import adapter_state_dict, fuse, save_adapter, unload
        from latte.training.lora import apply_lora, run_lora_config

        apply_lora(model, cfg).load_state_dict(weights, strict=False)
        if lora:
            adapter, words = adapter_state_dict(model), None
            if cfg.train.lora.new_words:
                from latte.models.text_encoder import draw_word_rows, load_text_components

                words = draw_word_rows(load_text_components(cfg.components)[1], cfg.train.lora.new_words)
            write = partial(save_adapter, config=run_lora_config(cfg), weights=adapter, words=words)
            output = write_folder(output, write, overwrite)
            logger.info("exported the LoRA adapter of %s (step %d) to %s", checkpoint, state["step"], output)
            return output
        fuse(model)
        unload(model)
    else:
        model.load_state_dict(weights)
    components = Path(cfg.components) if cfg.components else None
    if components is None or not components.is_dir():
        raise FileNotFoundError(
            f"the run's components folder {cfg.components} is missing: it holds the frozen "
            "VAE (and text encoder) the model folder needs"
        )
    if cfg.model.type == "t2v":
        text = dict(zip(("tokenizer", "text_encoder"), load_text(cfg), strict=True)) if cfg.train.lora.new_words else {}
        write = partial(_write_text_to_video, defaults=_generation_defaults(cfg.model.pretrained), text=text)
    else:
        write = _write_class
    write_folder(output, lambda folder: write(model, components, folder, cfg.train.prediction_type), overwrite)
    logger.info(
        "exported the %s weights of %s (step %d) to %s",
        "EMA" if use_ema else "raw",
        checkpoint,
        state["step"],
        output,
    )
    return output


def check_training_checkpoint(state, path: str | os.PathLike) -> None:
    """Fail in one line, saying what the file holds, when `state` is not a checkpoint of `latte train`."""
    missing = [k for k in TRAINING_KEYS if not isinstance(state, Mapping) or k not in state]
    if not missing:
        return
    if not isinstance(state, Mapping):
        what = f"a {type(state).__name__}"
    elif state and all(isinstance(v, torch.Tensor) for v in state.values()):
        what = f"a bare state dict ({len(state)} tensors)"
    else:
        what = f"the keys {', '.join(map(repr, list(state)[:8]))}"
    raise ValueError(
        f"{path} is not a `latte train` checkpoint: it holds {what} and lacks {', '.join(missing)}; pass a "
        "RUN_DIR/checkpoints/step-*.pt file, or turn an original Latte checkpoint into a model folder with "
        f"`latte convert {path} -o FOLDER`"
    )


def scheduler_config(components: Path, prediction_type: str) -> dict:
    """A text-to-video run's sampler: the components' scheduler config (else Latte-1's), set to read the model's
    output as the trainer defined it."""
    path = components / "scheduler" / "scheduler_config.json"
    return {**(read_json(path) if path.is_file() else LATTE1_SCHEDULER), "prediction_type": prediction_type}


def _generation_defaults(pretrained: str | None) -> dict | None:
    """A fine-tuned model samples like the model it started from: the pretrained folder's generation defaults
    (steps, guidance, ...), if it has any. A model trained from scratch gets none (the pipeline's own)."""
    index = Path(pretrained) / "model_index.json" if pretrained else None
    if index is None or not index.is_file():
        return None
    return read_json(index).get(FOLDER_DEFAULTS_KEY)


def _write_text_to_video(
    model, components: Path, folder: Path, prediction_type: str, defaults: dict | None, text: dict
) -> None:
    """The model folder; `text` ({"tokenizer": ..., "text_encoder": ...} with the run's new words) replaces the
    components' own."""
    model.save_pretrained(folder / "transformer")
    for name in COMPONENTS:
        if name == "scheduler":
            write_json(folder / name / "scheduler_config.json", scheduler_config(components, prediction_type))
        elif name in text:
            text[name].save_pretrained(str(folder / name))
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
    if defaults is not None:
        index[FOLDER_DEFAULTS_KEY] = defaults
    write_json(folder / "model_index.json", index)


def _write_class(model, components: Path, folder: Path, prediction_type: str) -> None:
    from latte.models.vae import load_vae
    from latte.pipelines.class_conditional import LatteClassPipeline, paper_scheduler

    vae = load_vae(components / "vae")
    scheduler = paper_scheduler(model.config.learn_sigma, prediction_type)
    LatteClassPipeline(vae, model, scheduler).save_pretrained(folder)
