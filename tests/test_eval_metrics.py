"""`latte eval fvd|fid|is|stats`: the pinned protocols against an independent numpy computation, reproducibility,
cached statistics, and one-line errors. The detectors are tiny TorchScript stand-ins with the real ones' call
signatures, saved by the tests."""

import json
import re

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from latte.cli.main import main
from latte.evaluation.metrics import fvd, split_scores
from latte.evaluation.protocol import make_protocol


class TinyI3D(torch.nn.Module):
    """StyleGAN-V's I3D call: (B, 3, T, H, W) uint8-range input, rescale / resize / return_features flags."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.randn(3 * 2 * 2 * 2, 5, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 6, 6), mode="trilinear", align_corners=False)
        logits = torch.tanh(F.adaptive_avg_pool3d(x, (2, 2, 2)).flatten(1) @ self.weight)
        return logits if return_features else logits.softmax(-1)


class TinyInception(torch.nn.Module):
    """NVIDIA's Inception call: (B, 3, H, W) uint8 frames, return_features flag."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x.float() / 255, (1, 2)).flatten(1)  # (B, 6)
        return torch.cat([pooled, pooled ** 2], dim=1) if return_features else pooled.softmax(-1)


class TinyC3D(torch.nn.Module):
    """StyleGAN-V's C3D call: (B, 3, T, H, W) uint8 videos in, class probabilities out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.float().mean(dim=(2, 3, 4)) / 25.5  # (B, 3)
        return torch.cat([means, -means.sum(1, keepdim=True)], dim=1).softmax(-1)


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    paths = {}
    for name, module in (("i3d", TinyI3D()), ("inception", TinyInception()), ("c3d", TinyC3D())):
        paths[name] = folder / f"{name}.pt"
        torch.jit.save(torch.jit.script(module), str(paths[name]))
    return paths


def write_frame_folders(root, lengths, seed, size=(10, 12), brightness=0):
    """`root/<video>/<frame>.png`, one video per length; frame names sort in frame order."""
    rng = np.random.default_rng(seed)
    for v, length in enumerate(lengths):
        video = root / f"video{v:03d}"
        video.mkdir(parents=True)
        base = rng.integers(0, 200, size=(*size, 3))
        for f in range(length):
            frame = np.clip(base + 3 * f + brightness + rng.integers(0, 30, size=base.shape), 0, 255)
            Image.fromarray(frame.astype(np.uint8)).save(video / f"{f:05d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    real = write_frame_folders(root / "real", [8, 14, 20, 12, 11, 16, 25, 13, 12, 18], seed=1)
    fake = write_frame_folders(root / "fake", [5, 6, 4, 5, 7, 5, 4], seed=2, brightness=40)
    return real, fake


def independent_fvd(real, fake, detector_path, num_videos, num_frames, real_stride, size, seed):
    """The latte-paper protocol written out directly: seeded sample of the videos with >= frames * stride
    frames, a seeded start per video, PIL centre crop + LANCZOS, one detector call per video, np.cov (biased),
    scipy's sqrtm."""
    detector = torch.jit.load(str(detector_path))

    def frames_of(video):
        return sorted(video.iterdir())

    def features(video, indices):
        frames = []
        for i in indices:
            image = Image.open(frames_of(video)[i]).convert("RGB")
            side = min(image.size)
            left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
            frames.append(np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size),
                                                                                             Image.LANCZOS)))
        x = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None]
        with torch.no_grad():
            return detector(x, rescale=True, resize=True, return_features=True)[0].double().numpy()

    videos = sorted(real.iterdir())
    eligible = [i for i, v in enumerate(videos) if len(frames_of(v)) >= num_frames * real_stride]
    chosen = [eligible[k] for k in sorted(np.random.default_rng(seed).permutation(len(eligible))[:num_videos])]
    real_rows = []
    for i in chosen:
        last = len(frames_of(videos[i])) - (num_frames - 1) * real_stride - 1
        start = int(np.random.default_rng([seed, i]).integers(0, last + 1))
        real_rows.append(features(videos[i], range(start, start + num_frames * real_stride, real_stride)))
    fake_rows = [features(v, range(num_frames)) for v in sorted(fake.iterdir())[:num_videos]]
    (m1, c1), (m2, c2) = [(np.mean(r, 0), np.cov(np.array(r), rowvar=False, bias=True)) for r in (real_rows,
                                                                                                   fake_rows)]
    return float(np.real(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2))))


def test_fvd_matches_an_independent_computation_of_the_protocol(data, detectors):
    real, fake = data
    protocol = make_protocol("fvd", "latte-paper", num_videos=6, num_frames=4, size=8)
    assert protocol.real_stride == 3 and protocol.fake_stride == 1 and protocol.real_selection == "random"
    result = fvd(real, fake, detectors["i3d"], protocol, seed=5, batch_size=4)
    expected = independent_fvd(real, fake, detectors["i3d"], 6, 4, 3, 8, seed=5)
    assert result["value"] == pytest.approx(expected, rel=1e-6) and expected > 0.01
    assert (result["num_real"], result["num_fake"], result["seed"]) == (6, 6, 5)


def run_cli(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SMALL = ("--num-videos", 6, "--num-frames", 4, "--size", 8)


def test_the_same_command_twice_gives_the_same_report(data, detectors, tmp_path, capsys):
    real, fake = data
    values = []
    for k in range(2):
        code, out, err = run_cli(capsys, "fvd", "--real", real, "--fake", fake, "--detector", detectors["i3d"],
                                 *SMALL, "--seed", 3, "--batch-size", 2 + k, "-o", tmp_path / f"r{k}.json")
        assert code == 0, err
        printed = json.loads(out.strip().splitlines()[-1])
        assert printed == json.loads((tmp_path / f"r{k}.json").read_text())
        values.append(printed["value"])
    assert values[0] == pytest.approx(values[1], rel=1e-12)  # a different batch size gives the same clips
    assert "real_stride=3" in out and "seed=3" in out  # every knob printed
    for key in ("metric", "value", "preset", "detector_sha256", "num_real", "num_fake", "seed", "versions"):
        assert key in printed
    assert printed["preset"]["name"] == "latte-paper" and printed["preset"]["size"] == 8
    assert re.fullmatch(r"[0-9a-f]{64}", printed["detector_sha256"])
    code, out, _ = run_cli(capsys, "fvd", "--real", real, "--fake", fake, "--detector", detectors["i3d"], *SMALL,
                           "--seed", 4)
    assert json.loads(out.splitlines()[-1])["value"] != values[0]  # another seed: other real videos, clip starts


def test_identical_sets_are_at_distance_zero_under_stylegan_v(detectors, tmp_path, capsys):
    # stylegan-v: the first videos in sorted order, one shared stride; videos of exactly 4 frames start at 0.
    videos = write_frame_folders(tmp_path / "videos", [4] * 5, seed=3)
    for metric, detector in (("fvd", "i3d"), ("fid", "inception")):
        code, out, err = run_cli(capsys, metric, "--real", videos, "--fake", videos, "--detector",
                                 detectors[detector], "--preset", "stylegan-v", "--num-videos", 5, "--num-frames", 4)
        assert code == 0, err
        report = json.loads(out.splitlines()[-1])
        assert report["value"] == pytest.approx(0, abs=1e-6) and report["preset"]["size"] is None


def test_cached_statistics_give_the_same_number_and_must_match(data, detectors, tmp_path, capsys):
    real, fake = data
    stats = tmp_path / "real.npz"
    code, _, err = run_cli(capsys, "stats", real, "-o", stats, "--detector", detectors["i3d"], *SMALL, "--seed", 1)
    assert code == 0 and stats.is_file(), err
    base = ("--fake", fake, "--detector", detectors["i3d"], *SMALL)
    _, from_folder, _ = run_cli(capsys, "fvd", "--real", real, *base, "--seed", 1)
    _, from_stats, _ = run_cli(capsys, "fvd", "--real", stats, *base, "--seed", 1)
    assert json.loads(from_stats.splitlines()[-1])["value"] == pytest.approx(
        json.loads(from_folder.splitlines()[-1])["value"], rel=1e-12)
    for extra, message in ((("--seed", 2), "seed 1, this run uses 2"),  # a later flag wins in argparse
                           (("--real-stride", 2), r"protocol .*\"real_stride\": 3.*this run uses"),
                           (("--detector", detectors["c3d"]), "detector_sha256")):
        code, _, err = run_cli(capsys, "fvd", "--real", stats, *base, "--seed", 1, *extra)
        assert code == 2 and err.count("\n") == 1 and re.search(message, err), err


def c3d_probs(fake, detector_path, count):
    """The C3D stand-in on the first `count` videos (4 frames each), one call per video."""
    c3d = torch.jit.load(str(detector_path))
    probs = []
    for video in sorted(fake.iterdir())[:count]:
        frames = np.stack([np.asarray(Image.open(p)) for p in sorted(video.iterdir())[:4]])
        probs.append(c3d(torch.from_numpy(frames).permute(3, 0, 1, 2)[None])[0].double().numpy())
    return np.array(probs)


def inception(p):
    return np.exp((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean())


def test_inception_score_presets(data, detectors, capsys):
    _, fake = data
    code, out, err = run_cli(capsys, "is", "--fake", fake, "--detector", detectors["c3d"], "--preset", "tgan",
                             "--num-videos", 3, "--repeats", 2, "--num-frames", 4)
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["preset"]["eps"] == 1e-20 and report["preset"]["splits"] == 1 and len(report["scores"]) == 2
    # TGANv2: two loops of 3 videos, one split each, eps 1e-20, mean and std over the loops.
    probs = c3d_probs(fake, detectors["c3d"], 6) + 1e-20
    scores = [inception(probs[:3]), inception(probs[3:])]
    assert report["value"] == pytest.approx(np.mean(scores), rel=1e-6)
    assert report["std"] == pytest.approx(np.std(scores), rel=1e-5)
    # StyleGAN-V: 7 videos shuffled with RandomState(42), 3 splits, mean and std over the splits.
    code, out, err = run_cli(capsys, "is", "--fake", fake, "--detector", detectors["c3d"], "--num-videos", 7,
                             "--splits", 3, "--num-frames", 4)
    report = json.loads(out.splitlines()[-1])
    probs = c3d_probs(fake, detectors["c3d"], 7)
    np.random.RandomState(42).shuffle(probs)
    scores = [inception(probs[k * 7 // 3:(k + 1) * 7 // 3]) for k in range(3)]
    assert report["preset"]["shuffle"] == 42
    assert report["value"] == pytest.approx(np.mean(scores), rel=1e-6)
    assert report["std"] == pytest.approx(np.std(scores), rel=1e-5)


def test_inception_score_of_known_distributions():
    one_hot = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    assert split_scores(one_hot, splits=1, eps=1e-20) == pytest.approx([4], rel=1e-9)
    assert split_scores(one_hot, splits=2, eps=1e-20) == pytest.approx([4, 4], rel=1e-9)
    assert split_scores(np.full((6, 5), 0.2), splits=3) == pytest.approx([1, 1, 1], rel=1e-12)


def test_a_folder_of_video_files(tmp_path, detectors, capsys):
    from latte.pipelines.export import export_video

    rng = np.random.default_rng(0)
    for k in range(3):
        export_video(rng.integers(0, 255, size=(5, 16, 16, 3), dtype=np.uint8), tmp_path / "videos" / f"{k}.gif")
    code, out, err = run_cli(capsys, "fvd", "--real", tmp_path / "videos", "--fake", tmp_path / "videos",
                             "--detector", detectors["i3d"], "--preset", "stylegan-v", "--num-videos", 3,
                             "--num-frames", 5)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["value"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("fvd", "--detector", "{tmp}/none.pt"), r"detector file not found: .*none\.pt \(FVD uses "
                                                 r"i3d_torchscript\.pt: StyleGAN-V's I3D, https://"),
        (("fvd",), r"FVD needs --detector i3d_torchscript\.pt: .*nothing is downloaded"),
        (("is", "--detector", "{i3d}"), r"inception_score|the following arguments are required|--real"),
        (("fvd", "--detector", "{i3d}", "--num-videos", "0"), r"--num-videos must be >= 1, got 0"),
        (("fvd", "--detector", "{i3d}", "-o", "{tmp}"), r"is an existing folder"),
        (("fvd", "--detector", "{i3d}", "--num-videos", "50"), r"holds 7 videos; 50 are needed"),
        (("fvd", "--detector", "{i3d}", "--real-stride", "9", "--num-videos", "6", "--num-frames", "4"),
         r"0 of 10 videos have the 36 frames a 4-frame clip at stride 9 needs"),
        (("fvd", "--detector", "{i3d}", "--prompt", "x"), r"--prompt is used only with --model"),
        (("fvd", "--detector", "{tmp}/file"), r"not a TorchScript file torch\.jit\.load reads"),
        (("fvd", "--detector", "{c3d}", "--num-videos", "2", "--num-frames", "4"),
         r"c3d\.pt failed on a FVD batch of shape \(2, 3, 4, 256, 256\) uint8, called as forward\(x, "
         r"rescale=True, resize=True, return_features=True\)"),
    ],
)
def test_bad_input_is_one_line(data, detectors, tmp_path, capsys, argv, message):
    real, fake = data
    (tmp_path / "file").write_text("x")
    argv = [a.format(tmp=tmp_path, i3d=detectors["i3d"], c3d=detectors["c3d"]) for a in argv]
    if argv[0] != "is":
        argv += ["--real", str(real), "--fake", str(fake)]
    try:
        code, _, err = run_cli(capsys, *argv)
    except SystemExit as exit_:  # argparse: a missing required flag
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_model_generates_the_fake_videos_here_keeps_them_and_resumes(data, detectors, tmp_path, capsys,
                                                                     monkeypatch):
    from latte.evaluation.generation import TextSampler
    from tiny_components import build_tiny_pipeline_folder

    real, _ = data
    model = build_tiny_pipeline_folder(tmp_path / "model", seed=2)
    generated = tmp_path / "generated"
    argv = ("fvd", "--real", real, "--fake", generated, "--model", model, "--prompt", "a red circle moves left",
            "--steps", 2, "--chunk", 2, "--detector", detectors["i3d"], "--num-videos", 3, "--num-frames", 4,
            "--size", 8, "--seed", 7, "--device", "cpu")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["generation"]["seeds"] == [7, 9] and np.isfinite(report["value"])
    kept = sorted(p.relative_to(generated).as_posix() for p in generated.glob("videos-*/**/frame_0000.png"))
    assert kept == ["videos-000000/000000-s7/frame_0000.png", "videos-000000/000001-s8/frame_0000.png",
                    "videos-000002/000002-s9/frame_0000.png"]
    # The fake folder is now an ordinary input: the same number without --model.
    code, out, _ = run_cli(capsys, "fvd", "--real", real, "--fake", generated, "--detector", detectors["i3d"],
                           "--num-videos", 3, "--num-frames", 4, "--size", 8, "--seed", 7)
    assert json.loads(out.splitlines()[-1])["value"] == report["value"]
    # A killed run: the last chunk is missing. Only it is made again, with its own seed.
    import shutil

    shutil.rmtree(generated / "videos-000002")
    calls = []
    real_write = TextSampler.write
    monkeypatch.setattr(TextSampler, "write", lambda self, target, seed, first, count: calls.append(
        (seed, first, count)) or real_write(self, target, seed, first, count))
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and calls == [(7, 2, 1)], err
    assert json.loads(out.splitlines()[-1])["value"] == report["value"]
    # Another plan refuses the folder.
    code, _, err = run_cli(capsys, *argv, "--guidance", 3)
    assert code == 2 and "holds videos of another generation (guidance null, this run 3.0)" in err


def sharded_worker(rank, world, port, real, fake, detectors, out):
    """One torchrun-like process (gloo on the CPU); target of torch.multiprocessing.spawn."""
    import os

    import torch.distributed as dist

    from latte.evaluation.metrics import inception_score

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        protocol = make_protocol("fvd", "latte-paper", num_videos=6, num_frames=4, size=8)
        values = [fvd(real, fake, detectors["i3d"], protocol, seed=5, batch_size=2)["value"],
                  inception_score(fake, detectors["c3d"], make_protocol("is", "stylegan-v", num_videos=7,
                                  num_frames=4, splits=2), batch_size=3)["value"]]
        if rank == 0:
            out.write_text(json.dumps(values))
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_same_numbers_as_one(data, detectors, tmp_path):
    import torch.multiprocessing as mp

    from latte.evaluation.metrics import inception_score
    from training_support import free_port

    real, fake = data
    one = [fvd(real, fake, detectors["i3d"], make_protocol("fvd", "latte-paper", num_videos=6, num_frames=4,
                                                           size=8), seed=5, batch_size=2)["value"],
           inception_score(fake, detectors["c3d"], make_protocol("is", "stylegan-v", num_videos=7, num_frames=4,
                                                                 splits=2), batch_size=3)["value"]]
    mp.spawn(sharded_worker, args=(2, free_port(), real, fake, detectors, tmp_path / "two.json"), nprocs=2,
             join=True)
    two = json.loads((tmp_path / "two.json").read_text())
    assert two[0] == pytest.approx(one[0], rel=1e-10)  # statistics summed in another order: float64 rounding
    assert two[1] == one[1]  # the probabilities gathered in the global order: the very same numbers


def test_frame_folders_at_any_depth_sorted_by_path(tmp_path):
    from latte.evaluation.protocol import VideoSource

    write_frame_folders(tmp_path / "samples" / "chunk01", [3, 3], seed=0)
    write_frame_folders(tmp_path / "samples" / "chunk00", [4], seed=0)
    source = VideoSource(tmp_path / "samples", "--fake")
    assert [p.relative_to(tmp_path / "samples").as_posix() for p in source.items] == [
        "chunk00/video000", "chunk01/video000", "chunk01/video001"]
    assert [source.length(i) for i in range(3)] == [4, 3, 3]


def test_class_model_draws_seeded_labels(data, detectors, tmp_path, capsys):
    from latte.evaluation.generation import class_label
    from test_class_pipeline import tiny_pipeline

    real, _ = data
    model = tiny_pipeline(num_classes=3).save_pretrained(tmp_path / "model")
    generated = tmp_path / "generated"
    argv = ("fvd", "--real", real, "--fake", generated, "--model", model, "--steps", 2, "--chunk", 2,
            "--detector", detectors["i3d"], "--num-videos", 3, "--num-frames", 4, "--size", 8, "--seed", 4)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["generation"]["labels"] == "uniform, seeded" and np.isfinite(report["value"])
    names = sorted(p.relative_to(generated).as_posix() for p in generated.glob("videos-*/*") if p.is_dir())
    labels = [class_label(4, j, 3) for j in range(3)]
    assert names == [f"videos-{j // 2 * 2:06d}/{j:06d}-class{labels[j]:03d}-s{4 + j}" for j in range(3)]
    code, _, err = run_cli(capsys, *argv, "--prompt", "a cat")
    assert code == 2 and "takes no --prompt" in err


def test_a_killed_run_picks_up_the_stored_features(data, detectors, tmp_path, capsys, monkeypatch):
    from latte.evaluation.detectors import Detector

    real, fake = data
    argv = ("fvd", "--real", real, "--fake", fake, "--detector", detectors["i3d"], *SMALL, "--batch-size", 4,
            "--cache", tmp_path / "features")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    value = json.loads(out.splitlines()[-1])["value"]
    stored = sorted((tmp_path / "features").iterdir())
    assert len(stored) == 4 and all(p.name.startswith("fvd-") for p in stored)  # 2 real + 2 fake batches
    stored[0].unlink()  # as if killed before that batch: only it is computed again
    calls = []
    real_call = Detector.__call__
    monkeypatch.setattr(Detector, "__call__", lambda self, batch: calls.append(len(batch)) or real_call(self, batch))
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and len(calls) == 1, err
    assert json.loads(out.splitlines()[-1])["value"] == value
