"""`latte generate`: writes a playable mp4 with the requested frames and size, several prompts and videos
into one folder; clear errors before any loading; no partial files, nothing of the user's lost."""

import json
import os
import re
import shlex
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from latte import LatteT2VTransformer
from latte.cli.main import main
from latte.pipelines import LattePipeline
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


def with_defaults(model, folder, defaults):
    """`model` as another folder (its components linked) whose model_index.json has these generate defaults."""
    folder.mkdir()
    for sub in model.iterdir():
        if sub.name != "model_index.json":
            (folder / sub.name).symlink_to(sub)
    index = json.loads((model / "model_index.json").read_text())
    index["_generate_defaults"] = defaults
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_defaults_come_from_the_model_folder(model, tmp_path):
    """Size from transformer sample_size x VAE factor, and the folder's optional generate defaults."""
    folder = with_defaults(model, tmp_path / "model", {"steps": 1, "guidance": 1.0, "fps": 4})
    out = tmp_path / "out.gif"
    assert main(["generate", "a blue square", "-o", str(out), "--model", str(folder), "--frames", "2"]) == 0
    from PIL import Image

    gif = Image.open(out)
    assert gif.n_frames == 2 and gif.size == (64, 64) and gif.info["duration"] == 250


def test_a_folders_slow_motion_is_used_and_said(model, tmp_path, caplog):
    folder = with_defaults(model, tmp_path / "model", {"steps": 1, "guidance": 1.0, "slow_motion": 4})
    frames = 2 * LatteT2VTransformer.from_pretrained(model / "transformer").config.video_length
    argv = ["generate", "a blue square", "--model", str(folder), "--frames", str(frames), "--height", "16",
            "--width", "16"]
    with caplog.at_level("INFO", logger="latte.cli.generate"):
        assert main([*argv, "-o", str(tmp_path / "slow.gif")]) == 0
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow motion")]
        assert said == [f"slow motion 2, the model folder's default for {frames} frames (one training clip's "
                        "motion; --slow-motion 1 keeps the model's speed)"]
        caplog.clear()
        assert main([*argv, "-o", str(tmp_path / "own-speed.gif"), "--slow-motion", "1"]) == 0
        assert not [r for r in caplog.records if r.getMessage().startswith("slow motion")]
    assert (tmp_path / "slow.gif").read_bytes() != (tmp_path / "own-speed.gif").read_bytes()


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
        (["-o", "{tmp}/v.mp4", "--height", "60"], "height must be a positive multiple of 16"),
        (["-o", "{tmp}/v.mp4", "--scheduler", "Fancy"], "unknown scheduler 'Fancy'; allowed: .*DDIM"),
        (["-o", "{tmp}/v.mp4", "--model", "{tmp}/nope"], "model folder not found: .*nope"),
        (["-o", "{tmp}/file"], "is a file: a PNG frame folder needs a folder path"),
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


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""

    def trap(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(LattePipeline, "from_pretrained", trap)


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes: equal snapshots mean nothing was deleted or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("latte generate: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], r"--steps must be >= 1, got 0"),
        (["--frames", "-3"], r"--frames must be >= 1, got -3"),
        (["--height", "0"], r"--height must be >= 1, got 0"),
        (["--width", "-16"], r"--width must be >= 1, got -16"),
        (["--num-videos", "0"], r"--num-videos must be >= 1, got 0"),
        (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
        (["--guidance", "inf"], r"--guidance must be a finite number, got inf"),
        (["--guidance", "nan"], r"--guidance must be a finite number, got nan"),
        (["--teacache", "nan"], r"--teacache must be a finite number, got nan"),
        (["--teacache", "-1"], r"--teacache must be >= 0 .0 = off., got -1"),
        (["--fps", "0"], r"fps must be between 0.1 and 1000.0, got 0.0"),
        (["--fps", "0.0001"], r"fps must be between 0.1 and 1000.0"),
        (["--fps", "5000"], r"fps must be between 0.1 and 1000.0"),
        (["--seed", "-1"], r"--seed must be from 0 to 18446744073709551615, got -1"),
        (["--seed", str(2**64 - 1), "--num-videos", "2"], r"the last seed, --seed \+ 1, too"),
        (["--device", "tpu"], r"--device 'tpu': not a device of this machine; allowed here: cpu"),
        (["--device", "meta"], r"--device 'meta': not a device of this machine; allowed here: cpu"),
        (["--device", "nonsense"], r"--device 'nonsense'.*allowed here: cpu"),
        pytest.param(["--device", "cuda:7"], r"--device 'cuda:7': no CUDA device is available here; allowed here: "
                     "cpu", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
        (["--format", "gif"], r"--format gif contradicts -o .*v.mp4, which writes mp4"),
        (["--num-videos", "2"], r"2 videos go into a folder, but -o .*v.mp4 names a .mp4 file; name a folder"),
        (["-o", "{tmp}/v.avi"], r"unsupported video format '.avi'"),
        (["-o", "{tmp}/file/v.mp4"], r"is a file, not a folder"),
    ],
)
def test_checked_before_loading(no_loading, tmp_path, capsys, args, message):
    """Bad values: one line naming the value and what is allowed, before the model is loaded."""
    (tmp_path / "file").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    output = [] if "-o" in args else ["-o", str(tmp_path / "v.mp4")]
    assert main(["generate", "a cat", *output, *args]) == 2
    assert re.search(message, one_error_line(capsys))
    assert os.listdir(tmp_path) == ["file"]


def test_existing_folder_is_never_deleted(no_loading, tmp_path, monkeypatch, capsys):
    """Issue 16's probe: `-o x/victim` (a folder of the user's) must exit 2 and keep thesis.txt."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x" / "victim").mkdir(parents=True)
    (tmp_path / "x" / "victim" / "thesis.txt").write_text("hi\n")
    assert main(["generate", "a red circle", "-o", "x/victim", "--steps", "1", "--frames", "1"]) == 2
    err = one_error_line(capsys)
    assert "x/victim" in err and "--overwrite" in err
    assert main(["generate", "a red circle", "b", "-o", "x/victim", "--steps", "1", "--frames", "1"]) == 2
    assert "x/victim" in one_error_line(capsys)
    assert (tmp_path / "x" / "victim" / "thesis.txt").read_text() == "hi\n"


@pytest.mark.parametrize("output", [".", "", "..", "HOME"])
@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--num-videos", "2", "--overwrite"]])
def test_working_folder_empty_path_and_home_are_never_replaced(no_loading, tmp_path, monkeypatch, capsys,
                                                               output, extra):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "notes.txt").write_text("keep")
    (home / "work" / "draft.txt").write_text("keep too")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work")
    before = snapshot(tmp_path)
    output = str(home) if output == "HOME" else output
    assert main(["generate", "a red circle", "-o", output, *extra]) == 2
    assert re.search("empty|refusing to replace", one_error_line(capsys))
    assert snapshot(tmp_path) == before


def test_png_folder_replaced_only_when_ours_or_overwrite(model, tmp_path, capsys):
    out = tmp_path / "frames"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    argv = ["generate", "a red circle", "-o", str(out), "--model", str(model), "--steps", "1", "--frames", "2"]
    assert main(argv) == 2
    assert (out / "mine.txt").read_text() == "mine"
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", "frame_0000.png", "frame_0001.png"]
    assert main([*argv, "--frames", "1"]) == 0  # a folder latte wrote is replaced without --overwrite
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", "frame_0000.png"]


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))]).astype(int)


def test_several_prompts_and_videos_into_one_folder(tmp_path, monkeypatch, capsys):
    """Prompts from the command line and a file, two videos each, batches of 3, with the shipped model: one
    folder of PNG-frame folders named by index, prompt and seed; each printed command remakes its video."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("# shapes\n\n  a blue square moves right  \n")
    out = tmp_path / "videos"
    settings = ["--steps", "1", "--frames", "2", "--format", "png"]
    argv = ["generate", "a red circle moves left", "--prompts", "prompts.txt", "--num-videos", "2",
            "--batch-size", "3", "-o", str(out), "--seed", "5", *settings]
    assert main(argv) == 0
    names = ["000-a-red-circle-moves-left-s5", "001-a-red-circle-moves-left-s6",
             "002-a-blue-square-moves-right-s5", "003-a-blue-square-moves-right-s6"]
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", *names]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == [str(out / name) for name in names]
    command = re.fullmatch(r"wrote \S+  \(alone: (.*)\)", lines[3]).group(1)
    assert command == ("latte generate 'a blue square moves right' --seed 6 -o 003-a-blue-square-moves-right-s6 "
                       "--steps 1 --frames 2")
    assert main([*shlex.split(command)[1:], "--format", "png"]) == 0  # the same video, made alone
    alone, batched = frames_of(tmp_path / names[3]), frames_of(out / names[3])
    assert alone.shape == (2, 64, 64, 3) and np.abs(alone - batched).max() <= 2
    assert np.abs(frames_of(out / names[2]) - batched).max() > 10  # other seed, other video


def test_folder_formats_and_replacement(model, tmp_path, capsys):
    """mp4 is the default format of a folder, gif on request; the folder latte wrote is replaced as a whole."""
    out = tmp_path / "clips"
    argv = ["generate", "a red circle", "a blue square", "-o", str(out), "--model", str(model), "--steps", "1",
            "--frames", "2"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", "000-a-red-circle-s0.mp4",
                                                     "001-a-blue-square-s0.mp4"]
    assert probe(out / "001-a-blue-square-s0.mp4")[:3] == (2, 64, 64)
    assert main([*argv[:2], *argv[3:], "--format", "gif", "--num-videos", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", "000-a-red-circle-s0.gif",
                                                     "001-a-red-circle-s1.gif"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"prompts file not found: .*missing.txt"),
        (b"# only a comment\n\n   \n", r"prompts file .*p.txt holds no prompts"),
        (b"", r"prompts file .*p.txt holds no prompts"),
        (b"a red circle\n\xff\xfe bad\n", r"prompts file .*p.txt is not UTF-8 text \(byte 13\)"),
        ("folder", r"--prompts .*p.txt is a folder"),
    ],
)
def test_prompts_file_errors(no_loading, tmp_path, capsys, content, message):
    path = tmp_path / "p.txt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    else:
        path = tmp_path / "missing.txt"
    assert main(["generate", "--prompts", str(path), "-o", str(tmp_path / "out")]) == 2
    assert re.search(message, one_error_line(capsys))
    assert not (tmp_path / "out").exists()


def test_no_prompt_or_an_empty_one(no_loading, tmp_path, capsys):
    assert main(["generate", "-o", str(tmp_path / "v.mp4")]) == 2
    assert "give one or more PROMPTs, or --prompts FILE" in one_error_line(capsys)
    assert main(["generate", "a cat", " ", "-o", str(tmp_path / "videos")]) == 2
    assert "a prompt is empty (an unset shell variable?)" in one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_long_video_mode_reaches_the_pipeline(model, tmp_path, monkeypatch, capsys):
    """--long-video windows|plain becomes the pipeline's long_video=True|False."""
    seen = []
    call = LattePipeline.__call__
    monkeypatch.setattr(LattePipeline, "__call__", lambda self, *a, **kw: seen.append(kw["long_video"]) or call(
        self, *a, **kw))
    for mode in ("plain", "windows", None):
        out = tmp_path / f"{mode}.gif"
        argv = ["generate", "a red circle", "-o", str(out), "--model", str(model), "--steps", "1", "--frames", "2"]
        assert main([*argv, *(["--long-video", mode] if mode else [])]) == 0, capsys.readouterr().err
    assert seen == [False, True, True]
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "a cat", "-o", str(tmp_path / "x.gif"), "--long-video", "slow"])
    assert exit_.value.code == 2 and "invalid choice: 'slow'" in capsys.readouterr().err
