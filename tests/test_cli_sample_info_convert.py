"""`latte sample`, `latte info`, `latte convert` end to end on tiny models."""

import re

import pytest
import torch

from latte import Latte, LatteClassPipeline, LatteT2VTransformer
from latte.cli import main as cli
from test_latte_models import original_state_dict
from tiny_components import tiny_transformer, tiny_vae

MY_COMMANDS = ["latte.cli.sample", "latte.cli.convert", "latte.cli.info"]


@pytest.fixture
def latte(monkeypatch):
    """`latte ...` with this file's sub-commands (independent of the other commands being present)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", MY_COMMANDS)
    return cli.main


@pytest.fixture
def checkpoint(tmp_path):
    """An original-layout UCF101-style checkpoint (3 classes, 4 frames, 64 px) and a tiny VAE folder."""
    state = original_state_dict(depth=2, frames=4, num_classes=3)
    torch.save({"ema": state, "model": state}, tmp_path / "ucf.pt")
    tiny_vae().save_pretrained(str(tmp_path / "vae"))
    return tmp_path / "ucf.pt", tmp_path / "vae"


def test_info_paper_sizes(latte, capsys):
    assert latte(["info", "Latte-XL/2"]) == 0
    out = capsys.readouterr().out
    assert "673.68 M" in out and "frozen sin-cos tables" in out and "FLOPs per forward" in out
    assert latte(["info", "Latte-S/2"]) == 0
    assert "32.48 M" in capsys.readouterr().out
    assert latte(["info", "Latte-XL/2", "--num-classes", "101"]) == 0
    assert "673.80 M" in capsys.readouterr().out  # + the 102 x 1152 label table
    assert latte(["info", "Latte-XXL/2"]) == 2
    assert "Latte-XL/2" in capsys.readouterr().err


def test_convert_round_trip_and_info(latte, checkpoint, tmp_path, capsys):
    ckpt, _ = checkpoint
    assert latte(["convert", str(ckpt), "--num-heads", "4", "-o", str(tmp_path / "folder")]) == 0
    model = Latte.from_pretrained(tmp_path / "folder")
    assert model.config.num_classes == 3 and model.config.num_frames == 4
    assert latte(["convert", str(tmp_path / "folder"), "-o", str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)["ema"]
    original = torch.load(ckpt, weights_only=True)["ema"]
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)
    capsys.readouterr()
    assert latte(["info", str(tmp_path / "folder")]) == 0
    out = capsys.readouterr().out
    assert "float32" in out and "trainable parameters" in out
    assert latte(["info", str(ckpt), "--num-heads", "4"]) == 0
    assert "width 64, depth 2, 4 heads" in capsys.readouterr().out
    assert latte(["info", str(tmp_path / "back.pt")]) == 2  # width 64: heads unknown, said so
    assert "num_heads" in capsys.readouterr().err


def test_convert_text_to_video_checkpoint(latte, tmp_path):
    reference = tiny_transformer()
    torch.save({"ema": reference.state_dict()}, tmp_path / "t2v.pt")
    assert latte(["convert", str(tmp_path / "t2v.pt"), "-o", str(tmp_path / "transformer")]) == 0
    loaded = LatteT2VTransformer.from_pretrained(tmp_path / "transformer")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_sample_from_checkpoint_needs_a_vae(latte, checkpoint, tmp_path, capsys):
    ckpt, vae = checkpoint
    assert latte(["sample", "--model", str(ckpt), "--num-heads", "4", "-o", str(tmp_path / "out")]) == 2
    assert "--vae" in capsys.readouterr().err
    argv = ["sample", "--model", str(ckpt), "--vae", str(vae), "--num-heads", "4", "--class-label", "0", "2",
            "--num-videos", "2", "--steps", "2", "--seed", "3", "-o", str(tmp_path / "out")]
    assert latte(argv) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [".latte-output", "class000_000.mp4", "class000_001.mp4", "class002_000.mp4", "class002_001.mp4"]
    import av

    with av.open(str(tmp_path / "out" / "class002_001.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (64, 64)


def test_sample_from_pipeline_folder(latte, checkpoint, tmp_path, capsys):
    ckpt, vae = checkpoint
    argv = ["convert", str(ckpt), "--vae", str(vae), "--num-heads", "4", "-o", str(tmp_path / "pipe")]
    assert latte(argv) == 0
    assert isinstance(LatteClassPipeline.from_pretrained(tmp_path / "pipe"), LatteClassPipeline)
    capsys.readouterr()
    assert latte(["info", str(tmp_path / "pipe")]) == 0
    out = capsys.readouterr().out
    assert "LatteClassPipeline" in out and "DDPMScheduler" in out and "AutoencoderKL" in out
    argv = ["sample", "--model", str(tmp_path / "pipe"), "--class-label", "1", "--steps", "2",
            "--format", "gif", "--scheduler", "DDIMScheduler", "-o", str(tmp_path / "gifs")]
    assert latte(argv) == 0
    assert sorted(p.name for p in (tmp_path / "gifs").iterdir()) == [".latte-output", "class001_000.gif"]
    argv = ["sample", "--model", str(tmp_path / "pipe"), "--class-label", "7", "-o", str(tmp_path / "new")]
    assert latte(argv) == 2
    assert "0..2" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"latte {command}: error: ") and err.count("\n") == 1, err
    return err


def test_sample_output_follows_the_output_rule(latte, checkpoint, tmp_path, capsys, monkeypatch):
    """An existing folder of the user's is refused (naming it and --overwrite) before loading, replaced as a
    whole with --overwrite; a folder latte wrote is replaced without; `.` and `""` never."""
    ckpt, vae = checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    base = ["sample", "--model", str(ckpt), "--vae", str(vae), "--num-heads", "4", "--class-label", "1",
            "--steps", "1"]
    assert latte([*base, "-o", str(out)]) == 2
    err = one_error_line(capsys, "sample")
    assert str(out) in err and "--overwrite" in err
    assert latte([*base, "-o", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", "class001_000.mp4"]
    assert capsys.readouterr().out.split() == [str(out / "class001_000.mp4")]
    assert latte([*base, "--format", "png", "-o", str(out)]) == 0  # ours: replaced, the mp4 is gone
    assert sorted(p.name for p in out.iterdir()) == [".latte-output", "class001_000"]
    capsys.readouterr()
    monkeypatch.chdir(out)
    before = snapshot(tmp_path)
    for target in (".", ""):
        assert latte([*base, "-o", target, "--overwrite"]) == 2
        assert re.search("refusing to replace|empty", one_error_line(capsys, "sample"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], r"--steps must be >= 1, got 0"),
        (["--num-videos", "0"], r"--num-videos must be >= 1, got 0"),
        (["--num-heads", "0"], r"--num-heads must be >= 1, got 0"),
        (["--class-label", "-1"], r"--class-label must be >= 0, got -1"),
        (["--guidance", "nan"], r"--guidance must be a finite number, got nan"),
        (["--fps", "0"], r"fps must be between 0.1 and 1000.0, got 0.0"),
        (["--seed", "-5"], r"--seed must be from 0 to \d+, got -5"),
        (["--device", "tpu"], r"--device 'tpu': not a device of this machine; allowed here: cpu"),
        (["--device", "meta"], r"--device 'meta'.*allowed here: cpu"),
    ],
)
def test_sample_checked_before_loading(latte, tmp_path, capsys, monkeypatch, args, message):
    from latte.cli import sample

    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded before the checks"))
    assert latte(["sample", "--model", str(tmp_path / "m.pt"), "-o", str(tmp_path / "out"), *args]) == 2
    assert re.search(message, one_error_line(capsys, "sample"))
    assert not (tmp_path / "out").exists()


def test_convert_output_follows_the_output_rule(latte, checkpoint, tmp_path, capsys, monkeypatch):
    ckpt, _ = checkpoint
    out = tmp_path / "folder"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    from latte.models import io

    real_load = io.load_torch_checkpoint
    monkeypatch.setattr(io, "load_torch_checkpoint", lambda *a: pytest.fail("loaded before the output check"))
    assert latte(["convert", str(ckpt), "--num-heads", "4", "-o", str(out)]) == 2
    err = one_error_line(capsys, "convert")
    assert str(out) in err and "--overwrite" in err and (out / "keep.txt").is_file()
    for target in ("", "."):
        assert latte(["convert", str(ckpt), "--num-heads", "4", "-o", target, "--overwrite"]) == 2
        assert re.search("refusing to replace|empty", one_error_line(capsys, "convert"))
    assert latte(["convert", str(ckpt), "--num-heads", "0", "-o", str(tmp_path / "new")]) == 2
    assert "--num-heads must be >= 1, got 0" in one_error_line(capsys, "convert")
    monkeypatch.setattr(io, "load_torch_checkpoint", real_load)
    assert latte(["convert", str(ckpt), "--num-heads", "4", "-o", str(out), "--overwrite"]) == 0
    assert Latte.from_pretrained(out).config.num_classes == 3 and not (out / "keep.txt").exists()
    assert latte(["convert", str(ckpt), "--num-heads", "4", "-o", str(out)]) == 0  # ours now: replaced
