"""`latte generate`: writes a playable mp4 with the requested frames and size; clear errors, no partial
files."""

import json
import os
import re

import av
import pytest
import torch

from latte.cli.main import main
from tiny_components import build_tiny_pipeline_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("cli") / "model", seed=2)


def probe(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        rate, codec = float(stream.average_rate), stream.codec_context.name
        return len(frames), frames[0].width, frames[0].height, rate, codec


def test_writes_requested_frames_and_size(model, tmp_path, capsys):
    out = tmp_path / "videos" / "out.mp4"
    code = main(["generate", "A red circle moves left", "-o", str(out), "--model", str(model), "--steps", "2",
                 "--frames", "5", "--height", "32", "--width", "48", "--seed", "3", "--fps", "10",
                 "--scheduler", "DPMSolverMultistepScheduler", "--negative-prompt", "blurry"])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert probe(out) == (5, 48, 32, 10.0, "h264")


def test_defaults_come_from_the_model_folder(model, tmp_path):
    """Size from transformer sample_size x VAE factor, and the folder's optional generate defaults."""
    folder = tmp_path / "model"
    folder.mkdir()
    for sub in model.iterdir():
        if sub.name != "model_index.json":
            (folder / sub.name).symlink_to(sub)
    index = json.loads((model / "model_index.json").read_text())
    index["_generate_defaults"] = {"steps": 1, "guidance": 1.0, "fps": 4}
    (folder / "model_index.json").write_text(json.dumps(index))
    out = tmp_path / "out.gif"
    assert main(["generate", "a blue square", "-o", str(out), "--model", str(folder), "--frames", "2"]) == 0
    from PIL import Image

    gif = Image.open(out)
    assert gif.n_frames == 2 and gif.size == (64, 64) and gif.info["duration"] == 250


def test_teacache_flag_skips_steps(model, tmp_path, caplog):
    out = tmp_path / "cached.mp4"
    with caplog.at_level("INFO", logger="latte.cli.generate"):
        assert main(["generate", "a red circle", "-o", str(out), "--model", str(model), "--steps", "8",
                     "--frames", "2", "--teacache", "10"]) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TeaCache")]
    computed, reused = map(int, re.findall(r"\d+", line))
    assert computed >= 1 and reused >= 1 and computed + reused == 8, line
    assert probe(out)[0] == 2


def test_no_model_says_what_to_pass(tmp_path, monkeypatch, capsys):
    import latte.pipelines

    monkeypatch.setattr(latte.pipelines, "default_model_path", lambda: tmp_path / "not-installed")
    assert main(["generate", "a cat", "-o", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "default model is not installed" in err and "pass --model DIR" in err
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/v.avi"], "unsupported video format '.avi'"),
        (["-o", "{tmp}/file/v.mp4"], "is a file, not a folder"),
        (["-o", "{tmp}/v.mp4", "--frames", "0"], "video_length .frames. must be an integer >= 1, got 0"),
        (["-o", "{tmp}/v.mp4", "--height", "60"], "height must be a positive multiple of 16"),
        (["-o", "{tmp}/v.mp4", "--scheduler", "Fancy"], "unknown scheduler 'Fancy'; allowed: .*DDIM"),
        (["-o", "{tmp}/v.mp4", "--model", "{tmp}/nope"], "model folder not found: .*nope"),
        (["-o", "{tmp}/v.mp4", "--teacache", "-1"], "--teacache must be >= 0 .0 = off., got -1"),
        (["-o", "{tmp}/file"], "is a file: a PNG frame folder needs a folder path"),
        pytest.param(["-o", "{tmp}/v.mp4", "--device", "cuda:0"], "no CUDA device is available here",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
    ],
)
def test_bad_input_is_one_clear_line(model, tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", str(model)]
    assert main(["generate", "a cat", "--steps", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latte generate: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert os.listdir(tmp_path) == ["file"]  # nothing written
