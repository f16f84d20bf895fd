"""Hub ids, variants, use_safetensors and device_map in from_pretrained, tested offline against a hub cache laid
out in a temporary folder (`models--org--name/snapshots/<rev>/...` with `refs/main`)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from latte import LattePipeline, LatteT2VTransformer
from latte.models import placement
from latte.models.hub import PIPELINE_WEIGHTS, resolve_model_folder, select_patterns
from latte.models.io import WEIGHTS_NAME, load_weights, save_weights
from tiny_components import build_tiny_pipeline_folder

REVISION = "0123456789abcdef0123456789abcdef01234567"


def add_fp16_variant(folder):
    """fp16 copies of every model's weights, named as diffusers/transformers do; the transformer's are sharded
    and hold twice the plain weights, so a test can tell which files were read."""
    for sub, name in (("vae", WEIGHTS_NAME), ("text_encoder", "model.safetensors")):
        state = load_file(str(folder / sub / name))
        save_file({k: v.half() for k, v in state.items()}, str(folder / sub / name.replace(".", ".fp16.", 1)),
                  metadata={"format": "pt"})
    state = load_weights(folder / "transformer")
    save_weights({k: (2 * v).half() for k, v in state.items()}, folder / "transformer", variant="fp16",
                 max_shard_size=sum(v.numel() * 2 for v in state.values()) // 2)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = build_tiny_pipeline_folder(tmp_path_factory.mktemp("tiny") / "model")
    add_fp16_variant(folder)
    return folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_folder):
    """A hub cache holding `org/name` and `maxin-cn/Latte-1` (both the tiny pipeline) at REVISION, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    for repo in ("org/name", "maxin-cn/Latte-1"):
        storage = cache / f"models--{repo.replace('/', '--')}"
        shutil.copytree(tiny_folder, storage / "snapshots" / REVISION)
        (storage / "refs").mkdir()
        (storage / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read by huggingface_hub at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_with_fp16_variant_loads_from_the_cache(hub_cache, tiny_folder):
    pipe = LattePipeline.from_pretrained("org/name", torch_dtype=torch.float16, variant="fp16")
    assert {pipe.transformer.dtype, pipe.text_encoder.dtype, pipe.vae.dtype} == {torch.float16}
    plain = load_weights(tiny_folder / "transformer")
    key = "proj_out.weight"
    assert torch.equal(pipe.transformer.state_dict()[key], (2 * plain[key]).half())  # the sharded fp16 files


def test_latte1_docs_snippet_runs_against_the_cache(hub_cache):
    pipe = LattePipeline.from_pretrained("maxin-cn/Latte-1", torch_dtype=torch.float16).to("cpu")
    video = pipe("a red circle moves left", num_inference_steps=1, video_length=1, height=64, width=64,
                 output_type="pt").frames
    assert video.shape == (1, 1, 3, 64, 64) and video.dtype == torch.float32 and torch.isfinite(video).all()


def test_revision_selects_the_snapshot(hub_cache):
    folder = resolve_model_folder("org/name", PIPELINE_WEIGHTS, revision=REVISION)
    assert folder == hub_cache / "models--org--name" / "snapshots" / REVISION
    with pytest.raises(FileNotFoundError, match="'org/name' \\(revision 'v9'\\) is no local folder"):
        LattePipeline.from_pretrained("org/name", revision="v9")


def test_missing_hub_id_is_one_clear_line(hub_cache):
    with pytest.raises(FileNotFoundError) as err:
        LattePipeline.from_pretrained("org/missing")
    message = str(err.value)
    assert "\n" not in message and "'org/missing' is no local folder" in message
    assert str(hub_cache) in message and "HF_HUB_OFFLINE" in message


def test_missing_local_path_keeps_its_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: .*nope"):
        LattePipeline.from_pretrained(tmp_path / "nope")


def test_missing_variant_names_the_file(hub_cache):
    with pytest.raises(FileNotFoundError, match="expected model.fp8.safetensors or model.safetensors.index.fp8.json"
                       ".*the 'fp8' variant is missing"):
        LattePipeline.from_pretrained("org/name", variant="fp8")


def test_transformer_from_hub_id_with_subfolder_and_variant(hub_cache, tiny_folder):
    model = LatteT2VTransformer.from_pretrained("org/name", subfolder="transformer", variant="fp16")
    assert model.dtype == torch.float16


def test_use_safetensors(tmp_path, tiny_folder):
    folder = tmp_path / "transformer"
    shutil.copytree(tiny_folder / "transformer", folder)
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.bin .*use_safetensors=False asks for .bin"):
        LatteT2VTransformer.from_pretrained(folder, use_safetensors=False)
    state = load_weights(folder)
    (folder / WEIGHTS_NAME).unlink()
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    assert LatteT2VTransformer.from_pretrained(folder, use_safetensors=False).num_parameters() > 0
    assert LatteT2VTransformer.from_pretrained(folder).num_parameters() > 0  # None: .bin when no safetensors
    with pytest.raises(FileNotFoundError, match="use_safetensors=True allows no .bin\\); it holds "
                       "diffusion_pytorch_model.bin"):
        LatteT2VTransformer.from_pretrained(folder, use_safetensors=True)


def test_select_patterns_fetch_only_the_weights_used():
    files = ["model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
             "transformer/diffusion_pytorch_model.bin",
             "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
             "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
             "text_encoder/model.bin"]
    weights = {"transformer": WEIGHTS_NAME, "text_encoder": "model.safetensors"}
    chosen = [p for p in select_patterns(weights, repo_files=files) if "*" not in p]
    assert chosen == ["model_index.json", "transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.bin"]
    fp16 = select_patterns(weights, variant="fp16", repo_files=files)
    assert "transformer/diffusion_pytorch_model.fp16-*-of-*.safetensors" in fp16
    assert not any(p.endswith((".bin", "model.safetensors")) for p in fp16[:-1] if "transformer" in p)
    assert "text_encoder/model.safetensors" in select_patterns(weights, use_safetensors=True, repo_files=files)
    assert not any("diffusion" in p for p in select_patterns(weights))  # offline: no weight patterns


def test_online_resolution_downloads_with_patterns(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    calls = {}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False, raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo_id, **kw: ["model_index.json", "vae/diffusion_pytorch_model.bin",
                                                     "vae/diffusion_pytorch_model.safetensors"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: calls.update(kw) or str(tmp_path))
    assert resolve_model_folder("org/name", {"vae": WEIGHTS_NAME}, revision="main", token="t") == tmp_path
    assert calls["revision"] == "main" and calls["token"] == "t" and calls["local_files_only"] is False
    assert "vae/diffusion_pytorch_model.safetensors" in calls["allow_patterns"]
    assert not any(p.endswith(".bin") for p in calls["allow_patterns"])


def test_device_map(tiny_folder, monkeypatch):
    pipe = LattePipeline.from_pretrained(tiny_folder, device_map="balanced")  # no GPU here: all on the CPU
    assert pipe.device.type == "cpu"
    for bad, message in (("cuda:7", "cuda:7.*CUDA device"), ({"bogus": "cpu"}, "unknown components \\['bogus'\\]"),
                         ("nowhere", "not a device")):
        with pytest.raises(ValueError, match=message):
            LattePipeline.from_pretrained(tiny_folder, device_map=bad)
    with pytest.raises(ValueError, match="does not support max_memory"):  # a diffusers keyword: no TypeError
        LattePipeline.from_pretrained(tiny_folder, max_memory={0: "1GB"})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    spread = placement.component_devices("balanced", {"text_encoder": 9, "transformer": 2, "vae": 1})
    assert spread == {"text_encoder": torch.device("cuda", 0), "transformer": torch.device("cuda", 1),
                      "vae": torch.device("cuda", 1)}


def test_ready_components_are_used(tiny_folder):
    pipe = LattePipeline.from_pretrained(tiny_folder)
    again = LattePipeline.from_pretrained(tiny_folder, transformer=pipe.transformer)
    assert again.transformer is pipe.transformer


def test_model_from_pretrained_takes_the_diffusers_keywords(tiny_folder):
    model = LatteT2VTransformer.from_pretrained(tiny_folder, subfolder="transformer", device_map="auto",
                                                low_cpu_mem_usage=True, local_files_only=True)
    assert model.device.type == "cpu"  # "auto" without a GPU
    with pytest.raises(ValueError, match="LatteT2VTransformer.from_pretrained does not support max_memory"):
        LatteT2VTransformer.from_pretrained(tiny_folder, subfolder="transformer", max_memory={0: "1GB"})
    with pytest.raises(ValueError, match="a single model takes one device"):
        LatteT2VTransformer.from_pretrained(tiny_folder, subfolder="transformer", device_map={"x": "cpu"})


def test_cli_generate_takes_a_hub_id(hub_cache, tmp_path, capsys):
    from latte.cli.main import main

    out = tmp_path / "v.mp4"
    assert main(["generate", "a red circle", "--model", "maxin-cn/Latte-1", "--steps", "1", "--frames", "1",
                 "-o", str(out)]) == 0
    assert out.is_file()
    assert main(["generate", "a red circle", "--model", "org/missing", "-o", str(out)]) == 2
    assert "org/missing" in capsys.readouterr().err
