"""Video export: mp4 (H.264), gif, PNG folders; input layouts; atomic writes and clear errors."""

import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from latte.outputs import MARKER
from latte.pipelines.export import as_uint8_frames, export_video


def read_mp4(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), stream.codec_context.name, float(stream.average_rate)


def gradient_video(frames=6, height=32, width=48):
    """Smooth frames (codec-friendly), each different, as (F, H, W, 3) floats in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    return np.stack([np.stack([x, y, np.full_like(x, i / frames)], axis=-1) for i in range(frames)])


def test_mp4_roundtrip(tmp_path):
    video = gradient_video()
    path = export_video(video, tmp_path / "v.mp4", fps=12, quality=10)
    frames, codec, fps = read_mp4(path)
    assert codec == "h264" and fps == 12 and frames.shape == (6, 32, 48, 3)
    assert np.abs(frames / 255.0 - video).mean() < 0.02  # lossy, but close at the best quality
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    assert sorted(os.listdir(tmp_path)) == ["v.mp4"]


def test_quality_changes_size(tmp_path):
    video = np.random.default_rng(0).random((4, 64, 64, 3))
    small = export_video(video, tmp_path / "low.mp4", quality=2).stat().st_size
    large = export_video(video, tmp_path / "high.mp4", quality=9).stat().st_size
    assert large > 2 * small


def test_odd_sizes_are_padded_for_h264(tmp_path):
    frames, _, _ = read_mp4(export_video(np.zeros((2, 33, 47, 3), np.uint8), tmp_path / "odd.mp4"))
    assert frames.shape == (2, 34, 48, 3)


def test_gif_and_png_folder(tmp_path):
    video = (gradient_video(frames=3) * 255).round().astype(np.uint8)
    gif = Image.open(export_video(video, tmp_path / "v.gif", fps=5))
    assert gif.n_frames == 3 and gif.size == (48, 32) and gif.info["duration"] == 200
    folder = export_video(video, tmp_path / "frames")
    assert sorted(os.listdir(folder)) == [MARKER, "frame_0000.png", "frame_0001.png", "frame_0002.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "frame_0002.png")), video[2])
    export_video(video[:1], folder)  # a folder latte wrote is replaced whole
    assert sorted(os.listdir(folder)) == [MARKER, "frame_0000.png"]


def test_input_layouts_agree():
    video = gradient_video(frames=2)
    expected = (video * 255).round().astype(np.uint8)
    tensor = torch.from_numpy(video).permute(0, 3, 1, 2)  # (F, 3, H, W)
    pil = [Image.fromarray(f) for f in expected]
    for frames in (video, expected, tensor, pil, torch.from_numpy(expected).permute(0, 3, 1, 2)):
        np.testing.assert_array_equal(as_uint8_frames(frames), expected)
    assert as_uint8_frames(video * 3 - 1).max() == 255  # out of range values are clipped


def test_bad_input_leaves_nothing(tmp_path):
    video = gradient_video(frames=2)
    with pytest.raises(ValueError, match="unsupported video format '.avi'"):
        export_video(video, tmp_path / "v.avi")
    with pytest.raises(ValueError, match=r"must be \(frames, height, width, 3\), got shape \(2, 32, 48\)"):
        export_video(video[..., 0], tmp_path / "v.mp4")
    with pytest.raises(ValueError, match=r"a frame tensor must be \(frames, 3, height, width\)"):
        export_video(torch.zeros(2, 4, 8, 8), tmp_path / "v.mp4")
    for fps in (0, 0.0001, float("nan"), float("inf"), 1e6):
        with pytest.raises(ValueError, match=f"fps must be between 0.1 and 1000.0, got {fps}"):
            export_video(video, tmp_path / "v.mp4", fps=fps)
    with pytest.raises(ValueError, match="no frames to export"):
        export_video([], tmp_path / "v.gif")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot write .*file is a file, not a folder"):
        export_video(video, tmp_path / "file" / "v.mp4")
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OSError, match="no write permission"):
        export_video(gradient_video(frames=1), locked / "v.mp4")


def test_failed_encode_leaves_no_partial_file(tmp_path, monkeypatch):
    import latte.pipelines.export as export

    def broken(frames, path, fps, quality):
        with open(path, "wb") as f:
            f.write(b"half a video")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(export, "_write_mp4", broken)
    with pytest.raises(RuntimeError, match="encoder died"):
        export_video(gradient_video(frames=1), tmp_path / "v.mp4")
    assert os.listdir(tmp_path) == []
