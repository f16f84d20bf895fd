"""Class-conditional Latte with image-video joint training from a video folder, and the on-the-fly path."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latte.training.config import config_from_dict
from latte.training.export import export_run
from latte.training.train import train
from test_data import write_video
from training_support import make_components, tiny_config

TINY_LATTE = {"depth": 2, "hidden_size": 32, "num_heads": 2, "num_classes": 2}


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return make_components(tmp_path_factory.mktemp("class") / "components")


def test_joint_class_training_and_export(components, tmp_path):
    videos, images = tmp_path / "videos", tmp_path / "images"
    for label, cls in enumerate(("jump", "run")):
        (images / cls).mkdir(parents=True)
        for i in range(2):
            write_video(videos / cls / f"{i}.mp4", 12)
            still = np.full((24, 24, 3), 60 + 100 * label + 20 * i, np.uint8)
            Image.fromarray(still).save(images / cls / f"{i}.png")
    (videos / "run" / "broken.avi").write_bytes(b"garbage" * 100)  # skipped with a warning
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "components": str(components),
            "model": {"type": "latte", "args": TINY_LATTE},
            "data": {
                "source": "videos",
                "root": str(videos),
                "image_root": str(images),
                "use_image_num": 2,
                "num_frames": 4,
                "frame_interval": 2,
                "size": 64,
                "flip": True,
            },
            "train": {"steps": 3, "batch_size": 2, "cfg_dropout": 0.5},
            "log": {
                "log_every": 1,
                "ckpt_every": 3,
                "sample_every": 3,
                "sample_steps": 2,
                "tensorboard": False,
            },
        }
    )
    summary = train(cfg)
    assert summary["step"] == 3 and np.isfinite(summary["loss"]) and summary["vb"] > 0  # hybrid loss
    meta = json.loads((cfg.cache_path / "cache.json").read_text())
    assert meta["num_clips"] == 4 and meta["num_images"] == 2 and meta["latent_shape"] == [4, 4, 8, 8]
    assert sorted(p.name for p in (cfg.run_dir / "samples").iterdir()) == [  # classes 0 and 1
        "step-00000003-0.gif",
        "step-00000003-1.gif",
    ]

    from latte.pipelines.class_conditional import LatteClassPipeline

    pipe = LatteClassPipeline.from_pretrained(export_run(cfg.run_dir, tmp_path / "model"))
    assert pipe.transformer.config.num_classes == 2 and pipe.transformer.config.has_null_class
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"


def test_class_labels_must_fit_the_model(components, tmp_path):
    videos = tmp_path / "videos"
    for cls in ("a", "b", "c"):
        write_video(videos / cls / "0.mp4", 8)
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "components": str(components),
            "model": {"type": "latte", "args": TINY_LATTE},
            "data": {
                "source": "videos",
                "root": str(videos),
                "num_frames": 4,
                "frame_interval": 1,
                "size": 64,
            },
            "train": {"steps": 2, "batch_size": 3, "cfg_dropout": 0.0},
            "log": {"tensorboard": False},
        }
    )
    with pytest.raises(ValueError, match="num_classes=2 needs labels 0..1"):
        train(cfg)


def test_on_the_fly_encoding_matches_the_cache(components, tmp_path):
    """Epoch 0 of data.use_cache=false sees the same latents, so the same first losses as the cached run."""
    cached = tiny_config(tmp_path / "cached", components, tmp_path / "cache", train={"steps": 2})
    online = tiny_config(
        tmp_path / "online", components, tmp_path / "unused", train={"steps": 2}, data={"use_cache": False}
    )
    a, b = train(cached), train(online)
    assert not (tmp_path / "unused").exists()
    torch.testing.assert_close(torch.tensor(b["loss"]), torch.tensor(a["loss"]), rtol=1e-5, atol=1e-6)
