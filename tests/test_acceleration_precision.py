"""Precision choices: `pipe.quantize` (int8-dynamic, int8 weight-only), `--dtype auto`'s choice from the CPU's
flags, and the on-disk compile cache of `--compile`."""

import logging
import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from latte import LattePipeline
from latte.acceleration.compiled import compile_seconds, inductor_cache_dir
from latte.acceleration.precision import auto_dtype, cpu_flags
from latte.acceleration.quantize import transformer_block_linears
from latte.cli.main import main
from tiny_components import build_tiny_components, build_tiny_pipeline_folder

KWARGS = {"num_inference_steps": 3, "video_length": 2, "output_type": "np"}


def tiny_pipe() -> LattePipeline:
    pipe = LattePipeline(**build_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames(pipe) -> np.ndarray:
    return pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **KWARGS).frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return frames(tiny_pipe())


def test_unknown_mode_is_one_line_naming_the_allowed():
    with pytest.raises(ValueError, match=r"^unknown quantization mode 'fp8'; allowed: int8-dynamic, int8$"):
        tiny_pipe().quantize("fp8")


def test_int8_dynamic_quantizes_the_block_linears_only(reference):
    pipe = tiny_pipe()
    names = transformer_block_linears(pipe.transformer)
    pipe.quantize("int8-dynamic")
    modules = dict(pipe.transformer.named_modules())
    assert names and all(isinstance(modules[name], torch.ao.nn.quantized.dynamic.Linear) for name in names)
    # embeddings, adaLN and the output projection stay float; T5 is untouched
    assert type(pipe.transformer.proj_out) is nn.Linear and type(pipe.transformer.adaln_single.linear) is nn.Linear
    assert not any("quantized" in type(m).__module__ for m in pipe.text_encoder.modules())
    assert psnr(frames(pipe), reference) > 30


def test_int8_weight_only_quantizes_transformer_blocks_and_t5(reference):
    pytest.importorskip("torchao")
    pipe = tiny_pipe()
    pipe.quantize("int8")
    block = pipe.transformer.transformer_blocks[0]
    assert type(block.attn1.to_q.weight) is not nn.Parameter and block.attn1.to_q.weight.dtype == torch.float32
    assert type(pipe.transformer.proj_out.weight) is nn.Parameter
    t5_linears = [m for m in pipe.text_encoder.modules() if isinstance(m, nn.Linear)]
    assert t5_linears and all(type(m.weight) is not nn.Parameter for m in t5_linears)
    assert psnr(frames(pipe), reference) > 30


def test_int8_dynamic_on_cpu_needs_float32():
    pipe = tiny_pipe().to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"int8-dynamic on CPU quantizes float32 models, not torch.bfloat16"):
        pipe.quantize("int8-dynamic")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma", "amx_bf16", "amx_tile", "avx512_bf16"}, "bf16"),  # Sapphire Rapids and later
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),  # Cooper Lake, Zen 4
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "fp32"),  # Skylake/Cascade Lake: bf16 emulated
        ({"avx2", "fma"}, "fp32"),  # Zen 1-3, Haswell
        (set(), "fp32"),  # no /proc/cpuinfo (macOS)
    ],
)
def test_auto_dtype_from_cpu_flags(flags, expected):
    chosen, why = auto_dtype("cpu", flags)
    assert chosen == expected
    assert ("natively" in why) == (expected == "bf16") and why


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("precision") / "model", seed=2)


def generate_args(model, out) -> list[str]:
    return ["generate", "a red circle", "-o", str(out), "--model", str(model), "--steps", "2", "--frames", "2"]


def png_frames(folder) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir()) if p.suffix == ".png"])


@pytest.mark.parametrize(("flags", "picked"), [(set(), "fp32"), ({"avx512_bf16"}, "bf16")])
def test_cli_dtype_auto_says_what_it_picked(model, tmp_path, monkeypatch, caplog, flags, picked):
    """auto is the default; without native bf16 it is exactly --dtype fp32."""
    import latte.acceleration.precision

    monkeypatch.setattr(latte.acceleration.precision, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.INFO, logger="latte.cli.generate"):
        assert main(generate_args(model, tmp_path / "auto")) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("--dtype auto")]
    assert line.startswith(f"--dtype auto: {picked}, as "), line
    assert main([*generate_args(model, tmp_path / "exact"), "--dtype", picked]) == 0
    assert np.array_equal(png_frames(tmp_path / "auto"), png_frames(tmp_path / "exact"))


def test_cli_quantize_runs_and_auto_keeps_fp32_for_int8_dynamic(model, tmp_path, monkeypatch, caplog):
    import latte.acceleration.precision

    monkeypatch.setattr(latte.acceleration.precision, "cpu_flags", lambda: {"amx_bf16"})  # auto would pick bf16
    with caplog.at_level(logging.INFO, logger="latte"):
        assert main([*generate_args(model, tmp_path / "q"), "--quantize", "int8-dynamic"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "--dtype auto: fp32, as int8-dynamic on CPU quantizes float32 activations" in messages
    assert "quantized: int8-dynamic" in messages
    assert len(png_frames(tmp_path / "q")) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "int8-dynamic", "--dtype", "bf16"], r"int8-dynamic on CPU quantizes float32 models"),
        (["--compile", "--teacache", "0.1"], r"--compile and --teacache exclude each other"),
    ],
)
def test_cli_bad_combinations_before_loading(tmp_path, monkeypatch, capsys, args, message):
    def trap(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(LattePipeline, "from_pretrained", trap)
    assert main(["generate", "a cat", "-o", str(tmp_path / "v.mp4"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_cli_unknown_quantize_mode_names_the_allowed(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "a cat", "-o", "v.mp4", "--quantize", "fp8"])
    assert exit_.value.code == 2
    assert re.search(r"argument --quantize: invalid choice: 'fp8' \(choose from '?int8-dynamic'?, '?int8'?\)",
                     capsys.readouterr().err)


def test_inductor_cache_goes_under_the_user_cache_unless_set(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert inductor_cache_dir() == tmp_path / "latte" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "latte" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert inductor_cache_dir() == tmp_path / "mine"


@pytest.mark.slow  # inductor compiles the tiny transformer: about a minute on a 2-core CPU
def test_cli_compile_reports_compile_time_and_fills_the_cache(model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    before = compile_seconds()
    with caplog.at_level(logging.INFO, logger="latte.cli.generate"):
        assert main([*generate_args(model, tmp_path / "c"), "--compile", "--dtype", "fp32"]) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compile: ")]
    assert float(re.search(r"[\d.]+", line).group()) > 0 and compile_seconds() > before
    assert any((tmp_path / "cache").rglob("*"))  # compiled graphs on disk for the next run
    assert main([*generate_args(model, tmp_path / "e"), "--dtype", "fp32"]) == 0
    assert np.abs(png_frames(tmp_path / "c").astype(int) - png_frames(tmp_path / "e")).max() <= 1
