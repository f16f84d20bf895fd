"""LoRA: adapters on our transformer and diffusers' (peft's format), the pipeline methods, `latte train` with
`train.lora` (frozen base, adapter-only EMA, exact resume), `latte export --lora` and `latte generate --lora`."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import LattePipeline as DiffusersLattePipeline
from diffusers import LatteTransformer3DModel

from latte import LatteT2VConfig, LatteT2VTransformer
from latte.models import lora
from latte.outputs import MARKER
from latte.training import checkpoint as ckpt
from latte.training.config import load_config
from latte.training.export import export_run
from latte.training.model import build_model
from latte.training.train import Dist, prepare_cache, train
from training_support import make_components, tiny_config, train_killed_after_checkpoint

TOL = 1e-5  # max abs difference relative to the output's max abs value, fp32
# conftest's KWARGS (depth 2, width 64), for the module-scoped adapter
KWARGS = dict(
    num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8, num_layers=2,
    cross_attention_dim=64, attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    caption_channels=32,
)


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 16, 8, 8, generator=g), torch.tensor([500]), torch.randn(1, 7, 32, generator=g)


def _run(model, inputs):
    with torch.no_grad():
        return model(*inputs).sample


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A random base (its state dict) and a random rank-4 adapter on it, saved in peft's format."""
    torch.manual_seed(0)
    model = LatteT2VTransformer(LatteT2VConfig(**KWARGS)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    config = lora.lora_config(4, alpha=8)
    lora.add_adapter(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("adapter") / "shapes"
    folder.mkdir()
    lora.save_adapter(folder, config, lora.adapter_state_dict(model))
    return base, folder, _run(model, _inputs())


def _ours(kwargs, base):
    model = LatteT2VTransformer(LatteT2VConfig(**kwargs)).eval()
    model.load_state_dict(base)
    return model


def test_adapter_is_peft_format_and_loads_on_diffusers(adapter):
    """The folder holds peft's files and keys; PeftModel on diffusers' model gives our adapted output."""
    from peft import PeftModel
    from safetensors.torch import load_file

    base, folder, expected = adapter
    assert sorted(p.name for p in folder.iterdir()) == [lora.CONFIG_NAME, lora.WEIGHTS_NAME]
    keys = load_file(folder / lora.WEIGHTS_NAME)
    # 2 layers x (spatial attn1 + attn2, temporal attn1) x 4 projections x (A, B)
    assert len(keys) == 2 * 3 * 4 * 2
    assert "base_model.model.temporal_transformer_blocks.1.attn1.to_out.0.lora_B.weight" in keys
    theirs = LatteTransformer3DModel(**KWARGS).eval()
    theirs.load_state_dict(base)
    theirs = PeftModel.from_pretrained(theirs, str(folder)).eval()
    got = _run(lambda *a: theirs(a[0], timestep=a[1], encoder_hidden_states=a[2]), _inputs())
    assert _rel(got, expected) <= TOL
    assert _rel(_run(_ours(KWARGS, base), _inputs()), expected) > 1e-2  # the adapter does something


def test_adapter_weights_of_a_pipeline_folder_base_warn_of_nothing(tmp_path, recwarn, monkeypatch):
    """A run's base is a pipeline folder (no config.json at its top): reading the adapter neither warns nor asks
    the hub about it."""
    import peft.utils.save_and_load as peft_save

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", lambda *a, **k: pytest.fail("asked the hub"))
    model = LatteT2VTransformer(LatteT2VConfig(**KWARGS))
    lora.add_adapter(model, lora.lora_config(2, base=tmp_path))
    weights = lora.adapter_state_dict(model)
    assert weights and all(k.endswith(lora._SUFFIXES) for k in weights)
    assert not [w for w in recwarn if "config file" in str(w.message)]


def test_round_trip_scale_fuse_unload(adapter):
    base, folder, expected = adapter
    model = _ours(KWARGS, base)
    plain = _run(model, _inputs())
    lora.load_adapter(model, folder, "shapes")
    assert torch.equal(_run(model, _inputs()), expected)  # round trip: the same output
    lora.set_adapters(model, ["shapes"], [0.0])
    assert torch.equal(_run(model, _inputs()), plain)  # scale 0 is the base model exactly
    lora.set_adapters(model, ["shapes"], [1.0])
    lora.fuse(model)
    assert _rel(_run(model, _inputs()), expected) <= TOL
    with pytest.raises(ValueError, match="unfuse_lora"):
        lora.set_adapters(model, ["shapes"], [0.5])
    lora.unfuse(model)
    lora.unload(model)
    assert set(model.state_dict()) == set(base) and _rel(_run(model, _inputs()), plain) <= TOL
    model = _ours(KWARGS, base)
    lora.load_adapter(model, folder)
    lora.unload(model)  # never fused: the base comes back bit for bit
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())


def test_scrambled_control_adapter_keeps_each_updates_size_not_its_direction(adapter, tmp_path, capsys):
    """scripts/scramble_lora.py: every layer's B @ A keeps its singular values, points elsewhere, and loads."""
    import importlib.util

    from safetensors.torch import load_file

    path = Path(__file__).resolve().parent.parent / "scripts" / "scramble_lora.py"
    spec = importlib.util.spec_from_file_location("scramble_lora", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    base, folder, expected = adapter
    assert script.main([str(folder), "-o", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert script.main([str(folder), "-o", str(tmp_path / "c2"), "--seed", "1"]) == 0
    assert (tmp_path / "c" / lora.WEIGHTS_NAME).read_bytes() == (tmp_path / "c2" / lora.WEIGHTS_NAME).read_bytes()
    trained, scrambled = (load_file(f / lora.WEIGHTS_NAME) for f in (folder, tmp_path / "c"))
    a_keys = [k for k in trained if k.endswith("lora_A.weight")]
    assert a_keys and sorted(scrambled) == sorted(trained)
    for key in a_keys:
        b_key = key.replace("lora_A", "lora_B")
        before, after = trained[b_key] @ trained[key], scrambled[b_key] @ scrambled[key]
        assert torch.allclose(torch.linalg.svdvals(after), torch.linalg.svdvals(before), rtol=1e-4, atol=1e-6)
        assert not torch.allclose(after, before)
    model = _ours(KWARGS, base)
    lora.load_adapter(model, tmp_path / "c")
    assert not torch.allclose(_run(model, _inputs()), expected)
    assert script.main([str(tmp_path / "missing"), "-o", str(tmp_path / "d")]) == 2
    assert "adapter_config.json and adapter_model.safetensors missing" in capsys.readouterr().err


def test_adapters_that_do_not_fit(adapter, tmp_path):
    base, folder, _ = adapter
    deeper = LatteT2VTransformer(LatteT2VConfig(**{**KWARGS, "num_layers": 3}))
    with pytest.raises(ValueError, match=r"does not fit .* 12 modules it has no weights for .*blocks\.2\."):
        lora.load_adapter(deeper, folder)
    shallower = LatteT2VTransformer(LatteT2VConfig(**{**KWARGS, "num_layers": 1}))
    with pytest.raises(ValueError, match=r"weights for 12 modules that the model lacks"):
        lora.load_adapter(shallower, folder)
    # The config says rank 8, the weights are rank 4.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / lora.WEIGHTS_NAME).write_bytes((folder / lora.WEIGHTS_NAME).read_bytes())
    config = json.loads((folder / lora.CONFIG_NAME).read_text())
    (wrong / lora.CONFIG_NAME).write_text(json.dumps({**config, "r": 8}))
    model = _ours(KWARGS, base)
    with pytest.raises(ValueError, match=r"lora_A.weight has shape \(4, 64\), .* rank r=8 need \(8, 64\)"):
        lora.load_adapter(model, wrong)
    assert not lora.lora_layers(model)  # checked before anything changed
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder: it lacks adapter_config.json"):
        lora.load_adapter(model, tmp_path)
    lora.load_adapter(model, folder, "a")
    with pytest.raises(ValueError, match="'a' is already loaded"):
        lora.load_adapter(model, folder, "a")
    with pytest.raises(ValueError, match="no adapter named 'b' is loaded; loaded: a"):
        lora.set_adapters(model, ["b"], None)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny components, their latent cache, and a pretrained tiny transformer folder to adapt."""
    root = tmp_path_factory.mktemp("lora-train")
    components = make_components(root / "components")
    cfg = tiny_config(root / "first", components, root / "cache")
    cache = prepare_cache(cfg, Dist(), torch.device("cpu"))
    torch.manual_seed(0)
    pretrained = build_model(cfg, cache.meta["latent_shape"], cache.meta["text_dim"]).eval()
    with torch.no_grad():  # trained-looking weights: no zero-initialised output layer
        for p in pretrained.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    pretrained.save_pretrained(root / "pretrained")
    return root, components, root / "pretrained"


def _lora_config(root, components, pretrained, run_dir, export_dir=None, **train_settings):
    return tiny_config(
        run_dir,
        components,
        root / "cache",
        model={"args": {}, "pretrained": str(pretrained)},
        train={"steps": 4, "lora": {"rank": 4, "alpha": 8}, **train_settings},
        export_dir=export_dir and str(export_dir),
    )


def test_lora_config_errors(setup, tmp_path):
    root, components, pretrained = setup
    with pytest.raises(ValueError, match="train.lora adapts a pretrained text-to-video model"):
        tiny_config(tmp_path, components, root / "cache", train={"lora": {"rank": 4}})
    with pytest.raises(ValueError, match=r"train.lora.dropout=1.5 is not allowed; it must be in \[0, 1\)"):
        _lora_config(root, components, pretrained, tmp_path, lora={"rank": 4, "dropout": 1.5})
    cfg = _lora_config(root, components, pretrained, tmp_path / "run", lora={"rank": 4, "targets": ["to_qq"]})
    with pytest.raises(ValueError, match="LoRA target 'to_qq' names no module of LatteT2VTransformer"):
        train(cfg)


def test_lora_resume_is_exact_with_bf16_and_checkpointing(setup, tmp_path, monkeypatch):
    """4 steps straight == 2 steps, a crash, resume, 2 more (bf16 autocast, gradient checkpointing): identical
    adapter, EMA, optimizer state and losses. Checkpoints hold only the adapter; the base stays frozen."""
    root, components, pretrained = setup
    settings = dict(precision="bf16", gradient_checkpointing=True)
    straight = _lora_config(root, components, pretrained, tmp_path / "straight", **settings)
    train(straight)
    resumed = _lora_config(root, components, pretrained, tmp_path / "resumed", **settings)
    train_killed_after_checkpoint(resumed, 2, monkeypatch)
    train(resumed)

    a, b = (torch.load(ckpt.checkpoint_path(c.run_dir, 4), weights_only=True) for c in (straight, resumed))
    # 1 layer x 3 attentions x 4 projections x (A, B), nothing else
    assert len(a["model"]) == 24 and all(".lora_" in k for k in a["model"]) and a["ema"].keys() == a["model"].keys()
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
    assert any(k.endswith("lora_B.default.weight") and v.abs().max() > 0 for k, v in a["model"].items())
    assert not torch.equal(a["ema"]["transformer_blocks.0.attn1.to_q.lora_B.default.weight"],
                           a["model"]["transformer_blocks.0.attn1.to_q.lora_B.default.weight"])


def test_export_lora_and_generate(setup, tmp_path, capsys):
    """`latte export --lora` writes the EMA adapter; loaded on the pipeline it gives what the fused model folder
    (plain `latte export`) gives; `latte generate --lora` uses it; --lora on a full run is an error."""
    from latte.cli.main import main
    from latte.pipelines import LattePipeline

    root, components, pretrained = setup
    cfg = _lora_config(root, components, pretrained, tmp_path / "run", steps=2, lr=3e-2)
    train(cfg)
    assert main(["export", str(cfg.run_dir), "-o", str(tmp_path / "adapter"), "--lora"]) == 0
    config = json.loads((tmp_path / "adapter" / lora.CONFIG_NAME).read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["base_model_name_or_path"] == str(pretrained)
    fused = export_run(cfg.run_dir, tmp_path / "fused")

    def video(pipe):
        return pipe("a red circle", num_inference_steps=2, video_length=2, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).frames

    pipe = LattePipeline.from_pretrained(fused)
    expected = video(pipe)
    pipe.transformer.load_state_dict(LatteT2VTransformer.from_pretrained(pretrained).state_dict())
    base = video(pipe)
    pipe.load_lora_weights(tmp_path / "adapter", scale=1.0)
    assert (video(pipe) - expected).abs().max() < 1e-4 < (base - expected).abs().max()
    pipe.set_adapters("adapter", 0.0)
    assert torch.equal(video(pipe), base)
    pipe.set_adapters("adapter", 1.0)
    pipe.fuse_lora()
    assert (video(pipe) - expected).abs().max() < 1e-4
    pipe.unload_lora_weights()  # fused adapters stay in the weights
    assert not lora.lora_layers(pipe.transformer) and (video(pipe) - expected).abs().max() < 1e-4

    out = tmp_path / "v.gif"
    argv = ["generate", "a red circle", "-o", str(out), "--model", str(fused), "--steps", "1", "--frames", "2"]
    assert main([*argv, "--lora", f"{tmp_path / 'adapter'}:0.5", "--lora", str(tmp_path / "adapter")]) == 0
    assert out.is_file()
    assert main([*argv, "--lora", str(tmp_path / "nowhere")]) == 2
    assert "is not a LoRA adapter folder" in capsys.readouterr().err
    full = tiny_config(tmp_path / "full", components, root / "cache", train={"steps": 1})
    train(full)
    assert main(["export", str(full.run_dir), "-o", str(tmp_path / "x"), "--lora"]) == 2
    assert "from a full fine-tuning run" in capsys.readouterr().err


def _ranks_worker(rank, world, port, configs, report):
    """One of `world` torchrun-like processes training each of `configs` in turn; saves the adapter it holds
    at its last checkpoint (every rank takes part in gathering it) to report/<run name>-<rank>.pt."""
    import torch.distributed as dist

    from latte.training import train as trainer
    from training_support import join_as_rank

    join_as_rank(rank, world, port)
    gathered = trainer._state_dict
    held = []

    def recording(module, names=None):  # the trained model, not the (eval-mode) EMA, which rank 0 alone saves
        weights = gathered(module, names)
        if module.training:
            held.append(weights)
        return weights

    trainer._state_dict = recording
    try:
        for cfg in configs:
            trainer.train(cfg)
            torch.save(held[-1], report / f"{cfg.run_dir.name}-{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_fused_export_keeps_the_pretrained_folders_generation_defaults(setup, tmp_path):
    """A model fine-tuned from a pipeline folder samples with that folder's defaults (steps, guidance), not the
    pipeline's built-in 50 steps and guidance 7.5."""
    root, components, pretrained = setup
    folder = tmp_path / "pretrained-pipeline"
    shutil.copytree(pretrained, folder / "transformer")
    defaults = {"steps": 7, "guidance": 3.0}
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LattePipeline",
                                                          "_generate_defaults": defaults}))
    cfg = _lora_config(root, components, folder, tmp_path / "run", steps=1)
    train(cfg)
    fused = export_run(cfg.run_dir, tmp_path / "fused")
    assert json.loads((fused / "model_index.json").read_text())["_generate_defaults"] == defaults
    # from a bare transformer folder (no model_index.json) the export has none
    cfg = _lora_config(root, components, pretrained, tmp_path / "run-bare", steps=1)
    train(cfg)
    bare = export_run(cfg.run_dir, tmp_path / "bare")
    assert "_generate_defaults" not in json.loads((bare / "model_index.json").read_text())


def test_lora_under_ddp_and_fsdp(setup, tmp_path):
    """Two gloo processes (DDP, then FSDP) train the adapter a single process trains with the same global batch;
    every rank holds the same adapter, and the run saves one adapter-only checkpoint and one exported adapter."""
    import torch.multiprocessing as mp

    from training_support import free_port

    root, components, pretrained = setup
    settings = dict(steps=2, batch_size=4, lr=3e-2, gradient_checkpointing=True)
    single = _lora_config(root, components, pretrained, tmp_path / "single", **settings)
    train(single)
    configs = [_lora_config(root, components, pretrained, tmp_path / parallel, tmp_path / f"{parallel}-adapter",
                            parallel=parallel, **settings) for parallel in ("ddp", "fsdp")]
    mp.spawn(_ranks_worker, args=(2, free_port(), configs, tmp_path), nprocs=2, join=True)

    one = torch.load(ckpt.checkpoint_path(single.run_dir, 2), weights_only=True)
    assert all(v.abs().max() > 0 for k, v in one["model"].items() if "lora_B" in k)  # trained away from zero
    for cfg in configs:
        name = cfg.run_dir.name
        ranks = [torch.load(tmp_path / f"{name}-{rank}.pt", weights_only=True) for rank in range(2)]
        assert ranks[0].keys() == ranks[1].keys() == one["model"].keys()
        for key, tensor in ranks[0].items():
            assert torch.equal(ranks[1][key], tensor), f"{name}: {key} differs between the ranks"
        saved = torch.load(ckpt.checkpoint_path(cfg.run_dir, 2), weights_only=True)
        assert sorted(p.name for p in (cfg.run_dir / ckpt.CHECKPOINT_DIR).iterdir()) == ["step-00000002.pt"]
        for key in ("model", "ema"):
            assert saved[key].keys() == one[key].keys() and all(".lora_" in k for k in saved[key])
            for k, tensor in one[key].items():
                torch.testing.assert_close(saved[key][k], tensor, rtol=1e-4, atol=1e-5, msg=f"{name} {key} {k}")
        for k, tensor in ranks[0].items():
            assert torch.equal(saved["model"][k], tensor)
        adapter = tmp_path / f"{name}-adapter"
        assert sorted(p.name for p in adapter.iterdir()) == sorted([lora.CONFIG_NAME, lora.WEIGHTS_NAME, MARKER])


def test_concept_config_trains_an_adapter(setup, tmp_path):
    """configs/lora-shapes.yaml parses; two steps of it (its split, LoRA rank and targets) on the tiny model
    export an adapter."""
    root, components, pretrained = setup
    path = Path(__file__).parents[1] / "configs" / "lora-shapes.yaml"
    shipped = load_config(path)
    assert shipped.data.split == "shrink+train" and shipped.train.lora.rank <= 16 and shipped.export_dir
    cfg = load_config(path, [
        f"output_dir={tmp_path / 'run'}", f"components={components}", f"model.pretrained={pretrained}",
        f"export_dir={tmp_path / 'adapter'}", f"data.cache_dir={tmp_path / 'cache'}", "data.num_samples=4",
        "data.num_frames=4", "data.shard_size=4", "train.steps=2", "train.warmup_steps=1", "log.ckpt_every=2",
    ])
    train(cfg)
    config = json.loads((tmp_path / "adapter" / lora.CONFIG_NAME).read_text())
    assert config["r"] == shipped.train.lora.rank and set(config["target_modules"]) == set(shipped.train.lora.targets)


def test_new_words_train_export_load_and_unload(setup, tmp_path, capsys):
    """`train.lora.new_words`: each word gets a piece of its own and a seeded text-encoder row, which the
    adapter export carries and the fused export builds in. Loaded on the base pipeline the adapter gives the
    fused folder's video; unloading it gives the base back bit for bit, words included; a word with another row
    is refused before anything changes."""
    from safetensors.torch import save_file
    from transformers import T5EncoderModel, T5Tokenizer

    from latte.cli.main import main
    from latte.pipelines import LattePipeline

    root, components, pretrained = setup
    words = ["shrinking", "zorble"]
    cfg = tiny_config(
        tmp_path / "run", components, tmp_path / "cache", model={"args": {}, "pretrained": str(pretrained)},
        data={"split": "shrink+train"},
        train={"steps": 2, "lr": 3e-2, "lora": {"rank": 4, "alpha": 8, "new_words": words}},
    )
    train(cfg)
    assert main(["export", str(cfg.run_dir), "-o", str(tmp_path / "adapter"), "--lora"]) == 0
    rows = lora.read_words(tmp_path / "adapter")
    base_table = T5EncoderModel.from_pretrained(components / "text_encoder").get_input_embeddings().weight
    width = base_table.shape[1]
    assert list(rows) == words and all(r.shape == (width,) for r in rows.values())
    fused = export_run(cfg.run_dir, tmp_path / "fused")
    tokenizer = T5Tokenizer.from_pretrained(fused / "tokenizer")
    assert tokenizer.tokenize("a red circle shrinking")[-1] == "\u2581shrinking"
    table = T5EncoderModel.from_pretrained(fused / "text_encoder").get_input_embeddings().weight
    assert torch.equal(table[tokenizer.convert_tokens_to_ids("\u2581zorble")], rows["zorble"])
    assert torch.equal(table[: len(base_table)], base_table)

    prompt = "a red circle shrinking"

    def video(pipe):
        return pipe(prompt, num_inference_steps=2, video_length=2, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).frames

    fused_pipe = LattePipeline.from_pretrained(fused)
    expected = video(fused_pipe)
    # diffusers' pipeline loads the fused folder's tokenizer and text encoder with the words in them.
    theirs = DiffusersLattePipeline.from_pretrained(fused)
    assert theirs.tokenizer.tokenize(prompt) == fused_pipe.tokenizer.tokenize(prompt)
    embeds = theirs.encode_prompt(prompt, do_classifier_free_guidance=False, clean_caption=False)[0]
    ours_embeds = fused_pipe.encode_prompt(prompt, do_classifier_free_guidance=False)[0]
    assert embeds.shape == ours_embeds.shape and (embeds - ours_embeds).abs().max() < 1e-6  # fp32 rounding
    parts = LattePipeline.from_pretrained(components).components
    pipe = LattePipeline(**{**parts, "transformer": LatteT2VTransformer.from_pretrained(pretrained)})
    base, spelled = video(pipe), pipe.tokenizer.tokenize(prompt)
    assert "\u2581shrinking" not in spelled
    pipe.load_lora_weights(tmp_path / "adapter")
    assert (video(pipe) - expected).abs().max() < 1e-4 < (base - expected).abs().max()
    pipe.load_lora_weights(tmp_path / "adapter", adapter_name="again")  # the same words and rows: accepted
    assert len(pipe.tokenizer) == len(tokenizer)

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "adapter", other)
    save_file({w: r + 1 for w, r in rows.items()}, str(other / lora.WORDS_NAME))
    with pytest.raises(ValueError, match="already has the word 'shrinking' with another embedding row"):
        pipe.load_lora_weights(other, adapter_name="other")
    assert set(pipe.transformer.peft_config) == {"adapter", "again"}  # nothing changed

    pipe.unload_lora_weights()
    assert pipe.tokenizer.tokenize(prompt) == spelled and torch.equal(video(pipe), base)

    cfg = tiny_config(tmp_path / "bad", components, tmp_path / "cache2",
                      model={"args": {}, "pretrained": str(pretrained)},
                      train={"lora": {"rank": 4, "new_words": ["Big Words"]}})
    with pytest.raises(ValueError, match="new word 'Big Words' must be one lower-case word without spaces"):
        train(cfg)
    with pytest.raises(ValueError, match=r"train.lora.new_words needs a LoRA run"):
        tiny_config(tmp_path / "bad", components, tmp_path / "cache2", train={"lora": {"new_words": ["zorble"]}})


def test_new_words_take_the_spare_rows_of_a_larger_table_and_give_them_back(setup):
    """T5-XXL's embedding table has rows past its tokenizer's pieces: new words use those before the table grows,
    and unloading restores them."""
    from latte.models.text_encoder import add_words, draw_word_rows, load_text_components

    _, components, _ = setup
    tokenizer, encoder = load_text_components(components)
    pieces = len(tokenizer)
    encoder.resize_token_embeddings(pieces + 3, mean_resizing=False)
    before = encoder.get_input_embeddings().weight.detach().clone()
    rows = draw_word_rows(encoder, ["zorble", "quux"])
    assert add_words(tokenizer, encoder, rows) == ["zorble", "quux"]
    after = encoder.get_input_embeddings().weight
    assert after.shape == before.shape and torch.equal(after[:pieces], before[:pieces])
    assert torch.equal(after[pieces + 1], rows["quux"]) and torch.equal(after[pieces + 2], before[pieces + 2])
    assert add_words(tokenizer, encoder, rows) == []  # already there with the same rows
    with pytest.raises(ValueError, match=r"new word 'x' has an embedding row of shape \(3,\)"):
        add_words(tokenizer, encoder, {"x": torch.zeros(3)})
