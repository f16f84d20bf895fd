"""The models of a training run: the denoiser a config describes (`build_model`) and the frozen VAE and text
encoder (`load_frozen`). Training, export and the training samples all build them from here."""

from pathlib import Path

import torch
from torch import nn

from latte.training.config import Config


def load_frozen(cfg: Config, device: torch.device):
    """The frozen VAE and (text-to-video) the tokenizer and text encoder from `cfg.components`."""
    from latte.models.vae import load_vae

    if not cfg.components:
        raise ValueError(
            "config key 'components' must name a folder with vae/ (and text_encoder/, tokenizer/ "
            "for text-to-video), e.g. the shipped latte-shapes model folder"
        )
    vae = load_vae(Path(cfg.components) / "vae").to(device)
    text = None
    if cfg.model.type == "t2v":
        tokenizer, encoder = load_text(cfg)
        text = (tokenizer, encoder.to(device))
    return vae, text


def load_text(cfg: Config):
    """The tokenizer and text encoder from `cfg.components`, with the run's new words (`train.lora.new_words`)."""
    from latte.models.text_encoder import add_words, draw_word_rows, load_text_components

    tokenizer, encoder = load_text_components(cfg.components)
    add_words(tokenizer, encoder, draw_word_rows(encoder, cfg.train.lora.new_words))
    return tokenizer, encoder


def build_model(cfg: Config, latent_shape: list[int], text_dim: int | None) -> nn.Module:
    """The denoiser the config names, sized to the cached latents (C, F, h, w) and text features, or the
    pretrained model it names (checked against them).

    Sizes the data fixes (channels, latent side, frames, text width) are filled in; `model.args` naming
    other values is an error. Both models get 2C output channels (epsilon + learned-range variance) unless
    the args say otherwise.
    """
    channels, frames, height, _ = latent_shape
    args = dict(cfg.model.args)
    if cfg.model.pretrained:
        model = load_pretrained(cfg.model.type, cfg.model.pretrained)
        needed = {"in_channels": channels}
        if cfg.model.type == "t2v":
            needed["caption_channels"] = text_dim
        for key, value in needed.items():
            if getattr(model.config, key) != value:
                raise ValueError(
                    f"pretrained model {cfg.model.pretrained} has {key}="
                    f"{getattr(model.config, key)}, the data {value}"
                )
    elif cfg.model.type == "t2v":
        from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer

        _fill(args, in_channels=channels, sample_size=height, caption_channels=text_dim, video_length=frames)
        args.setdefault("out_channels", 2 * channels)
        args.setdefault("cross_attention_dim", LatteT2VConfig(**{**args, "cross_attention_dim": None}).width)
        model = LatteT2VTransformer(LatteT2VConfig(**args))
        model.initialize_weights()
    else:
        from latte.models.latte import Latte, LatteConfig

        _fill(args, in_channels=channels, input_size=height, num_frames=frames)
        # The label table needs a null row exactly when labels are dropped for guidance.
        args.setdefault("class_dropout_prob", cfg.train.cfg_dropout)
        config = LatteConfig.from_name(cfg.model.name, **args) if cfg.model.name else LatteConfig(**args)
        model = Latte(config)
        model.initialize_weights()
    if cfg.model.type == "latte" and model.config.num_classes:
        if cfg.train.cfg_dropout > 0 and not model.config.has_null_class:
            raise ValueError(
                "train.cfg_dropout > 0 needs a null class: leave model.args.class_dropout_prob unset"
            )
        # The trainer drops labels itself, from each sample's generator (the same on any number of
        # processes and after a resume); the embedder's own global-RNG dropout is switched off.
        model.y_embedder.dropout_prob = 0.0
    return model.float().requires_grad_(True)


def load_pretrained(model_type: str, path: str) -> nn.Module:
    """A model folder (or a pipeline folder's transformer/) or, for "latte", an original .pt checkpoint."""
    path = Path(path)
    if model_type == "t2v":
        from latte.models.latte_t2v import LatteT2VTransformer as cls
    else:
        from latte.models.latte import Latte as cls

        if path.is_file():
            return cls.from_original(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model.pretrained not found: {path}")
    return cls.from_pretrained(path, subfolder="transformer" if (path / "transformer").is_dir() else None)


def _fill(args: dict, **derived) -> None:
    for key, value in derived.items():
        if args.setdefault(key, value) != value:
            raise ValueError(f"model.args.{key}={args[key]} does not fit the data, which has {key}={value}")
