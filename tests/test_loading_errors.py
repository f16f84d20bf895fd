"""Loading errors are one line naming the file and what is wrong; loading prints no library noise."""

import json
import logging
import os
import shutil

import pytest
import torch

from latte import Latte, LattePipeline, LatteT2VTransformer
from latte.cli.main import main
from latte.models.io import WEIGHTS_NAME, load_torch_checkpoint, load_weights, save_weights
from latte.models.latte import LatteConfig
from tiny_components import build_tiny_pipeline_folder, tiny_transformer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def transformer_folder(tmp_path):
    return tiny_transformer().save_pretrained(tmp_path / "transformer")


def _edit_config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("num_layers", "four", "must be an integer"),
    ("num_layers", [4], "must be an integer"),
    ("num_layers", True, "must be an integer"),
    ("num_layers", 2.5, "must be an integer"),
    ("sample_size", -8, "must be an integer >= 0"),
    ("out_channels", "8", "must be an integer"),
    ("norm_eps", "small", "must be a number"),
    ("attention_bias", 1, "must be true or false"),
    ("activation_fn", 3, "must be a string"),
])
def test_wrong_typed_config_values_name_key_value_and_file(transformer_folder, key, value, reason):
    path = _edit_config(transformer_folder, **{key: value})
    with pytest.raises(ValueError) as err:
        LatteT2VTransformer.from_pretrained(transformer_folder)
    assert str(err.value) == f"{path}: Latte transformer config key {key!r} is {value!r}; it {reason}"


def test_config_checks_keep_none_and_name_the_file_for_range_errors(transformer_folder):
    path = _edit_config(transformer_folder, out_channels=None, num_layers=0)
    with pytest.raises(ValueError, match=f"^{path}: patch_size, num_layers.* must be >= 1$"):
        LatteT2VTransformer.from_pretrained(transformer_folder)


def test_class_model_config_is_checked_too(tmp_path):
    folder = Latte(LatteConfig(input_size=4, hidden_size=32, depth=2, num_heads=2, num_frames=2)).save_pretrained(
        tmp_path / "latte")
    path = _edit_config(folder, depth="two")
    with pytest.raises(ValueError, match=f"^{path}: Latte config key 'depth' is 'two'; it must be an integer$"):
        Latte.from_pretrained(folder)


class _RunsCode:
    """A pickled object whose loading would run code (here: create a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_refused_pickle_says_it_holds_code(tmp_path, transformer_folder):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"ema": {"w": torch.ones(1)}, "x": _RunsCode(marker)}, evil)
    with pytest.raises(ValueError) as err:
        load_torch_checkpoint(evil)
    assert str(err.value) == (f"{evil} contains Python code (a pickled object other than tensors) and was refused; "
                              "only weights are loaded")
    state = load_weights(transformer_folder)
    (transformer_folder / WEIGHTS_NAME).unlink()
    torch.save({**state, "extra": _RunsCode(marker)}, transformer_folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="diffusion_pytorch_model.bin contains Python code .* was refused"):
        LatteT2VTransformer.from_pretrained(transformer_folder)
    assert not marker.exists()


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_index_pointing_outside_its_folder_is_refused(tmp_path, shard):
    folder = tmp_path / "model"
    folder.mkdir()
    save_weights({"a": torch.ones(4), "b": torch.ones(4)}, folder, max_shard_size=16)
    index_path = folder / (WEIGHTS_NAME + ".index.json")
    index = json.loads(index_path.read_text())
    index["weight_map"]["b"] = shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"lists the shard '{shard}' outside its folder"):
        load_weights(folder)


def test_latte_info_shows_the_text_encoder_class_and_reports_corrupt_weights_in_one_line(
        tiny_folder, tmp_path, capsys):
    assert main(["info", str(tiny_folder)]) == 0
    text_encoder_line = next(line for line in capsys.readouterr().out.splitlines() if "text_encoder" in line)
    assert "T5EncoderModel" in text_encoder_line
    copy = shutil.copytree(tiny_folder, tmp_path / "copy")
    (copy / "transformer" / WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    assert main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("latte info: error: corrupt or unreadable weights file ")
    assert str(copy / "transformer" / WEIGHTS_NAME) in err


NOISE = ("accelerate", "should be kept in float32", "Loading weights", "Traceback")


@pytest.fixture
def library_messages():
    """What diffusers and transformers log (their loggers do not propagate, and their handlers keep the
    stderr of their first use, so capturing stderr alone would miss it)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    libraries = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for library in libraries:
        library.addHandler(handler)
    yield lambda: [r.getMessage() for r in records]
    for library in libraries:
        library.removeHandler(handler)


def _noise(text: str) -> list[str]:
    return [word for word in NOISE if word in text]


def test_loading_and_casting_print_no_library_noise(tiny_folder, capfd, library_messages):
    pipe = LattePipeline.from_pretrained(tiny_folder, torch_dtype=torch.float16)
    pipe.to(torch.bfloat16)
    out, err = capfd.readouterr()
    assert not _noise(out + err + "\n".join(library_messages())), (out, err, library_messages())


def test_generate_prints_no_library_noise(tiny_folder, tmp_path, capfd, library_messages):
    argv = ["generate", "a red circle moves left", "-o", str(tmp_path / "v.gif"), "--model", str(tiny_folder),
            "--steps", "1", "--frames", "1"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert not _noise(out + err + "\n".join(library_messages())), (out, err, library_messages())


def test_a_real_float32_list_still_shows(library_messages):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4)
    vae._keep_in_fp32_modules = ["quant_conv"]
    vae.to(torch.bfloat16)
    assert any("should be kept in float32: ['quant_conv']" in m for m in library_messages())
