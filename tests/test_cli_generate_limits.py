"""`latte generate` with the pipeline's limits: the probes of issue 16 fail at once in one line, writing
nothing, and the limit flags raise the ceilings."""

import os
import re

import pytest

from latte.cli.main import main
from latte.pipelines import limits
from tiny_components import build_tiny_pipeline_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("cli") / "model", seed=2)


def generate(model, tmp_path, *args):
    return main(["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--model", str(model), "--steps", "1",
                 "--frames", "1", "--height", "16", "--width", "16", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "1001"], r"num_inference_steps must be an integer in 1..1000 .*got 1001"),
        (["--steps", "100000000000"], "num_inference_steps must be an integer in 1..1000"),
        (["--guidance", "inf"], "--guidance must be a finite number, got inf"),
        (["--frames", "10000000"], "video_length=10000000 frames is above the limit of 1024: .*--max-frames"),
        (["--height", "180000", "--width", "180000"], "above the limit of 8192 per side: .*--max-size"),
        (["--height", "0"], "--height must be .*1.*got 0"),
        (["--frames", "3", "--max-frames", "2"], "video_length=3 frames is above the limit of 2"),
    ],
)
def test_probes_fail_in_one_line_and_write_nothing(model, tmp_path, capsys, args, message):
    assert generate(model, tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("latte generate: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert os.listdir(tmp_path) == []


def test_limit_flags_raise_the_ceilings(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda device: 1024)  # 1 KiB free
    assert generate(model, tmp_path) == 2
    assert "GiB is available" in capsys.readouterr().err
    assert generate(model, tmp_path, "--no-memory-check", "--max-frames", "1", "--max-size", "16") == 0
    assert os.listdir(tmp_path) == ["x.mp4"]
