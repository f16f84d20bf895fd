"""FVD on the shapes domain: `synthetic[:SPLIT[:SEED]]` data rendered on the fly, the shipped shapes detector, and
generation from the domain's captions."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latte.cli.main import main
from latte.data.synthetic import SyntheticShapes
from latte.evaluation.detectors import file_sha256
from latte.evaluation.protocol import SyntheticSource, synthetic_spec
from latte.evaluation.shapes_detector import (
    SHIPPED_DETECTOR,
    ShapesDetector,
    _blur,
    head_accuracy,
    save_detector,
    train_shapes_detector,
)


def run_cli(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def report_of(out: str) -> dict:
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize(("spec", "parsed"), [
    ("synthetic", ("train", None)), ("synthetic:heldout", ("heldout", None)), ("synthetic:all:7", ("all", 7)),
    ("data/videos", None), ("./synthetic", None), ("synthetics", None),
])
def test_synthetic_spec(spec, parsed):
    assert synthetic_spec(spec) == parsed


@pytest.mark.parametrize(("spec", "message"), [
    ("synthetic:test", r"unknown split 'test': 'test' is none of train, heldout, all, grow, shrink"),
    ("synthetic:shrink+tran", r"unknown split 'shrink\+tran': 'tran' is none of train, heldout"),
    ("synthetic:train:-1", r"the seed '-1' is not a non-negative integer"),
])
def test_bad_synthetic_spec_names_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        synthetic_spec(spec)


def test_synthetic_source_reads_the_domain_clips_as_uint8():
    source = SyntheticSource("heldout", 3, count=4, num_frames=16, flag="--real")
    data = SyntheticShapes(4, seed=3, split="heldout")
    clip = source.items[2]
    from latte.evaluation.protocol import Clip

    frames = source.read(Clip(clip, 0, 1, 16))
    expected = ((data[2]["video"] + 1) * 127.5).round().permute(1, 2, 3, 0).numpy()
    assert frames.dtype == np.uint8 and frames.shape == (16, 64, 64, 3)
    assert np.abs(frames.astype(np.float64) - expected).max() == 0
    assert source.captions() == [data[i]["caption"] for i in range(4)]


def test_the_shipped_detector_reads_the_domain():
    """The shipped file is the TorchScript of a `ShapesDetector`, and its heads read fresh clips (start points,
    blur, noise, flicker at random) well: what makes its features worth comparing."""
    detector = torch.jit.load(str(SHIPPED_DETECTOR))
    accuracy = head_accuracy(detector, num_clips=96)
    assert min(accuracy["color"], accuracy["shape"], accuracy["motion"], accuracy["background"]) >= 0.9, accuracy
    assert accuracy["size"] >= 0.85, accuracy  # a small shape that grows ends large: the hardest head
    # Quality: strengths in [0, 1], half of them 0; always guessing the mean would be off by about 0.28.
    assert max(accuracy["blur_mae"], accuracy["noise_mae"], accuracy["flicker_mae"]) < 0.1, accuracy
    assert max(accuracy["start_x_mae"], accuracy["start_y_mae"]) < 0.06, accuracy
    uint8 = (torch.rand(2, 3, 16, 64, 64) * 255).to(torch.uint8)
    assert detector(uint8, rescale=True, resize=True, return_features=True).shape == (2, 64)
    # Another size is resized to the 16 x 64 x 64 it reads.
    assert detector(uint8[:, :, :8, :32, :48], rescale=True, resize=True, return_features=True).shape == (2, 64)


def test_detector_training_runs_and_saves_torchscript(tmp_path):
    model = train_shapes_detector(steps=2, batch_size=2, pool=4, progress=False)
    path = tmp_path / "detector.pt"
    save_detector(model, path)
    loaded = torch.jit.load(str(path))
    x = (torch.rand(1, 3, 16, 64, 64) * 255).round()
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert isinstance(model, ShapesDetector) and sorted(p.name for p in tmp_path.iterdir()) == ["detector.pt"]


def test_domain_fvd_defaults_and_sees_what_differs(tmp_path, capsys):
    """`--real synthetic`: the `shapes` preset and the shipped detector by default; two independent draws of the
    training split (the floor a perfect generator reaches) are closer than the held-out split or blurred clips,
    and a run repeats its number."""
    common = ("--real", "synthetic", "--num-videos", 48, "--batch-size", 16)
    code, out, err = run_cli(capsys, "fvd", *common, "--fake", "synthetic")
    assert code == 0, err
    floor = report_of(out)
    assert floor["preset"]["name"] == "shapes" and floor["preset"]["size"] is None
    assert floor["detector_sha256"] == file_sha256(SHIPPED_DETECTOR) and floor["num_fake"] == 48
    assert run_cli(capsys, "fvd", *common, "--fake", "synthetic")[1].splitlines()[-1] == out.splitlines()[-1]
    # The same draw on both sides: the distance is zero.
    code, out, _ = run_cli(capsys, "fvd", *common, "--fake", "synthetic:train:0")
    assert report_of(out)["value"] == pytest.approx(0, abs=1e-6)
    # Other combinations.
    code, out, _ = run_cli(capsys, "fvd", *common, "--fake", "synthetic:heldout")
    heldout = report_of(out)["value"]
    # The floor's own clips, blurred as a weak decoder would, written as frame folders.
    source = SyntheticSource("train", 1, 48, 16, "--fake")
    from latte.evaluation.protocol import Clip

    for i, item in enumerate(source.items):
        video = torch.from_numpy(source.read(Clip(item, 0, 1, 16))).permute(3, 0, 1, 2).float() / 127.5 - 1
        blurred = ((_blur(video, 1.2) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0)
        (tmp_path / f"{i:03d}").mkdir()
        for f, frame in enumerate(blurred.numpy()):
            Image.fromarray(frame).save(tmp_path / f"{i:03d}" / f"{f:02d}.png")
    code, out, err = run_cli(capsys, "fvd", *common, "--fake", tmp_path)
    assert code == 0, err
    blurred = report_of(out)["value"]
    assert floor["value"] < heldout and floor["value"] < blurred, (floor["value"], heldout, blurred)


def test_model_generates_from_the_domain_captions(tmp_path, capsys):
    from latte.evaluation.generation import prompts_digest
    from tiny_components import build_tiny_pipeline_folder

    model = build_tiny_pipeline_folder(tmp_path / "model", seed=2)
    argv = ("fvd", "--real", "synthetic", "--fake", tmp_path / "generated", "--model", model, "--steps", 2,
            "--num-videos", 3, "--num-frames", 4, "--chunk", 2, "--seed", 5)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    report = report_of(out)
    captions = SyntheticSource("train", 6, 3, 4, "--real").captions()
    assert report["generation"]["prompt"] == prompts_digest(captions) and report["generation"]["seeds"] == [5, 7]
    assert np.isfinite(report["value"]) and report["preset"]["name"] == "shapes"


def test_domain_errors_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "fvd", "--real", "synthetic:test", "--fake", "synthetic")
    assert code == 2 and "unknown split 'test'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "fvd", "--real", "synthetic", "--fake", "synthetic", "--model", "latte-shapes")
    assert code == 2 and "--fake synthetic names rendered clips" in err
