"""The trainer end to end on tiny components: config errors, cache, overfitting, exact resume, export."""

import json

import pytest
import torch

from latte.data.cache import LatentCache, encode_posterior
from latte.data.synthetic import SyntheticShapes
from latte.diffusion import GaussianDiffusion, linear_betas
from latte.models.vae import load_vae
from latte.training import checkpoint as ckpt
from latte.training.config import load_config
from latte.training.export import export_run
from latte.training.model import build_model
from latte.training.train import Dist, lr_at, make_dataset, pad_text, prepare_cache, train
from training_support import make_components, tiny_config, train_killed_after_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    components = make_components(root / "components")
    cfg = tiny_config(root / "first", components, root / "cache")
    cache = prepare_cache(cfg, Dist(), torch.device("cpu"))
    return root, components, cache


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_config_typo_names_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  learning_rate: 1.0e-4\n")
    with pytest.raises(ValueError, match="unknown config key 'train.learning_rate'.*lr"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown config key 'data.num_frame'"):
        load_config(None, ["data.num_frame=8"])
    with pytest.raises(ValueError, match="train.steps must be int"):
        load_config(None, ["train.steps=many"])
    cfg = load_config(None, ["train.lr=3e-4", "model.args.num_layers=2", "train.adam_betas=[0.9, 0.95]"])
    assert (
        cfg.train.lr == 3e-4 and cfg.model.args == {"num_layers": 2} and cfg.train.adam_betas == (0.9, 0.95)
    )


def test_synthetic_caption_vocabulary_is_a_data_setting():
    rich = load_config(None, ["data.synthetic_captions=rich", "data.num_samples=3"])
    assert [make_dataset(rich)[i]["caption"] for i in range(3)] == [
        SyntheticShapes(3, captions="rich")[i]["caption"] for i in range(3)]
    assert load_config(None).data.synthetic_captions == "basic"  # the shipped model's recipe
    with pytest.raises(ValueError, match="data.synthetic_captions='fancy' is not allowed; use one of basic, rich"):
        load_config(None, ["data.synthetic_captions=fancy"])


def test_lr_schedule():
    cfg = load_config(
        None, ["train.lr=1.0", "train.warmup_steps=4", "train.steps=14", "train.lr_schedule=cosine"]
    )
    lrs = [lr_at(s, cfg.train) for s in range(14)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[9] == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.0245, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))


def test_cache_contents(setup):
    _, components, cache = setup
    assert len(cache) == 8 and cache.meta["latent_shape"] == [4, 4, 8, 8] and cache.meta["text_dim"] == 32
    assert [shard["size"] for shard in cache.meta["shards"]] == [4, 4]
    item = cache[5]  # in the second shard: clip 5 of the data set, encoded by the VAE
    mean, std = encode_posterior(load_vae(components / "vae"), SyntheticShapes(8, 4, 64)[5]["video"][None])
    torch.testing.assert_close(item["mean"], mean[0])
    torch.testing.assert_close(item["std"], std[0])
    assert item["mean"].shape == (4, 4, 8, 8) and (item["std"] > 0).all()
    text = cache.text(item["caption"])
    assert text.ndim == 2 and 1 < len(text) < 120  # real tokens only
    assert cache.null_text(len(text)).shape == text.shape  # "" cut to the caption's length
    assert len(cache.text(0)) == 120  # the empty prompt is kept whole


def test_tiny_model_overfits(setup, tmp_path):
    """Two clips, no caption dropout: the model learns more than the data's marginal statistics.

    Threshold: on fixed draws at t = 100, 200, 300 (where the data still dominates x_t), the trained model's
    epsilon MSE must be below 0.9 x that of the best denoiser that knows only each latent channel's mean and
    variance (the Gaussian/Wiener predictor, fitted on the same two clips). Beating it needs the clips'
    spatial/temporal structure. Measured: model about 0.49 vs baseline 0.63 (ratio ~0.77). The training loss
    must also halve from the first logging window (zero-initialised output: MSE ~ 1) to the last.
    """
    root, components, _ = setup
    cfg = tiny_config(
        tmp_path / "overfit",
        components,
        root / "cache-2clips",
        data={"num_samples": 2},
        train={"steps": 50, "batch_size": 8, "cfg_dropout": 0.0, "lr": 5e-3, "ema_decay": 0.0},
        log={"log_every": 10, "ckpt_every": 50},
    )
    train(cfg)
    losses = [m["mse"] for m in _metrics(cfg.run_dir)]
    assert losses[-1] < 0.5 * losses[0], losses

    cache = LatentCache(root / "cache-2clips")
    model = build_model(cfg, cache.meta["latent_shape"], cache.meta["text_dim"]).eval()
    model.load_state_dict(torch.load(ckpt.checkpoint_path(cfg.run_dir, 50), weights_only=True)["model"])
    items = [cache[i] for i in range(2)]
    t = torch.tensor([100, 200, 300]).repeat(2)
    x0 = torch.stack([it["mean"] for it in items]).repeat_interleave(3, dim=0)  # (6, 4, F, h, w)
    text, mask = (
        x.repeat_interleave(3, dim=0) for x in pad_text([cache.text(it["caption"]) for it in items])
    )
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(123))
    diffusion = GaussianDiffusion(linear_betas())
    x_t = diffusion.q_sample(x0, t, noise)
    with torch.no_grad():
        eps = model(x_t, t, text, mask).sample[:, :4]
    mean, var = x0.mean(dim=(0, 2, 3, 4), keepdim=True), x0.var(dim=(0, 2, 3, 4), keepdim=True)
    abar = diffusion.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
    wiener = (
        (1 - abar).sqrt() * (x_t - abar.sqrt() * mean) / (abar * var + 1 - abar)
    )  # E[eps | x_t], Gaussian data
    model_mse, baseline_mse = ((eps - noise) ** 2).mean(), ((wiener - noise) ** 2).mean()
    assert model_mse < 0.9 * baseline_mse, (model_mse, baseline_mse)


def test_resume_is_exact(setup, tmp_path, monkeypatch):
    """6 steps straight == 3 steps, a crash right after the checkpoint, resume, 3 more: identical weights,
    EMA, optimizer state and logged losses (cosine schedule, accumulation and caption dropout included).
    The resumed run builds its batches in two DataLoader workers: that must change nothing either."""
    root, components, _ = setup
    sections = dict(
        train={"steps": 6, "grad_accum": 2, "lr_schedule": "cosine", "warmup_steps": 2},
        log={"log_every": 1, "ckpt_every": 3, "keep_last": 5},
    )
    straight = tiny_config(tmp_path / "straight", components, root / "cache", **sections)
    train(straight)

    resumed = tiny_config(tmp_path / "resumed", components, root / "cache", data={"num_workers": 2}, **sections)
    train_killed_after_checkpoint(resumed, 3, monkeypatch)
    assert [p.name for p in ckpt.list_checkpoints(resumed.run_dir)] == ["step-00000003.pt"]
    train(resumed)

    a, b = (torch.load(ckpt.checkpoint_path(c.run_dir, 6), weights_only=True) for c in (straight, resumed))
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
    assert [m["loss"] for m in _metrics(straight.run_dir)] == [m["loss"] for m in _metrics(resumed.run_dir)]
    assert [m["step"] for m in _metrics(resumed.run_dir)] == [1, 2, 3, 4, 5, 6]


def test_keep_last_and_export(setup, tmp_path):
    root, components, _ = setup
    cfg = tiny_config(
        tmp_path / "run",
        components,
        root / "cache",
        train={"steps": 4, "prediction_type": "v_prediction"},
        log={
            "ckpt_every": 1,
            "keep_last": 2,
            "sample_every": 4,
            "sample_steps": 2,
            "sample_prompts": ["a red circle moves left", "a blue square"],
        },
    )
    train(cfg)
    samples = sorted(p.name for p in (cfg.run_dir / "samples").iterdir())
    assert samples == ["step-00000004-0.gif", "step-00000004-1.gif"]
    assert [p.name for p in ckpt.list_checkpoints(cfg.run_dir)] == ["step-00000003.pt", "step-00000004.pt"]
    assert (cfg.run_dir / "config.yaml").is_file() and load_config(cfg.run_dir / "config.yaml") == cfg

    out = export_run(cfg.run_dir, tmp_path / "model")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "LattePipeline" and index["transformer"][1] == "LatteTransformer3DModel"
    from latte.pipelines import LattePipeline

    pipe = LattePipeline.from_pretrained(out)
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # the sampler reads v, as trained
    ema = torch.load(ckpt.checkpoint_path(cfg.run_dir, 4), weights_only=True)["ema"]
    for name, tensor in pipe.transformer.state_dict().items():
        assert torch.equal(tensor, ema[name])
    video = pipe(
        "a red circle moves left",
        num_inference_steps=2,
        video_length=4,
        height=64,
        width=64,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert video.shape == (1, 4, 3, 64, 64) and torch.isfinite(video).all()


def test_cache_mismatch_and_missing_checkpoints(setup, tmp_path):
    root, components, _ = setup
    cfg = tiny_config(tmp_path / "run", components, root / "cache", data={"num_frames": 8})
    with pytest.raises(ValueError, match="num_frames"):
        prepare_cache(cfg, Dist(), torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="no readable checkpoints"):
        export_run(tmp_path / "empty", tmp_path / "out")
    assert isinstance(LatentCache(root / "cache"), LatentCache)


def test_fine_tune_from_an_exported_model(setup, tmp_path):
    """model.pretrained starts from trained weights (a pipeline folder's transformer/); sizes must fit."""
    root, components, cache = setup
    base = tiny_config(tmp_path / "base", components, root / "cache", train={"steps": 2})
    train(base)
    exported = export_run(base.run_dir, tmp_path / "model")
    tuned = tiny_config(
        tmp_path / "tuned",
        components,
        root / "cache",
        model={"args": {}, "pretrained": str(exported)},
        train={"steps": 2},
    )
    ema = torch.load(ckpt.checkpoint_path(base.run_dir, 2), weights_only=True)["ema"]
    start = build_model(tuned, cache.meta["latent_shape"], cache.meta["text_dim"])
    assert all(torch.equal(v, ema[k]) for k, v in start.state_dict().items())
    assert all(p.requires_grad for p in start.parameters())
    assert train(tuned)["step"] == 2
    with pytest.raises(ValueError, match="caption_channels=32, the data 16"):
        build_model(tuned, cache.meta["latent_shape"], 16)
    with pytest.raises(ValueError, match="leave model.args and model.name empty"):
        tiny_config(tmp_path / "x", components, root / "cache", model={"pretrained": str(exported)})


def test_cli_train_and_export(setup, tmp_path, capsys):
    from latte.cli.main import main
    from latte.training.config import save_config

    root, components, _ = setup
    cfg = tiny_config(tmp_path / "run", components, root / "cache", export_dir=str(tmp_path / "auto"))
    path = save_config(cfg, tmp_path / "run.yaml")
    assert main(["train", str(path), "train.stepz=2"]) == 2
    assert "unknown config key 'train.stepz'" in capsys.readouterr().err
    assert main(["train", str(path), "train.steps=1"]) == 0
    assert "step 1: loss" in capsys.readouterr().out
    assert (tmp_path / "auto" / "model_index.json").is_file()  # export_dir: exported at the end
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / "transformer" / "config.json").is_file()


def test_checkpointing_and_bf16_options(setup, tmp_path):
    """Activation checkpointing changes nothing; bf16 autocast gives the fp32 loss up to bf16 rounding."""
    root, components, _ = setup

    def run(name, **train_settings):
        cfg = tiny_config(tmp_path / name, components, root / "cache", train={"steps": 2, **train_settings})
        train(cfg)
        return torch.tensor([m["loss"] for m in _metrics(cfg.run_dir)])

    plain = run("plain")
    torch.testing.assert_close(run("checkpointed", gradient_checkpointing=True), plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(run("bf16", precision="bf16")[0], plain[0], rtol=2e-2, atol=0)
