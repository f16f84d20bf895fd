"""Long videos (FreeNoise windows), image-to-video and video extension: exactness where the plain path must be
kept, shapes, the known frames, and clear errors before any work."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from latte import LattePipeline
from latte.acceleration import TeaCache
from latte.cli.main import main
from latte.models.vae import encode_video
from latte.pipelines.long_video import KnownLatents, TemporalWindows, WindowedTransformer, fit_frames, read_condition
from tiny_components import build_tiny_components, tiny_scheduler, tiny_transformer

STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    pipe = LattePipeline(**build_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **kwargs):
    kwargs = {"prompt": "a red circle moves left", "num_inference_steps": STEPS, "height": 32, "width": 32,
              "output_type": "pt", "generator": torch.Generator().manual_seed(0), **kwargs}
    return pipe(**kwargs).frames


def temporal_lengths(pipe) -> list[int]:
    """Records the attention length (frames) of every temporal block call."""
    lengths = []
    for block in pipe.transformer.temporal_transformer_blocks:
        block.register_forward_hook(lambda module, args, out: lengths.append(args[2]))
    return lengths


def test_spans_and_fusion_weights():
    windows = TemporalWindows.for_frames(16, 64)
    spans = windows.spans(64)
    assert (windows.length, windows.stride, len(spans), spans[0], spans[-1]) == (16, 4, 13, (0, 16), (48, 64))
    assert windows.spans(18) == [(0, 16), (2, 18)]  # the last window ends at the last frame
    total = torch.zeros(64, dtype=torch.float64)
    weights = windows.fusion_weights(64, "cpu", torch.float64)
    for (start, end), weight in zip(spans, weights, strict=True):
        total[start:end] += weight
    assert weights[6][7] > weights[6][0] and weights[6][8] > weights[6][15]  # a window's middle counts most
    assert torch.allclose(total, torch.ones(64, dtype=torch.float64))
    assert TemporalWindows.for_frames(16, 16) is None  # the training length or less: the plain forward


def test_one_window_covering_everything_equals_the_plain_forward():
    model = tiny_transformer(seed=1)
    latents = torch.randn(2, 4, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    context = model.prepare_text(torch.randn(2, 5, 32))
    timestep = torch.tensor([500, 20])
    plain = model.denoise(latents, timestep, context)
    windowed = WindowedTransformer(model, TemporalWindows(length=6, stride=4)).denoise(latents, timestep, context)
    assert torch.equal(windowed, plain)


def test_short_videos_are_unchanged(pipe):
    """Up to the training length, long_video (the default) is exactly the plain path."""
    assert torch.equal(run(pipe, video_length=16), run(pipe, video_length=16, long_video=False))


def test_long_video_runs_without_a_wrapper_and_says_so(pipe, caplog):
    """A TeaCache installed on the pipeline is not applied to windowed long videos: the video is the plain
    transformer's, and a warning names the wrapper."""
    expected = run(pipe, video_length=20, height=16, width=16)
    plain_transformer = pipe.transformer
    pipe.transformer = TeaCache(plain_transformer, threshold=0.5)
    try:
        with caplog.at_level("WARNING"):
            video = run(pipe, video_length=20, height=16, width=16)
    finally:
        pipe.transformer = plain_transformer
    assert torch.equal(video, expected)
    assert "TeaCache is not applied to long videos" in caplog.text


def test_long_video_attends_in_training_length_windows(pipe):
    lengths = temporal_lengths(pipe)
    try:
        video = run(pipe, video_length=40, height=16, width=16)
        assert video.shape == (1, 40, 3, 16, 16) and bool(torch.isfinite(video).all())
        assert set(lengths) == {16}  # windows of the training length only
        lengths.clear()
        run(pipe, video_length=40, height=16, width=16, long_video=False)
        assert set(lengths) == {40}  # the plain way: every frame attends to all 40
    finally:
        for block in pipe.transformer.temporal_transformer_blocks:
            block._forward_hooks.clear()


def test_slow_motion_windows_stretch_over_the_trained_positions():
    windows = TemporalWindows.for_frames(16, 40, slow_motion=4)
    assert (windows.length, windows.stride, windows.spacing) == (64, 16, 15 / 63)  # 64 frames span 0..15
    assert windows.spans(40) == [(0, 40)] and len(windows.spans(100)) == 4
    assert TemporalWindows.for_frames(16, 8, slow_motion=2).length == 32  # short videos too
    model = tiny_transformer(seed=1)
    half, whole = model.temporal_table(6, "cpu", 0.5), model.temporal_table(3, "cpu")
    torch.testing.assert_close(half[::2], whole, rtol=0, atol=1e-6)  # every other slow position is a real one
    assert not torch.allclose(half[1], whole[1])


def test_slow_motion_attends_over_longer_windows_at_interpolated_positions(pipe, monkeypatch):
    lengths, spacings = temporal_lengths(pipe), []
    table = pipe.transformer.temporal_table
    monkeypatch.setattr(pipe.transformer, "temporal_table",
                        lambda frames, device, spacing=1.0: spacings.append(spacing) or table(frames, device, spacing))
    try:
        video = run(pipe, video_length=40, height=16, width=16, slow_motion=2)
        assert video.shape == (1, 40, 3, 16, 16) and bool(torch.isfinite(video).all())
        assert set(lengths) == {32} and set(spacings) == {15 / 31}  # two training clips' frames per window
        lengths.clear()
        short = run(pipe, video_length=8, height=16, width=16, slow_motion=2)
        assert set(lengths) == {8} and not torch.equal(short, run(pipe, video_length=8, height=16, width=16))
    finally:
        for block in pipe.transformer.temporal_transformer_blocks:
            block._forward_hooks.clear()


def test_a_folders_slow_motion_cap_slows_long_videos_to_one_training_clip(pipe):
    """`generate_defaults["slow_motion"]` S: a call that gives no slow_motion gets min(S, frames / trained frames)
    for text- and image-to-video with windows (the same frames as passing it), 1 for extensions and plain."""
    trained = pipe.transformer.config.video_length
    pipe.generate_defaults = {"slow_motion": 2}
    try:
        resolve = pipe.resolve_slow_motion
        assert [resolve(None, f) for f in (trained, trained * 3 // 2, 2 * trained, 5 * trained)] == [1, 1.5, 2, 2]
        assert resolve(3, 5 * trained) == 3 and resolve(None, 5 * trained, long_video=False) == 1
        assert resolve(None, 5 * trained, extension=True) == 1
        for frames in (trained * 3 // 2, 5 * trained):
            expected = run(pipe, video_length=frames, height=16, width=16, slow_motion=resolve(None, frames))
            torch.testing.assert_close(run(pipe, video_length=frames, height=16, width=16), expected, rtol=0, atol=0)
        assert torch.equal(run(pipe, video_length=trained, height=16, width=16),
                           run(pipe, video_length=trained, height=16, width=16, slow_motion=1))
        plain = run(pipe, video_length=5 * trained, height=16, width=16, long_video=False)
        assert plain.shape[1] == 5 * trained  # no slow-motion refusal: the cap is not an argument
    finally:
        pipe.generate_defaults = {}
    assert pipe.resolve_slow_motion(None, 5 * trained) == 1  # without the cap, the model's speed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slow_motion": 0.5}, r"slow_motion must be a number >= 1 .* got 0.5"),
        ({"slow_motion": True}, r"slow_motion must be a number >= 1 .* got True"),
        ({"slow_motion": "2"}, r"slow_motion must be a number >= 1 .* got '2'"),
        ({"slow_motion": float("nan")}, r"slow_motion must be a number >= 1 .* got nan"),
        ({"slow_motion": 2, "long_video": False}, r"slow_motion .* needs long_video=True"),
    ],
)
def test_bad_slow_motion_is_refused(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(pipe, video_length=5, **kwargs)


def test_noise_rescheduling_repeats_earlier_noise_shuffled():
    noise = torch.randn(2, 4, 26, 2, 2)
    out = TemporalWindows(16, 4).reschedule_noise(noise, [torch.Generator().manual_seed(i) for i in range(2)])
    assert torch.equal(out[:, :, :16], noise[:, :, :16])
    for start, source in ((16, 0), (20, 4), (24, 8)):
        count = min(4, 26 - start)
        for video in range(2):
            got = {tuple(out[video, :, f].flatten().tolist()) for f in range(start, start + count)}
            want = {tuple(noise[video, :, f].flatten().tolist()) for f in range(source, source + count)}
            assert got == want


def test_image_becomes_the_first_frame(pipe):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = (255, 0, 0)  # a red middle: what the centre crop keeps
    latents = run(pipe, image=image, video_length=3, output_type="latent", num_images_per_prompt=2)
    expected = encode_video(pipe.vae, fit_frames(image[None], 32, 32)[None], sample=False)
    assert latents.shape[2] == 3
    assert torch.equal(latents[:, :, :1], expected.expand(2, -1, -1, -1, -1))  # the clean latent, every video
    frames = run(pipe, image=Image.fromarray(image), video_length=3)
    assert frames.shape == (1, 3, 3, 32, 32)


def test_known_frames_hold_the_video_first_then_only_themselves():
    """The first quarter of the steps puts every frame on the noised path of the known ones (the last known frame
    held still); later steps replace only the known frames."""
    scheduler = tiny_scheduler()
    scheduler.set_timesteps(8)
    known, noise = torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 5, 2, 2)
    latents = torch.randn(1, 4, 5, 2, 2)
    keeper = KnownLatents.for_steps(known, noise, 8)
    assert keeper.hold_steps == 2
    t = scheduler.timesteps[1]
    held = keeper.noised(latents, scheduler, t, step=1)
    target = torch.cat([known, known[:, :, 1:].expand(-1, -1, 3, -1, -1)], dim=2)
    assert torch.equal(held, scheduler.add_noise(target, noise, t.reshape(1)))
    later = keeper.noised(latents, scheduler, t, step=2)
    assert torch.equal(later[:, :, 2:], latents[:, :, 2:])
    assert torch.equal(later[:, :, :2], scheduler.add_noise(known, noise[:, :, :2], t.reshape(1)))
    assert torch.equal(keeper.clean(later)[:, :, :2], known)


def test_fit_frames_covers_and_crops_the_centre():
    image = np.full((32, 64, 3), 255, np.uint8)
    image[:, :16] = 0  # the left quarter falls outside a square crop
    fitted = fit_frames(image[None], 64, 64)
    assert fitted.shape == (3, 1, 64, 64) and float(fitted[..., 1:].min()) > 0.95  # column 0: the blurred edge


def test_extension_returns_the_clip_then_new_frames(pipe):
    clip = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    video = run(pipe, video=clip, video_length=4, context_frames=3)
    assert video.shape == (1, 9, 3, 32, 32)
    expected = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    assert (video[0, :5] - expected).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"image": "{tmp}/missing.png"}, FileNotFoundError, r"image not found: .*missing.png"),
        ({"image": "{tmp}/bad.png"}, ValueError, r"cannot read image .*bad.png: "),
        ({"video": "{tmp}/bad.png"}, ValueError, r"cannot read video .*bad.png: "),
        ({"image": np.zeros((4, 4)), "video": None}, ValueError, r"image array must be \(height, width, 3\)"),
        ({"image": np.full((4, 4, 3), 2.0)}, ValueError, r"float image array must hold values in \[0, 1\]"),
        ({"image": np.zeros((4, 4, 3)), "video": np.zeros((2, 4, 4, 3))}, ValueError, r"either image .* or video"),
        ({"video": np.zeros((2, 4, 4, 3)), "context_frames": 0}, ValueError, r"context_frames must be an integer"),
    ],
)
def test_bad_inputs_are_one_line(tmp_path, kwargs, error, message):
    (tmp_path / "bad.png").write_text("not an image")
    kwargs = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(error, match=message) as info:
        read_condition(kwargs.get("image"), kwargs.get("video"), 32, 32, kwargs.get("context_frames"), 16)
    assert "\n" not in str(info.value)


def test_cli_checks_image_and_extend_before_loading(tmp_path, monkeypatch, capsys):
    def trap(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(LattePipeline, "from_pretrained", trap)
    (tmp_path / "bad.png").write_text("not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    for args, message in (
        (["--image", str(tmp_path / "bad.png")], r"cannot read image .*bad.png"),
        (["--image", str(tmp_path / "none.png")], r"image not found: .*none.png"),
        (["--image", str(tmp_path / "ok.png"), "--extend", "x.mp4"], r"--image .* and --extend .* exclude"),
        (["--slow-motion", "0"], r"slow_motion must be a number >= 1"),
        (["--slow-motion", "2", "--long-video", "plain"], r"needs long_video=True \(--long-video windows\)"),
    ):
        assert main(["generate", "a cat", "-o", str(tmp_path / "v.mp4"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("latte generate: error: ") and err.count("\n") == 1 and re.search(message, err)


def test_long_video_and_image_under_sequential_offload(pipe):
    """Windows run the transformer's blocks through their own forward, so the offload hooks still load them."""
    image = np.full((32, 32, 3), 128, np.uint8)
    expected = run(pipe, video_length=20, height=16, width=16, image=image)
    pipe.enable_sequential_cpu_offload("cpu")
    try:
        got = run(pipe, video_length=20, height=16, width=16, image=image)
    finally:
        pipe.to("cpu")
    torch.testing.assert_close(got, expected)
